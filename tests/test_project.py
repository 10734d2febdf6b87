"""The project's files agree with each other: environments, notebooks, dvc.yaml, book, claims."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from import_closure import imported_modules, notebook_code, reached, stage_source

from gravrev.claims.rules import EVALUATORS
from gravrev.claims.schema import load_paper_claims

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PACKAGE = ROOT / "gravrev"


# ----------------------------------------------------------------------------- environments


def pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs |= set(extra)
    return reqs


def conda_pip_requirements(path: Path) -> tuple[list, set[str]]:
    """(the conda dependencies, the pip section's requirements without the editable install)."""
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, f"{path.name}: expected exactly one pip section"
    reqs = {" ".join(str(r).split()) for r in pip[0]}
    return deps, reqs - {"-e ."}


def test_environment_yml_and_pyproject_list_the_same_requirements():
    path = ROOT / "environment.yml"
    assert path.is_file(), "environment.yml is missing (it and pyproject.toml must agree)"
    deps, pip = conda_pip_requirements(path)
    assert pip == pyproject_requirements()
    assert "pip" in deps
    python = [d for d in deps if isinstance(d, str) and re.fullmatch(r"python[=<>!~ ].*", d)]
    assert python == ["python=3.11"]


# ----------------------------------------------------------------------------- notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_has_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [], f"{path.name}: a cell has outputs"
        assert cell.execution_count is None, f"{path.name}: a cell has an execution count"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged parameters"
    assert tagged[0].cell_type == "code"
    names = {
        t.id
        for n in ast.walk(ast.parse(tagged[0].source))
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert "params_path" in names


def test_every_stage_renders_one_notebook_then_provenance_and_the_7b_arithmetic():
    from gravrev.cli import NOTEBOOKS as ORDER
    from gravrev.cli import STAGES as CHAPTERS

    assert [p.stem for p in NOTEBOOKS] == list(ORDER)
    for stage, notebook in CHAPTERS.items():
        assert notebook.split("_", 1)[1] == stage
        assert (PACKAGE / "stages" / stage / "__init__.py").is_file()
    # the run's record and the 7B arithmetic render no stage
    assert set(ORDER) - set(CHAPTERS.values()) == {"09_provenance", "10_budget"}


# ----------------------------------------------------------------------------- dvc.yaml


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _deps(stage: dict) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}


def test_reached_follows_imports_transitively():
    assert "gravrev/stages/claims/compute.py" in reached("import gravrev.stages.claims.compute")
    files = reached("from gravrev.report import figures\nfrom gravrev.claims.rules import pool")
    assert {
        "gravrev/__init__.py",  # runs on every import, and applies the numeric pins
        "gravrev/runtime/numerics.py",
        "gravrev/report/__init__.py",  # importing a module runs its packages' __init__
        "gravrev/report/figures.py",
        "gravrev/claims/rules.py",
        "gravrev/stats/summaries.py",
        "gravrev/claims/paper_claims.yaml",
    } <= files
    assert "gravrev/config/presets.yaml" in reached("import gravrev.config.load")


def test_package_init_imports_only_the_numeric_pins():
    assert imported_modules((PACKAGE / "__init__.py").read_text(), "gravrev") <= {
        "gravrev.runtime", "gravrev.runtime.numerics"}
    assert not imported_modules((PACKAGE / "runtime" / "numerics.py").read_text(),
                                "gravrev.runtime.numerics")


def test_every_notebook_is_a_dep_of_exactly_one_stage():
    for path in NOTEBOOKS:
        rel = f"notebooks/{path.name}"
        owners = [name for name, stage in STAGES.items() if rel in _deps(stage)]
        assert len(owners) == 1, f"{rel} is a dep of {owners}"


COMPUTE = [n for n, s in STAGES.items()
           if s["cmd"].startswith(("gravrev run ", "gravrev metrics "))]
RENDER = [n for n, s in STAGES.items() if s["cmd"].startswith("gravrev notebook ")]
PRESENTATION = re.compile(
    r"^(notebooks/|book/|gravrev/report/|gravrev/stages/\w+/(report|figures)\.py$)")


@pytest.mark.parametrize("stage", [n for n, s in STAGES.items() if stage_source(s["cmd"])])
def test_a_steps_code_deps_are_exactly_its_import_closure(stage):
    """Nothing missing (a stale result) and nothing extra (a needless re-run): `make deps`."""
    code = {d for d in _deps(STAGES[stage]) if d.startswith("gravrev/")}
    want = reached(stage_source(STAGES[stage]["cmd"]))
    assert code == want, (f"stage {stage}: missing {sorted(want - code)}, "
                          f"extra {sorted(code - want)}; run `make deps`")


@pytest.mark.parametrize("stage", COMPUTE)
def test_no_compute_stage_depends_on_a_figure_or_a_page(stage):
    """Editing a figure's code or a chapter's text re-runs no training."""
    assert not [d for d in _deps(STAGES[stage]) if PRESENTATION.match(d)]
    assert "data/config.ok" in _deps(STAGES[stage])  # after validation, never before


@pytest.mark.parametrize("stage", RENDER)
def test_render_stage_deps_cover_the_modules_its_notebook_reaches(stage):
    deps = _deps(STAGES[stage])
    notebooks = [d for d in deps if d.startswith("notebooks/") and d.endswith(".ipynb")]
    assert len(notebooks) == 1, f"stage {stage} renders {notebooks}"
    missing = sorted(reached(notebook_code(ROOT / notebooks[0])) - deps)
    assert not missing, f"stage {stage} ({notebooks[0]}) reaches but does not depend on {missing}"


def test_every_dep_exists_or_is_another_stages_output():
    outs = set()
    for stage in STAGES.values():
        for kind in ("outs", "metrics"):
            outs |= {o if isinstance(o, str) else next(iter(o)) for o in stage.get(kind, [])}
    for name, stage in STAGES.items():
        for dep in _deps(stage):
            assert (ROOT / dep).exists() or dep in outs, f"stage {name}: dep {dep} is nowhere"


def test_book_stage_depends_on_every_page():
    deps = _deps(STAGES["book"])
    pages = {f"book/{p.name}" for p in (ROOT / "book").glob("*.md")}
    assert pages | {"book/_toc.yml", "book/_config.yml"} <= deps


def test_stage_params_are_config_keys():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"stage {name}: param {key}"
                node = node[part]


# ----------------------------------------------------------------------------- the book

# The rule: a *typed number* is a decimal such as 0.42 or a percentage such as 19% or 8.5 %.
# Every number a page states must be glued from an executed notebook, so typed numbers may
# appear only inside glue roles and directives, inline code, fenced code blocks, and lines
# quoting the paper (markdown quotes, starting with ">"). Identifiers that look like decimals
# are not numbers: an arXiv id ("arXiv 2606.28525") and a version after a name ("Python 3.11").
TYPED_NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])|(?<![\w.])\d+(?:\.\d+)?\s?%")
NOT_A_NUMBER = re.compile(r"\b(?:arXiv:?|Python|version|v)\s?\d+(?:\.\d+)+", re.IGNORECASE)
INLINE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`|`[^`]*`|\]\([^)]*\)")  # glue, code, link targets


