"""Never lose a user's file: dc-compress writes only into a new or empty directory or over its own earlier
result, export_tflite replaces a file only with a verified one, modes follow the umask, stale working
directories are removed only when provably ours, and SIGINT/SIGTERM (even a swallowed KeyboardInterrupt)
leave the old result intact."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

import keras

import dc_keras
from dc_keras import atomic, interrupts, pipeline, result_dir
from dc_keras.cli import compress
from dc_keras.export import ExportVerificationError
from dc_keras.pipeline import DeepCompression
from dc_keras.result_dir import MANIFEST_NAME, NotOwnedError, ResultDirectory

from test_pipeline import _fast_config, _mock_stages
from tiny_pipeline import tiny_data, tiny_model
from test_pipeline_cli import FAST, _dense_model, _flags, _npz

REPO = Path(__file__).resolve().parents[1]


def _snapshot(directory):
    """name -> bytes of every file under `directory` (hidden ones included)."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started although the output directory was refused")

    for stage in ("train_dense", "prune", "cluster", "export"):
        monkeypatch.setattr(DeepCompression, stage, fail)


def _earlier_result(out, files=None):
    """An earlier dc_keras result in `out`, written through ResultDirectory (so with its manifest)."""
    files = files or {"report.txt": b"old report\n", "compressed.tflite": b"old model", "config.json": b"{}\n"}
    with ResultDirectory(str(out)) as staging:
        for name, data in files.items():
            Path(staging.path, name).write_bytes(data)
        staging.commit()
    return _snapshot(out)


# ---------------------------------------------------------------------------------------------- ownership

def test_directory_with_a_foreign_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    data = _npz(out / "d.npz")
    _no_training(monkeypatch)
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={data}", f"--output_dir={out}", *FAST)
    before = _snapshot(tmp_path)
    assert compress.compress(fv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dc-compress: error: refusing to write into --output_dir {out}: ")
    assert "d.npz, precious.txt" in err
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "out"]
    assert sorted(os.listdir(out)) == ["d.npz", "precious.txt"]


def test_output_dir_dot_in_the_directory_holding_the_data_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "d.npz")
    _dense_model(tmp_path / "m.keras")
    before = _snapshot(tmp_path)
    _no_training(monkeypatch)
    assert compress.compress(_flags("--model=m.keras", "--data=d.npz", "--output_dir=.", *FAST)) == 1
    assert "refusing to write into --output_dir .: it holds files dc-compress did not write" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "m.keras"]


def test_empty_existing_directory_is_used_in_place(tmp_path, monkeypatch):
    _mock_stages(monkeypatch, [])
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino
    DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(out), plots=False)
    assert out.stat().st_ino == inode  # filled, not replaced (it may be the user's cwd or a mount point)
    names = set(os.listdir(out))
    assert {"compressed.tflite", "report.json", MANIFEST_NAME} <= names
    assert not [n for n in names if n.endswith(".partial")]


def test_rerun_over_own_result_replaces_only_listed_files(tmp_path, capsys):
    out = tmp_path / "out"
    model, data = _dense_model(tmp_path / "m.keras"), _npz(tmp_path / "d.npz")
    argv = [f"--model={model}", f"--data={data}", f"--output_dir={out}", "--epochs=1", "--sparsity=0.8",
            "--bits=4", *FAST]
    assert compress.compress(_flags(*argv)) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert "weight_histograms.png" in manifest["files"] and "previous" not in manifest["files"]
    for name, entry in manifest["files"].items():
        content = (out / name).read_bytes()
        assert entry == {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (out / "notes.txt").write_text("the user's own notes")

    assert compress.compress(_flags(*argv, "--noplots", "--seed=3")) == 0
    names = set(os.listdir(out))
    assert "notes.txt" in names and (out / "notes.txt").read_text() == "the user's own notes"
    assert not {"weight_histograms.png", "codebook_centroids.png"} & names  # listed, not rewritten: removed
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == names - {"notes.txt", MANIFEST_NAME}
    assert "previous" not in manifest
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "m.keras", "out"]
    assert "wrote" in capsys.readouterr().out


