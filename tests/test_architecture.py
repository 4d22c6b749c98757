"""The workspace's shape, read from the source with `ast` (nothing is imported).

- dependencies point one way: ``cyclealign_losses`` -> nothing first-party;
  ``cyclealign_oracles`` -> ``cyclealign``; ``cyclealign`` -> neither plugin package
  (plugins reach the engine through the ``cyclealign`` entry-point group only);
- the modules of ``cyclealign`` import each other without a cycle, of any length;
- no module is longer than ``MAX_LINES``;
- no module imports another's private names (``from x import _y``).

Every import counts: ``import x`` and ``from x import y``, at module level, inside
functions and under ``if TYPE_CHECKING:``.  ``from a.b import c`` is an edge to the
module ``a.b.c`` when there is one, else to ``a.b`` (the package that defines ``c``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"
MAX_LINES = 350


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    where: str  # path:line, for the failure message


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    """Every module under packages/*/src, by dotted name."""
    found: dict[str, Path] = {}
    for src in sorted(PACKAGES.glob("*/src")):
        for path in sorted(src.rglob("*.py")):
            found[module_name(path, src)] = path
    return found


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, tree: ast.AST, is_package: bool, known: Iterable[str], path: str = "") -> Iterator[Import]:
    """Every import anywhere in ``tree``; a ``from`` import of a known submodule targets that submodule."""
    known = set(known)
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                yield Import(module, sub if sub in known else base, where)


def all_imports() -> list[Import]:
    modules = source_modules()
    found: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += imports_of(name, tree, path.name == "__init__.py", modules, str(path.relative_to(ROOT)))
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (Tarjan): modules that all reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(components, key=min)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle, as a closed path, through each tangle."""
    return [_cycle_in(graph, component) for component in tangles(graph)]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle through the component's first module, found breadth-first inside the component."""
    start = min(component)
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & component):
                if w == start:
                    path = [v]
                    while (before := previous[path[-1]]) is not None:
                        path.append(before)
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in component {sorted(component)}")


# ---------------------------------------------------------------- the walker itself


def test_the_walker_sees_every_kind_of_import() -> None:
    code = """
import os
from typing import TYPE_CHECKING
from cyclealign import plugins, Config
from . import sibling
from .sub import thing
from .. import uncle
if TYPE_CHECKING:
    from cyclealign_losses.rank_losses import ProLoss
def later():
    import cyclealign_oracles.plugin
"""
    known = {"cyclealign.plugins", "pkg.mid.sibling", "pkg.mid.sub", "pkg.uncle"}
    got = {i.target for i in imports_of("pkg.mid.here", ast.parse(code), False, known)}
    assert got == {
        "os",
        "typing",
        "cyclealign.plugins",
        "cyclealign",  # Config is no module: the package that defines it
        "pkg.mid.sibling",
        "pkg.mid.sub",
        "pkg.uncle",
        "cyclealign_losses.rank_losses",
        "cyclealign_oracles.plugin",
    }
    # In a package's __init__, one dot is the package itself.
    assert {i.target for i in imports_of("pkg.mid", ast.parse("from . import sub"), True, known)} == {"pkg.mid.sub"}


def test_cycles_of_any_length_are_found_and_printed() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x"}}) == [["a", "b", "a"], ["x", "y", "x"]]


def test_the_walk_covers_all_three_distributions() -> None:
    tops = {top(name) for name in source_modules()}
    assert {"cyclealign", "cyclealign_losses", "cyclealign_oracles"} <= tops
    assert len(source_modules()) > 20


# ---------------------------------------------------------------- the rules


def _violations(importer: str, forbidden: set[str]) -> list[str]:
    return sorted(
        f"{i.where}: {i.module} imports {i.target}"
        for i in all_imports()
        if top(i.module) == importer and top(i.target) in forbidden
    )


def test_the_losses_import_nothing_from_the_engine() -> None:
    bad = _violations("cyclealign_losses", {"cyclealign", "cyclealign_oracles"})
    assert not bad, "cyclealign-losses needs torch and pluggy only:\n" + "\n".join(bad)


def test_the_engine_imports_no_plugin_package() -> None:
    bad = _violations("cyclealign", {"cyclealign_losses", "cyclealign_oracles"})
    assert not bad, "cyclealign must reach its plugins through entry points only:\n" + "\n".join(bad)


def test_the_engine_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for i in all_imports():
        if top(i.module) == "cyclealign" and top(i.target) == "cyclealign" and i.target != i.module:
            graph.setdefault(i.module, set()).add(i.target)
    report = []
    for component in tangles(graph):
        cycle = _cycle_in(graph, component)
        rest = sorted(component - set(cycle))
        report.append(" -> ".join(cycle) + (f"\n    (tangled with it too: {', '.join(rest)})" if rest else ""))
    assert not report, "import cycles among the modules of cyclealign:\n" + "\n".join(report)