def typed_numbers(markdown: str) -> list[str]:
    """The lines of a page that type a number, by the rule above."""
    bad, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if fenced or line.lstrip().startswith(">"):
            continue
        text = NOT_A_NUMBER.sub("", INLINE.sub("", line))
        if TYPED_NUMBER.search(text):
            bad.append(line)
    return bad


def test_the_typed_number_rule():
    assert typed_numbers("Alignment reached 0.42 at step 1.") != []
    assert typed_numbers("Harm fell to 19% of requests.") != []
    assert typed_numbers("Harm fell to 8.5 % of requests.") != []
    assert typed_numbers("Alignment was {glue:text}`03_vrev.ipynb::a1_mean:.3f` at step 1.") == []
    assert typed_numbers("Run `dvc exp run -S finetune.lr=0.003`, then step 20.") == []
    assert typed_numbers("```python\nx = 0.5\n```") == []
    assert typed_numbers("> The paper: alignment is 0.429 after one step.") == []
    assert typed_numbers("From arXiv 2606.28525, on Python 3.11, with 16 GB.") == []
    assert typed_numbers("The [paper](https://arxiv.org/abs/2606.28525) says so.") == []
    assert typed_numbers("The paper (https://arxiv.org/abs/2606.28525) says 0.4.") != []


@pytest.mark.parametrize("page", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_book_page_types_no_numbers(page):
    assert typed_numbers(page.read_text()) == []


# ----------------------------------------------------------------------------- claims

CLAIM_IDS = {
    "alignment_step1",
    "alignment_step20",
    "alignment_rises",
    "null_exceedance",
    "final_alignment_unblocked",
    "final_alignment_blocked",
    "harmfulness_unblocked",
    "harmfulness_blocked",
    "task_cost",
    # the revised version of the paper
    "matched_null_every_trajectory",
    "vocabulary_readout",
    "alignment_harm_correlation",
    "block_baseline_push",
    "rehearsal_opposes",
}


def test_shipped_paper_claims_match_the_claims_schema():
    ids = [c["id"] for c in load_paper_claims()]
    assert len(ids) == len(set(ids))
    assert set(ids) == CLAIM_IDS == set(EVALUATORS)


def test_code_tests_and_notebooks_are_ruff_clean():
    lint = ["gravrev", "tests", "benchmarks", "notebooks"]
    out = subprocess.run([sys.executable, "-m", "ruff", "check", *lint], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
