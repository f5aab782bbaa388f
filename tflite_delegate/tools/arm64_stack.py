#!/usr/bin/env python3
"""The real arm64 TFLite stack under qemu-user: Debian's aarch64 CPython 3.11, the aarch64 ai-edge-litert and
numpy wheels, and libdc_delegate.so cross-built for aarch64 — so that the dc ops run on the same LiteRT
runtime and the same NEON kernels an arm64 Linux machine would run, on an x86-64 host.

    python tflite_delegate/tools/arm64_stack.py                 # prepare (cached) and print the paths
    python tflite_delegate/tools/arm64_stack.py SCRIPT [ARGS]   # prepare, then run SCRIPT on the emulated python

Pieces, each cached under dc_keras._native.cache_dir() / "arm64-stack" and keyed by what it depends on:
  sysroot-<key>/   python3.11-minimal, libpython3.11-stdlib, libstdc++6 and their dependencies, fetched with
                   apt-get --download-only for arm64 under a private apt state (own sources list derived from
                   the host's Debian mirror and suite, own lists/status/cache; the host's apt state is never
                   touched) and unpacked with dpkg-deb -x (no maintainer scripts, so nothing runs emulated);
                   plus an arm64 /proc/cpuinfo and /sys/devices/system/cpu/{possible,present}.
  site-<key>/      the manylinux_2_27_aarch64 wheels of ai-edge-litert and numpy at the host's versions,
                   unzipped.
  delegate-<key>/  libdc_delegate.so built by aarch64-linux-gnu-g++ from dc_keras.delegate.sources().

Why the fake cpu files: qemu-user passes the host's x86 /proc/cpuinfo and /sys/devices/system/cpu through,
and LiteRT's cpuinfo/XNNPACK initialisation crashes on them in allocate_tensors; `qemu-aarch64 -L SYSROOT`
looks paths up in the sysroot first.

Needs: qemu-user, g++-aarch64-linux-gnu, dpkg-deb, apt-get and debian-archive-keyring (.ci/setup installs
them), the host's pip, and network access to the Debian mirror and PyPI on the first run only.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

QEMU = "qemu-aarch64"
CROSS_CXX = os.environ.get("DC_KERAS_AARCH64_CXX", "aarch64-linux-gnu-g++")
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
WHEEL_PLATFORM = "manylinux_2_27_aarch64"  # LiteRT's aarch64 wheels carry this tag, not manylinux2014
PYTHON_VERSION = "3.11"
WHEELS = ("ai-edge-litert", "numpy")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
COMPLETE = ".complete"

# One Neoverse-N1 core: what LiteRT's cpuinfo library parses instead of the host's x86 file.
FAKE_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""


class StackError(RuntimeError):
    """A required tool is missing or a build step failed; the message says which and how to fix it."""


class FetchError(StackError):
    """The arm64 packages or wheels could not be downloaded (no network, mirror or PyPI unreachable)."""


@dataclasses.dataclass(frozen=True)
class Stack:
    """Paths of a prepared emulated stack."""

    sysroot: Path
    site: Path
    delegate: Path

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"


def _log(message: str) -> None:
    print(f"arm64-stack: {message}", file=sys.stderr, flush=True)


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _import_dc_keras_module(name: str):
    """dc_keras.<name> from this source tree (without requiring the caller to have set PYTHONPATH)."""
    import importlib

    root = str(_source_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"dc_keras.{name}")


def stack_root() -> Path:
    """Where the pieces are cached: dc_keras._native.cache_dir() / "arm64-stack"."""
    return _import_dc_keras_module("_native").cache_dir() / "arm64-stack"


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def require_tools() -> None:
    """Raises StackError naming every missing host tool and the package that provides it."""
    wanted = {QEMU: "qemu-user", CROSS_CXX: "g++-aarch64-linux-gnu", "dpkg-deb": "dpkg", "apt-get": "apt"}
    missing = [f"{tool} (apt-get install {package})" for tool, package in wanted.items() if shutil.which(tool) is None]
    if missing:
        raise StackError("missing tools: " + ", ".join(missing) + "; .ci/setup installs them")


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialises builders of one cache entry (parallel test runs share the cache)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(command: Sequence[str], what: str, error=StackError, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-4000:]
        raise error(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{output}")
    return result


# ---- Debian arm64 packages -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AptSource:
    """One `deb` source: a mirror URI, a suite and its components."""

    uri: str
    suite: str
    components: Tuple[str, ...]
    keyring: str


def _deb822_stanzas(text: str) -> List[Dict[str, str]]:
    stanzas, fields, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                stanzas.append(fields)
            fields, key = {}, None
        elif line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    return stanzas


def _is_debian_archive(uri: str) -> bool:
    """Debian's own archive (deb.debian.org/debian, a mirror's /debian, /debian-security), not a vendor repo."""
    return re.search(r"/debian(-security)?/?$", uri.rstrip("/") + "/") is not None or "debian.org" in uri


def host_sources(etc_apt: Path = Path("/etc/apt"), os_release: Path = Path("/etc/os-release")) -> List[AptSource]:
    """The Debian mirrors and suites the host's apt uses (deb822 .sources and one-line .list files), for the
    arm64 fetch. Falls back to deb.debian.org with the codename of os-release when none is configured.

    Raises:
      StackError: neither a Debian source nor a codename to build one from.
    """
    found: List[AptSource] = []
    files = [etc_apt / "sources.list"] + sorted((etc_apt / "sources.list.d").glob("*.list"))
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
            if not match:
                continue
            options = match.group(1) or ""
            keyring = re.search(r"signed-by=(\S+?)[\s\]]", options + " ")
            found.append(AptSource(match.group(2), match.group(3), tuple(match.group(4).split()) or ("main",),
                                   keyring.group(1) if keyring else str(DEBIAN_KEYRING)))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(path.read_text(errors="replace")):
            if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes").lower() == "no":
                continue
            keyring = stanza.get("signed-by", str(DEBIAN_KEYRING))
            for uri in stanza.get("uris", "").split():
                for suite in stanza.get("suites", "").split():
                    found.append(AptSource(uri, suite, tuple(stanza.get("components", "main").split()), keyring))
    debian = [s for s in found if _is_debian_archive(s.uri) and Path(s.keyring).is_file()]
    if debian:
        return list(dict.fromkeys(debian))
    codename = None
    if os_release.is_file():
        match = re.search(r"^VERSION_CODENAME=\"?(\w+)", os_release.read_text(), re.M)
        codename = match.group(1) if match else None
    if not codename:
        raise StackError("no Debian source in /etc/apt and no VERSION_CODENAME in /etc/os-release: "
                         "cannot tell which Debian release to fetch arm64 packages from")
    keyring = str(DEBIAN_KEYRING)
    return [AptSource("http://deb.debian.org/debian", codename, ("main",), keyring),
            AptSource("http://deb.debian.org/debian", f"{codename}-updates", ("main",), keyring),
            AptSource("http://deb.debian.org/debian-security", f"{codename}-security", ("main",), keyring)]


# Host apt settings the private configuration keeps: how to reach the mirror (proxies, retries, snapshot
# mirrors whose Release files have expired), nothing that changes what or where apt installs.
CARRIED_APT_SETTINGS = re.compile(r"^Acquire::(https?::Proxy|ftp::Proxy|Retries|Check-Valid-Until|Check-Date)\b",
                                  re.I)


def _host_acquire_settings() -> str:
    """The host's network settings for apt (see CARRIED_APT_SETTINGS), as apt.conf lines; empty if unreadable."""
    try:
        dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return "".join(line + "\n" for line in dump.splitlines() if CARRIED_APT_SETTINGS.match(line))


