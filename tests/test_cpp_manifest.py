"""cpp_sources.txt is the one list of C++ sources every build reads (CMake, dc_keras/_native.py): every
non-test source file of ops/ and tflite_delegate/src is in it, and the reader resolves `uses` and rejects
mistakes with a message."""
from __future__ import annotations

import pytest

from dc_keras import _native

ROOT = _native.SOURCE_ROOT


def _listed() -> set:
    libraries = _native._read_manifest(_native.SOURCE_MANIFEST)
    return {source for name in libraries for source in _native.cpp_library(name)[0]}


def test_every_source_file_is_listed_and_exists():
    listed = _listed()
    on_disk = {p for d in (ROOT / "ops", ROOT / "tflite_delegate" / "src") for p in d.rglob("*.cc")
               if "tests" not in p.relative_to(ROOT).parts}
    assert on_disk - listed == set(), "C++ sources missing from cpp_sources.txt"
    assert {p for p in listed if not p.is_file()} == set(), "cpp_sources.txt lists files that do not exist"


def test_layers_point_one_way():
    codec_sources, codec_includes = _native.cpp_library("codec")
    kernel_sources, kernel_includes = _native.cpp_library("kernels")
    delegate_sources, _ = _native.cpp_library("delegate")
    tf_sources, tf_includes = _native.cpp_library("tf_ops")
    assert set(codec_sources) <= set(kernel_sources) <= set(delegate_sources)
    assert set(kernel_sources) <= set(tf_sources)
    assert not any("tflite_delegate" in str(p) for p in [*kernel_sources, *kernel_includes, *tf_sources, *tf_includes])
    assert all(p.parent == ROOT / "ops" / "codec" for p in codec_sources)


def test_reader_errors(tmp_path):
    manifest = tmp_path / "cpp_sources.txt"
    manifest.write_text("[a]\nuses b\n[b]\nuses a\n")
    with pytest.raises(_native.NativeBuildError, match="cycle"):
        _native.cpp_library("a", manifest)
    with pytest.raises(_native.NativeBuildError, match="unknown C\\+\\+ library 'c'"):
        _native.cpp_library("c", manifest)
    manifest.write_text("x.cc\n")
    with pytest.raises(_native.NativeBuildError, match="before any \\[library\\]"):
        _native.cpp_library("a", manifest)
    manifest.write_text("[a]\nsrc/*.cc\n")
    with pytest.raises(_native.NativeBuildError, match="pattern 'src/\\*.cc' matches no file"):
        _native.cpp_library("a", manifest)


def test_patterns_stand_for_the_files_they_match(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("b.cc", "a.cc", "a.h"):
        (tmp_path / "src" / name).write_text("")
    manifest = tmp_path / "cpp_sources.txt"
    manifest.write_text("[a]\nsrc/b.cc\nsrc/*.cc\n")
    sources, _ = _native.cpp_library("a", manifest)
    assert sources == [tmp_path / "src" / "b.cc", tmp_path / "src" / "a.cc"]


def test_new_glue_and_kernel_files_need_no_manifest_line():
    """A new op's files are picked up by the manifest's patterns (no registration line anywhere)."""
    delegate_sources, _ = _native.cpp_library("delegate")
    kernel_sources, _ = _native.cpp_library("kernels")
    glue = sorted((ROOT / "tflite_delegate" / "src" / "tflite_kernels").glob("*.cc"))
    assert glue and set(glue) <= set(delegate_sources)
    assert set((ROOT / "ops" / "kernels").glob("*.cc")) <= set(kernel_sources)