def test_edited_result_file_or_clashing_foreign_file_is_refused(tmp_path, monkeypatch):
    _mock_stages(monkeypatch, [])
    out = tmp_path / "out"
    before = _earlier_result(out)
    (out / "report.txt").write_text("edited by hand")
    with pytest.raises(NotOwnedError, match="report.txt changed since dc-compress wrote it"):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(out))
    assert (out / "report.txt").read_text() == "edited by hand"
    (out / "report.txt").write_bytes(before["report.txt"])
    (out / "dense.tflite").write_bytes(b"the user's, not listed")  # a name the new result would write
    with pytest.raises(NotOwnedError, match="dense.tflite would be overwritten"):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(out))
    assert (out / "dense.tflite").read_bytes() == b"the user's, not listed"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_commit_interrupted_midway_is_still_recognised_as_ours(tmp_path):
    out = tmp_path / "out"
    _earlier_result(out)
    with ResultDirectory(str(out)) as staging:
        Path(staging.path, "report.txt").write_bytes(b"new report\n")
        new = staging._new_entries()
        old = result_dir.owned_files(str(out), new, own_working_dir=os.path.basename(staging.path))
        # the state a power loss leaves after the first rename of a commit
        staging._write_manifest(staging._manifest_bytes(new, previous=old))
        os.replace(Path(staging.path, "report.txt"), out / "report.txt")
    owned = result_dir.owned_files(str(out), pipeline.OUTPUT_FILES)
    assert set(owned) == {"report.txt", "compressed.tflite", "config.json"}


# ---------------------------------------------------------------------------------------------- unwritable

@pytest.mark.parametrize("where", ["/proc/dc_keras_test/out", "/sys/dc_keras_test", "file/below", "file"])
def test_unwritable_output_dir_is_one_line_before_training(tmp_path, capsys, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("a regular file")
    if where.startswith("/") and not os.path.isdir("/" + where.split("/")[1]):
        pytest.skip(f"no /{where.split('/')[1]} here")
    _no_training(monkeypatch)
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
                f"--output_dir={where}", *FAST)
    assert compress.compress(fv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dc-compress: error: cannot write to --output_dir {where}: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "a regular file"
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "file", "m.keras"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_parent_is_one_line(tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    _no_training(monkeypatch)
    fv = _flags(f"--model={_dense_model(tmp_path / 'm.keras')}", f"--data={_npz(tmp_path / 'd.npz')}",
                f"--output_dir={parent / 'out'}", *FAST)
    assert compress.compress(fv) == 1
    assert "cannot write to --output_dir" in capsys.readouterr().err


def test_missing_parents_are_created_and_removed_again_on_failure(tmp_path, monkeypatch):
    _mock_stages(monkeypatch, [], fail_at="cluster")
    with pytest.raises(RuntimeError, match="cluster failed"):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(tmp_path / "a/b/out"))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------- export

def _tiny_clustered_model(seed=0):
    """A stripped 'pruned + clustered' Dense model: few distinct values, mostly zeros."""
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                              keras.layers.Dense(3, name="fc2")], name="tiny")
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        values = rng.choice([-0.5, -0.25, 0.25, 0.5], size=kernel.shape) * (rng.random(kernel.shape) < 0.2)
        layer.set_weights([values.astype(np.float32), bias])
    return model


def test_failed_verification_leaves_existing_files_byte_identical(tmp_path):
    path, dense_path = tmp_path / "m.tflite", tmp_path / "m_dense.tflite"
    path.write_bytes(b"the good old model")
    dense_path.write_bytes(b"the good old dense model")
    with pytest.raises(ExportVerificationError):
        dc_keras.export_tflite(_tiny_clustered_model(), path, verify=True, tolerance=-1, dense_path=dense_path)
    assert path.read_bytes() == b"the good old model"
    assert dense_path.read_bytes() == b"the good old dense model"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite", "m_dense.tflite"]  # no temporary file, no scratch


def test_any_verification_exception_leaves_existing_file(tmp_path, monkeypatch):
    from dc_keras.export import exporter

    def unsupported(*args, **kwargs):
        raise ValueError("Cannot set tensor: Got value of type FLOAT32 but expected type INT32")

    monkeypatch.setattr(exporter, "_verify", unsupported)
    path = tmp_path / "m.tflite"
    path.write_bytes(b"the good old model")
    with pytest.raises(ValueError, match="INT32"):
        dc_keras.export_tflite(_tiny_clustered_model(), path, verify=True)
    assert path.read_bytes() == b"the good old model"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_export_verifies_the_written_file_and_keeps_converter_scratch_beside_it(tmp_path, monkeypatch):
    import tempfile

    made = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    out = tmp_path / "dest"
    report = dc_keras.export_tflite(_tiny_clustered_model(), out / "m.tflite", verify=True)
    assert report.verification["max_rel_error"] <= 1e-5
    assert made and all(Path(d).resolve().is_relative_to(out.resolve()) for d in made), made
    assert os.listdir(out) == ["m.tflite"]