def _apt_config(work: Path, sources: Sequence[AptSource]) -> Path:
    """A private apt configuration: arm64 only, own sources/lists/status/cache/log. Dir::Etc points into
    `work`, so the host's apt.conf.d (hooks, sources.list.d) is not read either; only its network settings
    are carried over."""
    for sub in ("etc/sources.list.d", "etc/preferences.d", "lists/partial", "cache/archives/partial", "log"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "status").write_text("")
    (work / "etc" / "sources.list").write_text("".join(
        f"deb [arch=arm64 signed-by={s.keyring}] {s.uri} {s.suite} {' '.join(s.components)}\n" for s in sources))
    config = work / "apt.conf"
    config.write_text(f"""
APT::Architecture "arm64";
APT::Architectures {{ "arm64"; }};
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Sandbox::User "root";
Debug::NoLocking "true";
Dir::Etc "{work}/etc";
Dir::Etc::SourceList "{work}/etc/sources.list";
Dir::Etc::SourceParts "{work}/etc/sources.list.d";
Dir::Etc::Preferences "{work}/etc/preferences";
Dir::Etc::PreferencesParts "{work}/etc/preferences.d";
Dir::State "{work}";
Dir::State::Lists "{work}/lists";
Dir::State::Status "{work}/status";
Dir::Cache "{work}/cache";
Dir::Cache::Archives "{work}/cache/archives";
Dir::Cache::pkgcache "{work}/cache/pkgcache.bin";
Dir::Cache::srcpkgcache "{work}/cache/srcpkgcache.bin";
Dir::Log "{work}/log";
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Install-Pkgs;
""" + _host_acquire_settings())
    return config


