"""The gravrev files a source reaches through imports, read with ast (never by importing).

Shared by the project tests (dvc.yaml's deps are exactly these closures) and by
`tools/sync_deps.py`, which writes them into dvc.yaml.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gravrev"


def module_file(dotted: str) -> Path | None:
    """gravrev.a.b -> gravrev/a/b.py or gravrev/a/b/__init__.py, or None."""
    rel = Path(*dotted.split("."))
    for path in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def _code(source: str) -> str:
    """Cell source without IPython magics and shell escapes, so ast can parse it."""
    return "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )


def imported_modules(source: str, current: str = "") -> set[str]:
    """Dotted gravrev modules a source imports anywhere (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(_code(source))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = current.split(".")[: len(current.split(".")) - node.level]
                base = ".".join([*package, base] if base else package)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "gravrev" and module_file(name):
                found.add(name)
    return found


def _with_packages(module: str) -> set[str]:
    """Importing gravrev.a.b runs gravrev/__init__, gravrev/a/__init__ and gravrev/a/b."""
    parts = module.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts) + 1)}


def package_data(path: Path) -> set[Path]:
    """Data files beside a module that it names as a string literal (presets.yaml, ...)."""
    return {
        path.parent / n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and "/" not in n.value
        and n.value.endswith(".yaml") and (path.parent / n.value).is_file()
    }


def reached_modules(source: str) -> set[str]:
    """Every dotted gravrev module a source reaches, transitively, packages included."""
    todo, seen = sorted(imported_modules(source)), set()
    while todo:
        module = todo.pop()
        for m in _with_packages(module) - seen:
            seen.add(m)
            todo += sorted(imported_modules(module_file(m).read_text(), m))
    return seen


def reached(source: str) -> set[str]:
    """Every gravrev file a source reaches, transitively, as repo paths (data files included)."""
    files = set()
    for m in reached_modules(source):
        path = module_file(m)
        files |= {path, *package_data(path)}
    return {str(p.relative_to(ROOT)) for p in files}


def notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(_code(c.source) for c in nb.cells if c.cell_type == "code")


def stage_source(cmd: str) -> str | None:
    """The source whose closure a dvc.yaml command runs: a stage module or a notebook."""
    words = cmd.split()
    if words[:2] == ["gravrev", "run"]:
        step = "runs" if (PACKAGE / "stages" / words[2] / "runs.py").is_file() else "compute"
        return f"import gravrev.stages.{words[2]}.{step}"
    if words[:2] == ["gravrev", "metrics"]:
        return f"import gravrev.stages.{words[2]}.metrics"
    if words[:2] == ["gravrev", "notebook"]:
        return notebook_code(ROOT / "notebooks" / f"{words[2]}.ipynb")
    if words[:2] == ["gravrev", "book"]:  # the provenance page, then Sphinx with our extension
        return (notebook_code(ROOT / "notebooks" / "09_provenance.ipynb")
                + "\nimport gravrev.cli\nimport gravrev.report.sphinx_assets")
    if words[:2] == ["gravrev", "validate"]:
        return "import gravrev.config.validate"
    return None
