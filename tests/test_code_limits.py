"""Size limits of the code outside tests: no Python module of dc_keras/ and no C++ file over 600 lines, no
function over 80 lines (Python through ast, C++ through a brace scan). A failure lists every offender."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List, Tuple

from dc_keras import _native

ROOT = _native.SOURCE_ROOT
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
PYTHON_DIRS = ("dc_keras", "benchmarks", "examples", "tflite_delegate/tools")
CPP_DIRS = ("ops", "tflite_delegate/src", "tflite_delegate/include")
CPP_SUFFIXES = {".cc", ".h"}


def _outside_tests(paths: Iterator[Path]) -> List[Path]:
    return sorted(p for p in paths if "tests" not in p.relative_to(ROOT).parts and "build" not in p.parts)


def python_files() -> List[Path]:
    """The project's Python modules outside tests."""
    return _outside_tests(p for d in PYTHON_DIRS for p in (ROOT / d).rglob("*.py"))


def cpp_files() -> List[Path]:
    """The project's C++ sources and headers outside tests."""
    return _outside_tests(p for d in CPP_DIRS for p in (ROOT / d).rglob("*") if p.suffix in CPP_SUFFIXES)


def python_functions(source: str) -> List[Tuple[str, int, int]]:
    """(qualified name, first line, line count) of every function and method in `source`, decorators
    excluded; nested functions count on their own and inside their parent."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


_CONTAINER = re.compile(r"^(template\s*<[^{]*>\s*)?(namespace|class|struct|union|enum)\b|^extern\s*\"C\"")
# What may follow a function's parameter list before its body: qualifiers, a trailing return type, or a
# constructor's member initializers.
_FUNCTION_TAIL = re.compile(r"\)\s*((const|override|final|noexcept|mutable|volatile|&|&&)\s*)*"
                            r"(->\s*[\w:<>,\s\*&]+)?\s*$|\)\s*:\s*[\w\s]+[({]")


def _blank_comments_and_strings(source: str) -> str:
    """`source` with comments, string and character literals replaced by spaces (newlines kept)."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|R"(?P<d>[^(\s]*)\(.*?\)(?P=d)"|"(\\.|[^"\\\n])*"|\'(\\.|[^\'\\\n])*\'',
                         re.S)
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


def cpp_functions(source: str) -> List[Tuple[str, int, int]]:
    """(signature start, first line, line count) of every function body in C++ `source`: a brace block at
    namespace or class scope whose preceding statement ends in a parameter list (lambdas and blocks inside
    a function count as part of it)."""
    text = _blank_comments_and_strings(source)
    found = []
    stack: List[str] = []  # "container", "function" or "other" per open brace
    statement_start = 0
    for at, char in enumerate(text):
        if char == "{":
            before = text[statement_start:at].strip()
            before = re.sub(r"^(public|private|protected)\s*:\s*", "", before)
            before = re.sub(r"^#[^\n]*\n", "", before).strip()
            if "function" in stack:
                kind = "other"
            elif _CONTAINER.search(before):
                kind = "container"
            elif "(" in before and _FUNCTION_TAIL.search(before) and not re.search(r"=\s*$", before):
                kind = "function"
                first = text.count("\n", 0, statement_start + (len(text[statement_start:at]) -
                                                               len(text[statement_start:at].lstrip())))
                found.append([" ".join(before.split())[:80], first + 1, first + 1, len(stack)])
            else:
                kind = "other"
            stack.append(kind)
            statement_start = at + 1
        elif char == "}":
            kind = stack.pop() if stack else "other"
            if kind == "function":
                for entry in reversed(found):
                    if entry[3] == len(stack):
                        entry[2] = text.count("\n", 0, at) + 1
                        entry[3] = -1
                        break
            statement_start = at + 1
        elif char == ";" or (char == "\n" and text[statement_start:at].lstrip().startswith("#")):
            if char == ";" or not text[statement_start:at].rstrip().endswith("\\"):
                statement_start = at + 1
    return [(name, first, last - first + 1) for name, first, last, _ in found]


def _offenders() -> List[str]:
    problems = []
    for path in python_files():
        source = path.read_text()
        lines = source.count("\n")
        name = path.relative_to(ROOT)
        if name.parts[0] == "dc_keras" and lines > MAX_FILE_LINES:
            problems.append(f"{name}: {lines} lines (max {MAX_FILE_LINES})")
        for function, first, count in python_functions(source):
            if count > MAX_FUNCTION_LINES:
                problems.append(f"{name}:{first} {function}: {count} lines (max {MAX_FUNCTION_LINES})")
    for path in cpp_files():
        source = path.read_text()
        lines = source.count("\n")
        name = path.relative_to(ROOT)
        if lines > MAX_FILE_LINES:
            problems.append(f"{name}: {lines} lines (max {MAX_FILE_LINES})")
        for function, first, count in cpp_functions(source):
            if count > MAX_FUNCTION_LINES:
                problems.append(f"{name}:{first} {function}: {count} lines (max {MAX_FUNCTION_LINES})")
    return problems


def test_files_and_functions_within_limits():
    problems = _offenders()
    assert not problems, "over the size limits:\n" + "\n".join(problems)


def test_cpp_scan_finds_functions_not_containers():
    source = """
namespace a {
// a { brace in a comment
struct S {
  int f() const { return 1; }
  S() : x_(0) {}
  int x_;
};
const int kTable[] = {1, 2, 3};
template <typename T>
T g(T v) {
  auto h = [](int x) { return x; };
  if (v) {
    return "}";
  }
  return v;
}
}  // namespace a
extern "C" int c_api(const char* s) {
  return 0;
}
"""
    functions = {name.split("(")[0].split()[-1]: (first, count) for name, first, count in cpp_functions(source)}
    assert functions == {"f": (5, 1), "S": (6, 1), "g": (10, 8), "c_api": (19, 3)}


def test_python_scan_counts_methods_and_nested_functions():
    source = "class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n"
    assert python_functions(source) == [("A.m", 2, 4), ("A.m.inner", 3, 2)]
