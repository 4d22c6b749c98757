"""No function in ``packages/`` or ``examples/`` is longer than ``MAX_FUNCTION_LINES``, read with ``ast``.

A function's length runs from its ``def`` line to its last line, docstring included
(decorators are not counted); a nested function counts on its own and inside its parent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted([*ROOT.glob("packages/*/src"), *ROOT.glob("examples/*/src")])
MAX_FUNCTION_LINES = 60

# Functions over the limit that stay for now, by "path:qualified name" (keep it empty).
ALLOWED: set[str] = set()


def long_functions(tree: ast.AST, where: str, limit: int = MAX_FUNCTION_LINES) -> Iterator[str]:
    """``where:line qualname (N lines)`` for each function or method longer than ``limit`` lines."""

    def walk(node: ast.AST, prefix: str) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    yield f"{where}:{child.lineno} {name} ({length} lines)"
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def test_the_measure_counts_def_to_last_line_and_sees_methods_and_nested_functions() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    method = "\n".join(f"        x{i} = {i}" for i in range(59))
    code = f"def ok():\n{body}\n\nclass C:\n    @staticmethod\n    def long():\n{method}\n        return 1\n"
    assert list(long_functions(ast.parse(code), "m.py")) == ["m.py:64 C.long (61 lines)"]
    nested = "def outer():\n    def inner():\n" + "\n".join(f"        y{i} = {i}" for i in range(60))
    assert list(long_functions(ast.parse(nested), "n.py")) == [
        "n.py:1 outer (62 lines)",
        "n.py:2 outer.inner (61 lines)",
    ]


def test_no_function_in_the_packages_is_too_long() -> None:
    assert len(SOURCES) >= 4, SOURCES  # core, losses, oracles and the echo example
    found, allowed_seen = [], set()
    for src in SOURCES:
        for path in sorted(src.rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for line in long_functions(ast.parse(path.read_text(encoding="utf-8")), where):
                key = f"{where}:{line.split(' ', 2)[1]}"
                if key in ALLOWED:
                    allowed_seen.add(key)
                else:
                    found.append(line)
    assert found == [], f"split these (at most {MAX_FUNCTION_LINES} lines a function):\n" + "\n".join(found)
    assert allowed_seen == ALLOWED, f"no longer too long, drop from ALLOWED: {sorted(ALLOWED - allowed_seen)}"