def _fetch_debs(work: Path, sources: Sequence[AptSource], packages: Sequence[str]) -> List[Path]:
    config = _apt_config(work, sources)
    env = {**os.environ, "APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    _log(f"apt-get update (arm64, private state in {work})")
    update = _run(["apt-get", "update"], "apt-get update for arm64", error=FetchError, env=env, timeout=600)
    # apt-get update exits 0 even when every source failed; a failed fetch shows as "Err:" / "W: Failed".
    if not any((work / "lists").glob("*_Packages*")):
        raise FetchError("apt-get update fetched no arm64 package lists from "
                         + ", ".join(sorted({s.uri for s in sources})) + ":\n" + (update.stdout + update.stderr)[-3000:])
    _log(f"apt-get install --download-only {' '.join(packages)}")
    _run(["apt-get", "install", "--download-only", "-y", "-q", *packages], "apt-get download of arm64 packages",
         error=FetchError, env=env, timeout=900)
    debs = sorted((work / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise FetchError("apt-get downloaded no .deb files")
    return debs


def _write_fake_cpu_files(sysroot: Path) -> None:
    (sysroot / "proc").mkdir(parents=True, exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text(FAKE_CPUINFO)
    cpu = sysroot / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text("0\n")


def prepare_sysroot(root: Path, packages: Sequence[str] = DEBIAN_PACKAGES) -> Path:
    """The unpacked arm64 Debian packages plus the fake cpu files, built once per (sources, packages)."""
    sources = host_sources()
    for keyring in sorted({s.keyring for s in sources}):
        if not Path(keyring).is_file():
            raise StackError(f"{keyring} is missing: apt-get install debian-archive-keyring")
    sysroot = root / f"sysroot-{_digest(sources, packages, FAKE_CPUINFO)}"
    if (sysroot / COMPLETE).is_file():
        return sysroot
    with _locked(sysroot):
        if (sysroot / COMPLETE).is_file():
            return sysroot
        shutil.rmtree(sysroot, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="apt-arm64-", dir=root) as work:
            debs = _fetch_debs(Path(work), sources, packages)
            _log(f"unpacking {len(debs)} arm64 packages into {sysroot}")
            for deb in debs:
                _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"unpacking {deb.name}")
        python = sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"
        if not python.is_file():
            raise StackError(f"{python} missing after unpacking {', '.join(packages)}")
        _write_fake_cpu_files(sysroot)
        (sysroot / COMPLETE).write_text("")
    return sysroot


# ---- aarch64 wheels ---------------------------------------------------------------------------------------------

def host_versions(names: Sequence[str] = WHEELS) -> Dict[str, str]:
    """Installed versions on the host of `names` (the emulated stack uses the same ones)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError as error:
            raise StackError(f"{name} is not installed on the host: its version picks the aarch64 wheel") from error
    return versions


def prepare_site(root: Path, versions: Optional[Dict[str, str]] = None) -> Path:
    """The aarch64 wheels of ai-edge-litert and numpy (host versions), unzipped into one directory."""
    versions = versions or host_versions()
    pins = [f"{name}=={version}" for name, version in sorted(versions.items())]
    site = root / f"site-{_digest(WHEEL_PLATFORM, PYTHON_VERSION, pins)}"
    if (site / COMPLETE).is_file():
        return site
    with _locked(site):
        if (site / COMPLETE).is_file():
            return site
        shutil.rmtree(site, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="wheels-", dir=root) as wheels:
            _log(f"pip download {' '.join(pins)} for {WHEEL_PLATFORM}")
            # --no-deps: the wheels' other requirements (e.g. LiteRT's backports) are not needed by the
            # Interpreter, and pulling them would download more than the stack uses.
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                  "--platform", WHEEL_PLATFORM, "--python-version", PYTHON_VERSION, "--implementation", "cp",
                  "--dest", wheels, *pins], "pip download of the aarch64 wheels", error=FetchError, timeout=900)
            found = sorted(Path(wheels).glob("*.whl"))
            if len(found) != len(pins):
                raise FetchError(f"expected {len(pins)} wheels, pip downloaded {[w.name for w in found]}")
            for wheel in found:
                if "aarch64" not in wheel.name:
                    raise StackError(f"{wheel.name} is not an aarch64 wheel")
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(site)
        (site / COMPLETE).write_text("")
    return site


# ---- aarch64 delegate --------------------------------------------------------------------------------------------

def cross_build_delegate(root: Path) -> Path:
    """libdc_delegate.so for aarch64 from the same sources and flags as the host build (dc_keras.delegate),
    cached by sources, headers, compiler version and flags."""
    delegate_module = _import_dc_keras_module("delegate")
    sources = [Path(s) for s in delegate_module.sources()]
    include_dirs = [Path(d) for d in delegate_module.include_dirs()]
    headers = sorted({h for d in include_dirs for h in d.rglob("*.h") if "build" not in h.parts})
    flags = ["-std=c++17", "-O3", "-fPIC", "-shared", "-Wall", "-Wextra", "-fvisibility=hidden"]
    link = ["-pthread", "-Wl,--no-undefined"]
    version = _run([CROSS_CXX, "--version"], f"{CROSS_CXX} --version").stdout.splitlines()[0]
    key = _digest(version, flags, link, *[p.name.encode() + p.read_bytes() for p in [*sources, *headers]])
    out = root / f"delegate-{key}" / "libdc_delegate.so"
    if out.is_file():
        return out
    with _locked(out.parent):
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.parent / f".libdc_delegate.so.{os.getpid()}"
        _log(f"cross-compiling libdc_delegate.so for aarch64 ({len(sources)} sources, {CROSS_CXX})")
        _run([CROSS_CXX, *flags, *(f"-I{d}" for d in include_dirs), *map(str, sources), "-o", str(partial), *link],
             "aarch64 cross build of libdc_delegate.so", timeout=1200)
        os.replace(partial, out)
    return out


# ---- the whole stack and running on it ----------------------------------------------------------------------

def prepare(root: Optional[Path] = None) -> Stack:
    """Fetches, unpacks and builds what is missing (cached; later calls only check markers) and returns the paths.

    Raises:
      StackError: a host tool is missing or a build step failed.
      FetchError: the Debian mirror or PyPI could not be reached / had no matching package.
    """
    require_tools()
    root = Path(root) if root is not None else stack_root()
    root.mkdir(parents=True, exist_ok=True)
    sysroot = prepare_sysroot(root)
    site = prepare_site(root)
    delegate = cross_build_delegate(root)
    return Stack(sysroot=sysroot, site=site, delegate=delegate)


def command(stack: Stack, script: Path, args: Sequence[str] = ()) -> List[str]:
    """The command line that runs `script` on the emulated aarch64 python."""
    return [QEMU, "-L", str(stack.sysroot), str(stack.python), str(script), *map(str, args)]


def environment(stack: Stack, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A clean environment for the emulated python: only the site directory on its path (nothing of the host's
    venv, PYTHONHOME or LD_* may leak into the aarch64 process)."""
    env = {"PYTHONPATH": str(stack.site), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(stack.site.parent)}
    env.update(extra or {})
    return env


def run_python(stack: Stack, script, args: Sequence[str] = (), timeout: float = 900,
               env: Optional[Dict[str, str]] = None, cwd=None) -> subprocess.CompletedProcess:
    """Runs a Python script under `qemu-aarch64 -L sysroot sysroot/usr/bin/python3.11` with PYTHONPATH=site
    and a clean environment; returns the CompletedProcess (text stdout/stderr, not checked)."""
    return subprocess.run(command(stack, Path(script), args), env=environment(stack, env), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


RUNNER = Path(__file__).resolve().parent / "arm64_runner.py"


def run_jobs(stack: Stack, jobs: Sequence[dict], workdir, inputs: Optional[Dict[str, "object"]] = None,
             timed: bool = False, timeout: float = 900) -> Tuple[Dict[str, "object"], dict]:
    """Runs `jobs` (see arm64_runner.py for their fields) in one emulated python process.

    Args:
      stack: from prepare().
      jobs: job dicts; "model" paths must be readable by the emulated process (any host path is).
      workdir: directory for the job, inputs, outputs and report files.
      inputs: arrays named by the jobs' "input" keys.
      timed: the jobs time invocations with dc_keras/benchmark.py's loop (loaded from this source tree).
      timeout: seconds for the whole emulated run.

    Returns:
      (outputs by job name for the jobs that ran, the runner's report: "machine", "simd_path", "jobs").

    Raises:
      StackError: the emulated process itself failed (its stderr is in the message).
    """
    import json

    import numpy as np

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {"delegate": str(stack.delegate), "outputs": str(workdir / "outputs.npz"),
            "report": str(workdir / "report.json"), "jobs": list(jobs)}
    if inputs:
        np.savez(workdir / "inputs.npz", **inputs)
        spec["inputs"] = str(workdir / "inputs.npz")
    if timed:
        spec["benchmark_module"] = str(_source_root() / "dc_keras" / "benchmark.py")
    (workdir / "jobs.json").write_text(json.dumps(spec, indent=1))
    try:
        result = run_python(stack, RUNNER, [workdir / "jobs.json"], timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise StackError(f"the emulated aarch64 python did not finish {len(jobs)} job(s) in {timeout:.0f} s") from error
    if result.returncode != 0 or not (workdir / "report.json").is_file():
        raise StackError(f"the emulated aarch64 python failed (exit {result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-6000:]}")
    with np.load(workdir / "outputs.npz") as saved:
        outputs = {name: saved[name] for name in saved.files}
    return outputs, json.loads((workdir / "report.json").read_text())


def main(argv: Sequence[str]) -> int:
    """Command line: prepare the stack; with a script argument also run it on the emulated python."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # dc_keras's package import loads TensorFlow: quiet it
    try:
        stack = prepare()
    except StackError as error:
        print(f"arm64-stack: {error}", file=sys.stderr)
        return 1
    if not argv:
        print(f"sysroot   {stack.sysroot}\nsite      {stack.site}\ndelegate  {stack.delegate}\n"
              f"run       env -i PYTHONPATH={stack.site} {' '.join(command(stack, Path('SCRIPT.py')))}")
        return 0
    result = subprocess.run(command(stack, Path(argv[0]), argv[1:]), env=environment(stack))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
