"""How the book presents the executed notebooks: cell tags, figure style and tables."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gravrev.store.atomic import atomic_path

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

FIGURE_DPI = 170
LEGEND_FONTSIZE = 11
# papermill's own cells: the defaults and the values it injected. Readers see the values
# where they matter (the provenance page prints the parameters in force).
PARAMETER_TAGS = frozenset({"parameters", "injected-parameters"})
# A cell that already says how to show itself keeps its choice.
PRESENTATION_TAGS = frozenset({"remove-cell", "remove-input", "hide-input", "hide-cell"})
MISSING = "—"  # how a table shows a missing value (never "nan" or "None")


def presentation_tags(cell_type: str, tags: list[str]) -> list[str]:
    """The tags a cell should carry in the book: parameters removed, code collapsed."""
    if cell_type != "code":
        return list(tags)
    if PARAMETER_TAGS & set(tags):
        return [t for t in tags if t != "hide-input"] + (
            [] if "remove-cell" in tags else ["remove-cell"]
        )
    if PRESENTATION_TAGS & set(tags):
        return list(tags)
    return [*tags, "hide-input"]


# What papermill and the kernel record that changes with every run: clocks, the temporary
# paths it ran between. Dropped, so a chapter made twice from the same results is the same file.
RUN_METADATA = ("execution", "papermill")
RUN_PAPERMILL = ("start_time", "end_time", "duration", "input_path", "output_path")
ADDRESS = re.compile(r" at 0x[0-9a-f]+>")  # an object's memory address in its repr


def tidy_executed(path: Path) -> None:
    """Rewrite an executed notebook for the book: cell tags, and nothing that differs from run
    to run (clocks, temporary paths, random cell ids, warnings on stderr). Idempotent, atomic."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for key in RUN_PAPERMILL:
        nb.metadata.get("papermill", {}).pop(key, None)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":  # stderr holds warnings naming this machine's paths
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
            for out in cell.outputs:
                for mime, value in out.get("data", {}).items():
                    if mime.endswith("text/plain") and isinstance(value, str):
                        out["data"][mime] = ADDRESS.sub(">", value)
        tags = presentation_tags(cell.cell_type, list(cell.metadata.get("tags", [])))
        if tags:
            cell.metadata["tags"] = tags
    with atomic_path(path) as tmp:
        nbformat.write(nb, tmp)


def set_figure_style() -> None:
    """Seaborn's whitegrid, figures at FIGURE_DPI, legends readable: call once per notebook."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update(
        {
            "figure.dpi": FIGURE_DPI,
            "savefig.dpi": FIGURE_DPI,
            "savefig.bbox": "tight",
            "legend.fontsize": LEGEND_FONTSIZE,
            "legend.title_fontsize": LEGEND_FONTSIZE,
        }
    )


def show_table(df: pd.DataFrame, caption: str, precision: int | None = None) -> Styler:
    """A table without its index, every column whole, missing values as a dash.

    `precision` digits after the point for floats (pandas' default when None).
    """
    # The table's HTML id from its caption, not at random: the same table is the same bytes.
    uuid = hashlib.sha256(caption.encode()).hexdigest()[:8]
    styler = df.style.hide(axis="index").set_caption(caption).set_uuid(uuid)
    styler = styler.format(na_rep=MISSING, precision=precision)
    return styler.set_table_attributes('class="dataframe gravrev-table"')
