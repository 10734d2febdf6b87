"""How the book presents the executed notebooks: cell tags, figure style and tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gravrev.io import atomic_path

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


def tidy_executed(path: Path) -> None:
    """Rewrite an executed notebook's cell tags for the book (idempotent, atomic)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
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
    styler = df.style.hide(axis="index").set_caption(caption)
    styler = styler.format(na_rep=MISSING, precision=precision)
    return styler.set_table_attributes('class="dataframe gravrev-table"')
