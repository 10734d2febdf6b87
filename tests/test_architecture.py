"""The package's shape: sub-packages that name the layers, boundaries kept, no import cycles.

Read from the source with ast (function-level imports included), never by importing.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import nbformat
import pytest
from import_closure import imported_modules

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gravrev"
NOTEBOOK = re.compile(r"(\d\d)_(\w+)\.ipynb")
NO_STAGE = {"provenance", "budget"}  # chapters of no stage: the run's record, the 7B arithmetic
TRAINING_STAGES = {"history", "finetune", "blocking", "mediation", "sweep", "defenses"}
STAGE_REPORT = ("report", "figures")  # a stage's words, and its figures beside them
PLOTTING = {"matplotlib", "seaborn"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: imported_modules(p.read_text(), m) - {m} for m, p in MODULES.items()}
STAGES = sorted(p.parent.name for p in (PACKAGE / "stages").glob("*/__init__.py"))


def package_of(module: str) -> str:
    """gravrev.stats.nulls -> stats; gravrev.cli -> cli; gravrev -> gravrev."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gravrev"


def is_report(module: str) -> bool:
    """Words and figures: gravrev.report.* and each stage's report and figures modules."""
    parts = module.split(".")
    return package_of(module) == "report" or (
        len(parts) == 4 and parts[1] == "stages" and parts[3] in STAGE_REPORT)


