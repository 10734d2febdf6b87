"""The package's shape: no import cycles, short modules, one stage per chapter, layers kept apart.

Read from the source with ast (function-level imports included), never by importing.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gravrev"
MAX_LINES = 300
NOTEBOOK = re.compile(r"(\d\d)_(\w+)\.ipynb")
NO_STAGE = {"provenance", "budget"}  # chapters of no stage: the run's record, the 7B arithmetic


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
STAGE_MODULES = sorted(m.split(".")[-1] for m in MODULES if m.startswith("gravrev.stages."))
LIBRARY = sorted(m for m in MODULES if m.count(".") == 1)  # gravrev/*.py


def imports_of(source: str, current: str, is_package: bool = False) -> set[str]:
    """The gravrev modules a source imports anywhere, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the current module's package upwards
                package = current.split(".") if is_package else current.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            # `from gravrev import plots` imports gravrev/report/figures.py; `from gravrev.x import f`, x
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import gravrev.x.y` where y is no module
                name = name.rpartition(".")[0]
            if name.startswith("gravrev"):
                found.add(name)
    return found - {current}


GRAPH = {
    m: imports_of(p.read_text(), m, p.name == "__init__.py") for m, p in MODULES.items()
}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ----------------------------------------------------------------------------- the checkers


def test_imports_of_sees_every_form_of_import():
    source = (
        "import gravrev.config.load\n"
        "from gravrev import plots, stats\n"
        "from gravrev.stages import vrev\n"
        "from . import io\n"
        "def f():\n"
        "    from gravrev.settings.hf.setting import HFSetting\n"
        "    import numpy\n"
    )
    assert imports_of(source, "gravrev.settings.protocol") == {
        "gravrev.config.load", "gravrev.report.figures", "gravrev.stats.summaries", "gravrev.stages.vrev.compute", "gravrev.store.atomic",
        "gravrev.settings.hf.setting",
    }
    assert imports_of("from .. import claims\nfrom .vrev import run\n", "gravrev.stages.nulls.compute") \
        == {"gravrev.claims.rules", "gravrev.stages.vrev.compute"}


def test_cycles_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# ----------------------------------------------------------------------------- the package


def test_the_graph_covers_the_package():
    assert {"gravrev.config.load", "gravrev.stages.vrev.compute"} <= set(GRAPH)
    assert "gravrev.config.load" in GRAPH["gravrev.stages.vrev.compute"]
    assert "gravrev.settings.hf.inputs" in GRAPH["gravrev.config.validate"]  # a function-level import


def test_no_import_cycles():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_the_line_limit(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {n} lines (> {MAX_LINES})"


@pytest.mark.parametrize("module", LIBRARY)
def test_the_science_library_imports_no_stage(module):
    stages = sorted(m for m in GRAPH[module] if m.startswith("gravrev.stages"))
    assert not stages, f"{module} imports {stages}"


@pytest.mark.parametrize("stage", STAGE_MODULES)
def test_a_stage_imports_no_other_stage(stage):
    me = f"gravrev.stages.{stage}"
    others = sorted(m for m in GRAPH[me] if m.startswith("gravrev.stages") and m != me)
    assert not others, f"{me} imports {others}; shared readers belong in gravrev/stages/artifacts.py"


# ----------------------------------------------------------------------------- stages, chapters


def notebooks() -> dict[str, str]:
    """name -> stem of every chapter notebook, e.g. 'vrev' -> '03_vrev'."""
    out = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        m = NOTEBOOK.fullmatch(path.name)
        assert m, f"{path.name}: chapter notebooks are named NN_<name>.ipynb"
        assert m.group(2) not in out, f"two notebooks for {m.group(2)}"
        out[m.group(2)] = path.stem
    return out


def test_stages_and_chapters_correspond_one_to_one():
    chapters = notebooks()
    numbers = [stem[:2] for stem in chapters.values()]
    assert len(numbers) == len(set(numbers)), "two chapters share a number"
    assert set(STAGE_MODULES) == set(chapters) - NO_STAGE
    assert NO_STAGE <= set(chapters)


def test_the_cli_runs_exactly_the_stages_and_renders_exactly_the_chapters():
    from gravrev import cli

    chapters = notebooks()
    assert cli.STAGES == {s: chapters[s] for s in cli.STAGES}
    assert set(cli.STAGES) == set(STAGE_MODULES)
    assert sorted(cli.NOTEBOOKS) == sorted(chapters.values())
    assert list(cli.STAGES.values()) == sorted(cli.STAGES.values())  # the pipeline's order


def _code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(
        line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
        if not line.lstrip().startswith(("%", "!"))
    )


@pytest.mark.parametrize("name", sorted(notebooks()))
def test_a_chapter_renders_its_own_stage_only(name):
    stem = notebooks()[name]
    used = {m for m in imports_of(_code(ROOT / "notebooks" / f"{stem}.ipynb"), "notebook")
            if m.startswith("gravrev.stages.")}
    want = set() if name in NO_STAGE else {f"gravrev.stages.{name}"}
    assert used == want, f"{stem} imports {sorted(used)}"


@pytest.mark.parametrize("stage", STAGE_MODULES)
def test_a_stage_has_run_load_and_findings(stage):
    import importlib

    module = importlib.import_module(f"gravrev.stages.{stage}")
    for fn in ("run", "load", "findings"):
        assert callable(getattr(module, fn, None)), f"gravrev.stages.{stage}.{fn}"
    for fn in ("run", "load"):
        params = list(inspect.signature(getattr(module, fn)).parameters)
        assert params[:2] == ["cfg", "paths"], f"gravrev.stages.{stage}.{fn}{params}"


def test_every_subpackage_is_shipped():
    """pyproject lists packages by name: a subpackage left out is missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert packages == listed