def test_file_modes_follow_the_umask(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        os.umask(0o022)
        import dc_keras
        from dc_keras import atomic
        from test_output_safety import _tiny_clustered_model
        out = {str(tmp_path)!r}
        dc_keras.export_tflite(_tiny_clustered_model(), os.path.join(out, "m.tflite"),
                               dense_path=os.path.join(out, "d.tflite"))
        atomic.atomic_write(os.path.join(out, "a.bin"), b"x")
        os.umask(0o027)
        atomic.atomic_write(os.path.join(out, "b.bin"), b"x")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=REPO, capture_output=True)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in os.listdir(tmp_path)}
    assert modes == {"m.tflite": 0o644, "d.tflite": 0o644, "a.bin": 0o644, "b.bin": 0o640}


def test_result_directory_and_files_follow_the_umask(tmp_path, monkeypatch):
    _mock_stages(monkeypatch, [])
    previous = os.umask(0o027)
    try:
        DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(tmp_path / "out"),
                                                                    plots=False)
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
    assert {(tmp_path / "out" / n).stat().st_mode & 0o777 for n in os.listdir(tmp_path / "out")} == {0o640}


# ---------------------------------------------------------------------------------------------- stale partials

def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _partial(directory, name, marker):
    path = Path(directory, name)
    path.mkdir()
    (path / "compressed.tflite").write_bytes(b"half")
    (path / "saved_model").mkdir()
    if marker is not None:
        (path / atomic.MARKER_NAME).write_text(json.dumps(marker))
    return path


def test_stale_partial_dirs_are_removed_only_when_provably_ours(tmp_path):
    host = socket.gethostname()
    marker = {"tool": "dc_keras", "host": host, "boot_id": atomic._boot_id(), "start_time": ""}
    dead = _partial(tmp_path, ".out.dead1.partial", {**marker, "pid": _dead_pid()})
    rebooted = _partial(tmp_path, ".out.boot1.partial", {**marker, "pid": os.getppid(), "boot_id": "another-boot"})
    alive = _partial(tmp_path, ".out.alive.partial", {**marker, "pid": os.getppid()})
    other_host = _partial(tmp_path, ".out.host1.partial", {**marker, "pid": _dead_pid(), "host": host + "-x"})
    unmarked = _partial(tmp_path, ".out.nomark.partial", None)
    other_name = _partial(tmp_path, ".other.dead2.partial", {**marker, "pid": _dead_pid()})
    (tmp_path / ".out.file.partial").write_text("a file, not our directory")

    assert result_dir.check_output_dir(str(tmp_path / "out")) == str(tmp_path / "out")
    assert not dead.exists() and not rebooted.exists()
    assert alive.exists() and other_host.exists() and unmarked.exists() and other_name.exists()
    assert (tmp_path / ".out.file.partial").read_text() == "a file, not our directory"


def test_stale_partial_inside_a_result_is_removed_and_a_live_one_refused(tmp_path):
    out = tmp_path / "out"
    before = _earlier_result(out)
    marker = {"tool": "dc_keras", "host": socket.gethostname(), "boot_id": atomic._boot_id(), "start_time": ""}
    dead = _partial(out, ".dc_keras.dead1.partial", {**marker, "pid": _dead_pid()})
    result_dir.check_output_dir(str(out), pipeline.OUTPUT_FILES)
    assert not dead.exists() and _snapshot(out) == before
    _partial(out, ".dc_keras.live1.partial", {**marker, "pid": os.getppid()})
    with pytest.raises(NotOwnedError, match="another dc_keras run"):
        result_dir.check_output_dir(str(out), pipeline.OUTPUT_FILES)


def test_reused_pid_counts_as_gone_only_with_a_different_start_time():
    marker = {"tool": "dc_keras", "host": socket.gethostname(), "boot_id": atomic._boot_id(), "pid": os.getppid()}
    assert not atomic.owner_is_gone({**marker, "start_time": atomic._start_time(os.getppid())})
    assert atomic.owner_is_gone({**marker, "start_time": "1"})


# ---------------------------------------------------------------------------------------------- signals