def plotting_imports(source: str) -> set[str]:
    """The plotting packages a source imports anywhere (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
    return {n.split(".")[0] for n in names} & PLOTTING


COMPUTE = sorted(m for m in MODULES if not is_report(m) and m != "gravrev.cli")


def imports_of(source: str, current: str) -> set[str]:
    """The gravrev modules a source imports, as modules (a name imported from a module: it)."""
    return {m for m in imported_modules(source, current) if m in MODULES} - {current}


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
        "from gravrev.report import figures\n"
        "from gravrev.stats.summaries import summarize\n"
        "def f():\n"
        "    from gravrev.settings.hf.setting import HFSetting\n"
        "    import numpy\n"
    )
    assert {"gravrev.config.load", "gravrev.report.figures", "gravrev.stats.summaries",
            "gravrev.settings.hf.setting"} <= imports_of(source, "gravrev.x")


def test_cycles_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_is_report_names_the_report_package_and_each_stages_words_and_figures():
    assert is_report("gravrev.report.figures") and is_report("gravrev.report.claim_words")
    assert is_report("gravrev.stages.mediation.report")
    assert is_report("gravrev.stages.mediation.figures")
    assert not is_report("gravrev.stages.mediation.metrics")
    assert not is_report("gravrev.interp.figures")  # only a stage's sibling of its report
    assert not is_report("gravrev.stages.figures")
    assert "gravrev.stages.mediation.figures" not in COMPUTE


def test_plotting_imports_sees_every_form_of_import():
    source = ("import matplotlib.pyplot as plt\n"
              "def f():\n"
              "    from seaborn import lineplot\n"
              "    import numpy\n")
    assert plotting_imports(source) == {"matplotlib", "seaborn"}
    assert plotting_imports("from matplotlib.ticker import MaxNLocator") == {"matplotlib"}
    assert plotting_imports("import numpy\nfrom .figures import plot") == set()


def test_the_graph_covers_the_package():
    assert "gravrev.config.load" in GRAPH["gravrev.cli"] | {
        m for deps in GRAPH.values() for m in deps}
    assert "gravrev.settings.hf.inputs" in GRAPH["gravrev.config.validate"]  # function-level


# ----------------------------------------------------------------------------- the layers


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_only_the_cli_lives_at_the_top():
    """Every module sits in a sub-package that names its layer."""
    top = sorted(m for m in MODULES
                 if m.count(".") == 1 and not (PACKAGE / m.split(".")[1]).is_dir())
    assert top == ["gravrev.cli"]


@pytest.mark.parametrize("package", sorted({p.parent for p in PACKAGE.rglob("*.py")}))
def test_no_module_is_named_with_a_siblings_prefix(package):
    """config_fields beside config is a package trying to get out: make it one."""
    names = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    names += sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    bad = [(a, b) for a in names for b in names if a != b and b.startswith(a + "_")]
    assert not bad, f"{package.relative_to(ROOT)}: {bad}"


@pytest.mark.parametrize("module", COMPUTE)
def test_no_compute_module_imports_words_or_figures(module):
    """Editing a sentence or a figure re-runs no computation: compute never imports report."""
    bad = sorted(m for m in GRAPH[module] if is_report(m))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", COMPUTE)
def test_no_compute_module_imports_plotting(module):
    """Figures are drawn only in report code: compute never imports matplotlib or seaborn."""
    bad = sorted(plotting_imports(MODULES[module].read_text()))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if package_of(m) not in (
    "stages", "report", "cli")))
def test_the_science_library_imports_no_stage(module):
    bad = sorted(m for m in GRAPH[module] if package_of(m) == "stages")
    assert not bad, f"{module} imports {bad}"


# The packages a layer may import (besides itself). Low layers know nothing of the science.
ALLOWED = {
    "gravrev": {"runtime"},
    "store": set(),
    "config": {"store", "runtime"},
    "runtime": {"config", "store"},
    "stats": set(),
    "claims": {"stats"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_low_layers_import_only_lower_ones(package):
    for module in (m for m in MODULES if package_of(m) == package):
        allowed = ALLOWED[package] | {package}
        if module == "gravrev.config.validate":  # the edge: checks every input before any stage
            allowed = allowed | {"settings", "organism", "behaviour"}
        bad = sorted(m for m in GRAPH[module] if package_of(m) not in allowed)
        assert not bad, f"{module} imports {bad}; {package} may import only {sorted(allowed)}"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_reads_another_stage_only_through_its_definitions_and_metrics(stage):
    """Stages share typed metrics (<Stage>Metrics.from_json), definitions (e.g. finetune's arms)
    and stages.artifacts; never another stage's training, compute step, words or figures."""
    mine = [m for m in MODULES if m.startswith(f"gravrev.stages.{stage}.")]
    for module in mine:
        others = sorted(m for m in GRAPH[module] if m.startswith("gravrev.stages.")
                        and not m.startswith(f"gravrev.stages.{stage}.")
                        and m.rsplit(".", 1)[-1] in ("runs", "compute", *STAGE_REPORT))
        assert not others, f"{module} imports {others}"


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
    assert set(STAGES) == set(chapters) - NO_STAGE
    assert NO_STAGE <= set(chapters)


def test_the_cli_runs_exactly_the_stages_and_renders_exactly_the_chapters():
    from gravrev import cli

    chapters = notebooks()
    assert cli.STAGES == {s: chapters[s] for s in cli.STAGES}
    assert set(cli.STAGES) == set(STAGES)
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
    used = {m.split(".")[2] for m in imports_of(_code(ROOT / "notebooks" / f"{stem}.ipynb"), "nb")
            if m.startswith("gravrev.stages.") and m.count(".") >= 3}
    want = set() if name in NO_STAGE else {name}
    assert used <= want, f"{stem} imports stages {sorted(used)}"


@pytest.mark.parametrize("name", sorted(set(notebooks()) - NO_STAGE))
def test_a_chapter_opens_through_open_chapter(name):
    """One entry, always validated, that works from any cwd inside the repository."""
    code = _code(ROOT / "notebooks" / f"{notebooks()[name]}.ipynb")
    assert f'open_chapter("{name}"' in code
    assert "validated_config(" not in code and "load_config(" not in code
    assert "re.compile" not in code and "re.match" not in code  # no parsing of names


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_has_its_steps_and_its_report(stage):
    """Training stages: runs.run, metrics.measure and metrics.load; others: compute.run and load."""
    steps = ("runs", "metrics", "report") if stage in TRAINING_STAGES else ("compute", "report")
    files = {p.stem for p in (PACKAGE / "stages" / stage).glob("*.py")}
    assert set(steps) <= files, f"gravrev/stages/{stage} has {sorted(files)}"
    if stage in TRAINING_STAGES:
        fns = [("runs", "run"), ("metrics", "measure"), ("metrics", "load")]
    else:
        fns = [("compute", "run"), ("compute", "load")]
    for module_name_, fn in fns:
        module = importlib.import_module(f"gravrev.stages.{stage}.{module_name_}")
        assert callable(getattr(module, fn, None)), f"gravrev.stages.{stage}.{module_name_}.{fn}"
        params = list(inspect.signature(getattr(module, fn)).parameters)
        assert params[:2] == ["cfg", "paths"], f"{stage}.{module_name_}.{fn}{params}"
    report = importlib.import_module(f"gravrev.stages.{stage}.report")
    assert callable(getattr(report, "findings", None)), f"gravrev.stages.{stage}.report.findings"


def test_the_runs_step_of_a_training_stage_writes_no_metrics_file():
    for stage in sorted(TRAINING_STAGES):
        source = (PACKAGE / "stages" / stage / "runs.py").read_text()
        assert "metrics_file(" not in source, f"stages/{stage}/runs.py writes a metrics file"
