"""benchmarks/reliability.py: its quick run (the attack classes x outcomes table) and its classification of
crashes, hangs, memory blowups and raw errors in the child processes."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reliability.py"

# Outcomes that must not occur, per attack class, in the quick run.
BAD = ("crash", "hang", "silent wrong", "data lost", "raw error")
MUST_BE_ZERO = {
    "codec blobs": BAD + ("memory",),
    "tf ops": BAD + ("memory",),
    "cli": BAD,
    "output safety": BAD,
}


def _load_script():
    spec = importlib.util.spec_from_file_location("reliability", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """The JSON of one `reliability.py --quick` run, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("reliability") / "quick.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| attack class | cases |" in proc.stdout
    return json.loads(out.read_text())


def test_quick_run_covers_every_quick_class(quick_results):
    reliability = _load_script()
    classes = {r["class"] for r in quick_results["results"]}
    assert classes == set(reliability.QUICK_CLASSES)
    assert all(r["outcome"] in reliability.OUTCOMES for r in quick_results["results"])


@pytest.mark.parametrize("cls", sorted(MUST_BE_ZERO))
def test_quick_run_has_no_failures_in_fixed_classes(quick_results, cls):
    rows = [r for r in quick_results["results"] if r["class"] == cls]
    assert rows
    bad = [r for r in rows if r["outcome"] in MUST_BE_ZERO[cls]]
    assert not bad, "\n".join(f"{r['case']}: {r['outcome']}: {r['message']}" for r in bad)


def test_children_that_crash_hang_or_blow_up_are_classified(tmp_path):
    """A worker that dies or stalls costs only its current case: the next worker runs the rest."""
    reliability = _load_script()
    actions = ["ok", "segfault", "ok", "hang", "memory", "raw", "wrong", "ok"]
    cases = [(action, {"action": action}, "selftest") for action in actions]
    results = reliability.run_api_cases(cases, tmp_path, timeout=8.0)
    assert [r["outcome"] for r in results] == ["ok", "crash", "ok", "hang", "memory", "raw error",
                                               "silent wrong", "ok"]
    assert "SIGSEGV" in results[1]["message"]


def test_cli_outcomes_are_classified():
    reliability = _load_script()

    def proc(code, stderr="", stdout=""):
        return subprocess.CompletedProcess([], code, stdout, stderr)

    traceback = "Traceback (most recent call last):\n  File x\nIsADirectoryError: [Errno 21] Is a directory: '.'\n"
    assert reliability._classify_cli(proc(1, "dc-inspect: x: no such file\n"), "error")["outcome"] == "clear error"
    assert reliability._classify_cli(proc(1, traceback), "error")["outcome"] == "raw error"
    assert reliability._classify_cli(proc(-11), "error")["outcome"] == "crash"
    assert reliability._classify_cli(None, "error")["outcome"] == "hang"
    assert reliability._classify_cli(proc(0), "error")["outcome"] == "silent wrong"
    assert reliability._classify_cli(proc(0), "ok", check=lambda p: "no layer")["outcome"] == "silent wrong"
    assert reliability._classify_cli(proc(0), "ok", check=lambda p: None)["outcome"] == "ok"