@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """A test run started in the background (nohup, `cmd &` in a script, some CI runners) inherits SIGINT as
    ignored, and dc_keras keeps an ignored signal ignored on purpose; these tests need it delivered."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _default_signal_handling():
    """preexec_fn of signalled children: SIGINT and SIGTERM at their defaults, whatever this process has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_guard_catches_an_interrupt_that_was_swallowed():
    with interrupts.InterruptGuard() as guard:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # what "Exception ignored in ..." amounts to
        with pytest.raises(interrupts.Interrupted) as raised:
            guard.check()
        assert raised.value.exit_status == 130
        with pytest.raises(interrupts.Interrupted):
            interrupts.check()
    interrupts.check()  # no guard, no flag: nothing raised


def test_guard_defers_signals_in_a_commit_and_raises_after():
    with interrupts.InterruptGuard() as guard:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass  # the handler runs here and only records
        with pytest.raises(interrupts.Interrupted) as raised:
            guard.check()
        assert raised.value.exit_status == 143


def test_interrupt_swallowed_in_a_weakref_callback_still_aborts_the_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _earlier_result(out)
    calls = []
    _mock_stages(monkeypatch, calls)
    mocked_prune = DeepCompression.prune

    class Resource:
        pass

    def on_collect(_):
        signal.raise_signal(signal.SIGINT)  # the handler raises KeyboardInterrupt here, inside the callback
        for _ in range(1000):
            pass

    def prune_with_a_swallowed_interrupt(self, *args, **kwargs):
        resource = Resource()
        ref = weakref.ref(resource, on_collect)
        del resource  # the callback runs now; Python prints "Exception ignored" and carries on
        assert ref() is None
        return mocked_prune(self, *args, **kwargs)

    monkeypatch.setattr(DeepCompression, "prune", prune_with_a_swallowed_interrupt)
    with pytest.raises(interrupts.Interrupted):
        DeepCompression(_fast_config(), tiny_data(), verbose=0).run(tiny_model(), str(out))
    assert "prune" in calls  # the run did go on past the swallowed interrupt...
    assert _snapshot(out) == before  # ...but replaced nothing
    assert os.listdir(tmp_path) == ["out"]


def _signal_run(tmp_path, stage, signum, extra=()):
    """dc-compress in a subprocess over an earlier result; `signum` sent once it prints stage `stage`."""
    out = tmp_path / "out"
    before = _earlier_result(out)
    model, data = _dense_model(tmp_path / "m.keras"), _npz(tmp_path / "d.npz", n_train=600)
    scratch_tmp = tmp_path / "systmp"
    scratch_tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(scratch_tmp),
           "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "dc_keras.cli.compress", f"--model={model}", f"--data={data}",
            f"--output_dir={out}", "--epochs=20", "--prune_epochs=10", "--prune_iterations=1", "--cluster_epochs=10",
            "--batch_size=32", "--sparsity=0.8", "--bits=4", "--verbosity_level=2", *extra]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                               text=True, preexec_fn=_default_signal_handling)
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if f"=== dc_keras stage {stage}:" in line:
                assert process.poll() is None
                process.send_signal(signum)
                break
        else:
            pytest.fail("stage line never printed:\n" + "".join(seen))
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, before, out, scratch_tmp, "".join(seen) + rest


@pytest.mark.parametrize("signum, stage", [(signal.SIGINT, 1), (signal.SIGTERM, 3), (signal.SIGINT, 5)])
def test_signal_during_a_run_keeps_the_old_result(tmp_path, signum, stage):
    status, before, out, scratch_tmp, output = _signal_run(tmp_path, stage, signum)
    assert status == 128 + signum, output
    assert "left as it was" in output and "Traceback" not in output
    assert _snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "m.keras", "out", "systmp"]
    assert os.listdir(scratch_tmp) == []


def test_kill_during_export_leaves_only_a_working_dir_the_next_run_removes(tmp_path):
    status, before, out, scratch_tmp, output = _signal_run(tmp_path, 4, signal.SIGKILL)
    assert status == -signal.SIGKILL
    leftovers = [n for n in os.listdir(out) if n.endswith(".partial")]
    assert len(leftovers) == 1 and atomic.read_marker(out / leftovers[0]) is not None
    assert not list(scratch_tmp.rglob("saved_model.pb"))  # the converter's SavedModel lived in the working dir
    result_dir.check_output_dir(str(out), pipeline.OUTPUT_FILES)
    assert _snapshot(out) == before
