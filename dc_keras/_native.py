"""Compile-on-first-use for dc_keras's C++ libraries (codec core, TF custom op, TFLite delegate).

Why build lazily instead of at `pip install` time: the TF custom op must be compiled against the exact
TensorFlow that is installed (its ABI flags come from `tf.sysconfig`), and editable installs never run
setuptools build steps. Builds are cached by a hash of the sources and flags, so the cost is paid once.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""Repository root: holds ops/ and tflite_delegate/ (the package is installed editable or run in-tree)."""


SOURCE_MANIFEST = SOURCE_ROOT / "cpp_sources.txt"
"""The one list of C++ libraries, their sources and include directories (CMake reads it too)."""


class NativeBuildError(RuntimeError):
    """A C++ library could not be compiled; the message carries the compiler's own output."""


def _read_manifest(path: Path) -> dict:
    libraries: dict = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = libraries.setdefault(line[1:-1], {"uses": [], "include": [], "sources": []})
        elif current is None:
            raise NativeBuildError(f"{path}:{number}: '{line}' comes before any [library] line")
        elif line.startswith(("uses ", "include ")):
            key, value = line.split(None, 1)
            current[key].append(value.strip())
        else:
            current["sources"].append(line)
    return libraries


def _expand(manifest: Path, item: str) -> list:
    """The files source line `item` names: itself, or those its glob pattern matches, sorted."""
    if not any(c in item for c in "*?["):
        return [manifest.parent / item]
    matches = sorted(p for p in manifest.parent.glob(item) if p.is_file())
    if not matches:
        raise NativeBuildError(f"{manifest}: pattern '{item}' matches no file")
    return matches


def cpp_library(name: str, manifest: Path = SOURCE_MANIFEST) -> tuple:
    """Sources and include directories of C++ library `name` of cpp_sources.txt, its `uses` included.

    Returns (sources, include_dirs), absolute paths in manifest order, each once: the libraries it uses
    come first. A source line with a glob pattern (`dir/*.cc`) stands for the files it matches, sorted.

    Raises:
      NativeBuildError: the manifest is missing, malformed, names an unknown library, has a `uses` cycle or
        a pattern that matches no file.
    """
    if not manifest.is_file():
        raise NativeBuildError(f"the C++ source manifest {manifest} is missing")
    libraries = _read_manifest(manifest)
    sources: list = []
    include_dirs: list = []

    def visit(lib: str, stack: tuple) -> None:
        if lib not in libraries:
            raise NativeBuildError(f"{manifest}: unknown C++ library '{lib}'")
        if lib in stack:
            raise NativeBuildError(f"{manifest}: 'uses' cycle through '{lib}'")
        for used in libraries[lib]["uses"]:
            visit(used, stack + (lib,))
        for key, out in (("sources", sources), ("include", include_dirs)):
            for item in libraries[lib][key]:
                for path in _expand(manifest, item) if key == "sources" else [manifest.parent / item]:
                    if path not in out:
                        out.append(path)

    visit(name, ())
    return sources, include_dirs


def cache_dir() -> Path:
    """Directory for built libraries: $DC_KERAS_BUILD_DIR, else ~/.cache/dc_keras/<python-tag>."""
    configured = os.environ.get("DC_KERAS_BUILD_DIR")
    if configured:
        return Path(configured)
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dc_keras" / tag


def compiler() -> str:
    """The C++ compiler to use: $CXX if set, else g++ (clang++ as a fallback)."""
    for candidate in (os.environ.get("CXX"), "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise NativeBuildError("no C++ compiler found: install g++ (apt-get install -y g++) or set $CXX")


def _fingerprint(sources: Sequence[Path], headers: Iterable[Path], flags: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in list(sources) + sorted(set(headers)):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    digest.update("\0".join(flags).encode())
    return digest.hexdigest()[:16]


def build_shared_library(
    name: str,
    sources: Sequence[Path],
    include_dirs: Sequence[Path] = (),
    extra_compile_flags: Sequence[str] = (),
    extra_link_flags: Sequence[str] = (),
    header_globs: Sequence[Path] = (),
    verbose: bool = False,
) -> Path:
    """Compile `sources` into lib<name>.so (cached) and return its path.

    Args:
      name: library stem, e.g. "dc_delegate" gives libdc_delegate.so.
      sources: C++ source files.
      include_dirs: directories passed with -I; every header under them counts towards the cache key.
      extra_compile_flags / extra_link_flags: appended to the default -std=c++17 -O3 -fPIC flags.
      header_globs: further headers whose edits must trigger a rebuild.
      verbose: print the compile command.

    Raises:
      NativeBuildError: with the compiler's stderr when the build fails.
    """
    sources = [Path(s) for s in sources]
    for source in sources:
        if not source.is_file():
            raise NativeBuildError(f"C++ source {source} is missing: is the dc_keras source tree complete?")
    headers = [h for d in include_dirs for h in Path(d).rglob("*.h") if "build" not in h.parts]
    headers += [Path(h) for h in header_globs]
    compile_flags = ["-std=c++17", "-O3", "-fPIC", "-shared", "-Wall", "-Wextra",
                     "-fvisibility=hidden", *extra_compile_flags]
    key = _fingerprint(sources, headers, [*compile_flags, *extra_link_flags])
    out_dir = cache_dir() / f"{name}-{key}"
    library = out_dir / f"lib{name}.so"
    if library.is_file():
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent processes (pytest workers, a benchmark beside a test run) must not build over each other.
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.is_file():
            return library
        partial = out_dir / f".lib{name}.so.{os.getpid()}"
        command = [compiler(), *compile_flags, *(f"-I{d}" for d in include_dirs),
                   *map(str, sources), "-o", str(partial), *extra_link_flags]
        if verbose:
            print(" ".join(command), file=sys.stderr)
        print(f"dc_keras: compiling lib{name}.so (first use, cached in {out_dir})", file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise NativeBuildError(
                f"building lib{name}.so failed (exit {result.returncode}).\n"
                f"command: {' '.join(command)}\n{result.stderr[-8000:]}")
        os.replace(partial, library)
    return library