def private_imports(tree: ast.AST, where: str) -> Iterator[str]:
    """``from x import _y`` of a first-party module: a name its owner keeps to itself."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and top(node.module or "").startswith("cyclealign"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"{where}:{node.lineno}: from {node.module} import {alias.name}"


def test_private_imports_are_found() -> None:
    code = "from cyclealign.report.page import _plt, md_table\nfrom os import _exit\nfrom cyclealign import __version__"
    assert list(private_imports(ast.parse(code), "m.py")) == ["m.py:1: from cyclealign.report.page import _plt"]


def test_no_module_imports_another_s_private_names() -> None:
    bad = []
    for path in sorted(PACKAGES.rglob("*.py")):
        bad += private_imports(ast.parse(path.read_text(encoding="utf-8")), str(path.relative_to(ROOT)))
    assert not bad, "make the name public (no underscore) or move it to its user:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", sorted(PACKAGES.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGES)))
def test_no_module_is_too_long(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES}): split it"


# The layers of ``cyclealign``, lowest first.  A module may import its own layer
# group (the same key) or any lower layer, never a higher one nor a peer's key in
# its own layer.  A key is the first name under ``cyclealign`` (a subpackage or a
# root module); ``cli.common`` (console + error boundary, shared by every sub-app's
# commands) is keyed on its own.  "" is the package itself.
LAYERS: list[set[str]] = [
    {
        "",
        "protocols",
        "config",
        "errors",
        "usage",
        "plugin_options",
        "hookspecs",
        "jsonl",
        "embedded",
        "user_files",
        "callbacks",
    },
    {"infra"},  # distributed start-up, lockstep across ranks, crash-safe files
    {"oracle", "whitebox"},
    {"data"},  # the HH-RLHF loader formats prompts with the white-box chat template
    {"plugins"},  # builds the configured oracle/sampler/loss from entry points
    {"trackers"},  # run.report_to -> callbacks (third-party trackers through the plugins' entry points)
    {"cycle"},
    {"run"},
    {"cli.common"},
    {"offline"},
    {"upstream"},
    {"evaluate"},
    {"export"},
    {"aligner"},
    {"api"},  # the trainer objects (CycleAlignTrainer, …) over run, offline and aligner
    {"report"},
    {"cli"},
    {"__main__"},
]

# Upward imports that stay for now, each with its reason (keep this list short).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    # ``from cyclealign import CycleAlignTrainer``: the package's lazy public names (PEP 562), loaded on first use.
    ("cyclealign", "cyclealign.api.trainers"): "the trainers exported lazily from the package root",
}


def layer_key(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:2] == ["cli", "common"]:
        return "cli.common"
    return parts[0] if parts else ""


def layer_of(module: str) -> int:
    key = layer_key(module)
    for index, keys in enumerate(LAYERS):
        if key in keys:
            return index
    raise AssertionError(f"{module}: its key {key!r} is in no layer of LAYERS; add it")


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """Each import of ``cyclealign`` against the order, as ``path:line: importer -> target``."""
    found = []
    for imp in imports:
        if top(imp.module) != "cyclealign" or top(imp.target) != "cyclealign":
            continue
        if (imp.module, imp.target) in ALLOWED_UPWARD:
            continue
        mine, theirs = layer_of(imp.module), layer_of(imp.target)
        peer = mine == theirs and mine > 0 and layer_key(imp.module) != layer_key(imp.target)
        if theirs > mine or peer:
            found.append(f"{imp.where}: {imp.module} -> {imp.target}")
    return sorted(set(found))


def test_an_upward_import_is_reported_with_its_file_and_line() -> None:
    code = (
        "import os\nfrom cyclealign.errors import DataError\n\ndef later():\n    from cyclealign.run.entry import run\n"
    )
    tree = ast.parse(code)
    known = {"cyclealign.errors", "cyclealign.run.entry"}
    found = layer_violations(imports_of("cyclealign.cycle.engine", tree, False, known, "engine.py"))
    assert found == ["engine.py:5: cyclealign.cycle.engine -> cyclealign.run.entry"]
    peer = imports_of("cyclealign.oracle.x", ast.parse("import cyclealign.whitebox.y"), False, set(), "x.py")
    assert layer_violations(peer) == ["x.py:1: cyclealign.oracle.x -> cyclealign.whitebox.y"]


def test_every_import_follows_the_layers() -> None:
    assert layer_violations(all_imports()) == []


def test_the_allow_list_holds_only_edges_that_exist() -> None:
    edges = {(i.module, i.target) for i in all_imports()}
    assert set(ALLOWED_UPWARD) <= edges


ARCHITECTURE_DOC = ROOT / "docs" / "architecture.md"
CORE = PACKAGES / "cyclealign-core" / "src"


def test_every_module_path_in_the_architecture_doc_exists() -> None:
    import re

    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"cyclealign/[\w/]+\.py", text))
    missing = sorted(p for p in named if not (CORE / p).is_file())
    assert named and missing == []


def test_every_subpackage_is_named_in_the_architecture_doc() -> None:
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    subpackages = sorted(p.parent.name for p in (CORE / "cyclealign").glob("*/__init__.py"))
    assert [s for s in subpackages if f"cyclealign/{s}/" not in text] == []


def test_every_typer_app_lives_in_the_cli_package() -> None:
    """Commands are thin wrappers in ``cyclealign/cli/``; the libraries under them know no command line."""
    bad = sorted(
        f"{i.where}: {i.module} imports {i.target}"
        for i in all_imports()
        if top(i.module) == "cyclealign"
        and top(i.target) in {"typer", "click"}
        and not (i.module == "cyclealign.cli" or i.module.startswith("cyclealign.cli."))
    )
    assert bad == [], "move the command into cyclealign/cli/:\n" + "\n".join(bad)
