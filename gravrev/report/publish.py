"""How the book presents the executed notebooks: cell tags, figure style and tables."""

from __future__ import annotations

import hashlib
import html
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
# What a cell computes is what the reader came for: an output is never behind a toggle.
HIDDEN_OUTPUT_TAGS = frozenset({"hide-output"})
MISSING = "—"  # how a table shows a missing value (never "nan" or "None")
# A text column whose longest cell has more characters than this and a space is prose: it
# gets a reading width (TEXT_MIN_WIDTH) so that identifier columns cannot squeeze it into a
# column one word wide and the page thousands of pixels tall.
LONG_TEXT = 40
TEXT_MIN_WIDTH = "16em"
LONG_TOKEN = re.compile(r"\S{16,}")  # an identifier or a path long enough to need break points
BREAK_AFTER = re.compile(r"([._/])(?=[^\s.])")  # it may wrap after a dot, underscore or slash


def presentation_tags(cell_type: str, tags: list[str]) -> list[str]:
    """The tags a cell should carry in the book: parameters removed, code collapsed, outputs
    shown (a hidden output becomes a hidden input)."""
    if cell_type != "code":
        return list(tags)
    if PARAMETER_TAGS & set(tags):
        return [t for t in tags if t != "hide-input"] + (
            [] if "remove-cell" in tags else ["remove-cell"]
        )
    if HIDDEN_OUTPUT_TAGS & set(tags):
        tags = [t for t in tags if t not in HIDDEN_OUTPUT_TAGS]
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


def skipped_chapter(src: Path, dest: Path, reason: str) -> None:
    """The page of a chapter whose stage did not run: its introduction, then why it did not."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    intro = next(c for c in nb.cells if c.cell_type == "markdown")
    note = (f"```{{note}}\nThis chapter's stage did not run, so it has no results here. "
            f"{reason[0].upper()}{reason[1:]}.\n\nThe organism presets (smoke, tiny, full, "
            "sweep) run it; chapter 07 lists the claims left without its measurements.\n```")
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    out.cells = [nbformat.v4.new_markdown_cell(intro.source, id="cell-0"),
                 nbformat.v4.new_markdown_cell(note, id="cell-1")]
    with atomic_path(dest) as tmp:
        nbformat.write(out, tmp)


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


def breakable(text: str) -> str:
    """HTML-escaped text in which long identifiers may wrap after a dot, underscore or slash."""
    return LONG_TOKEN.sub(
        lambda m: BREAK_AFTER.sub(r"\1<wbr>", m.group()), html.escape(text, quote=False)
    )


def _text_columns(df: pd.DataFrame) -> tuple[list, list]:
    """The columns holding only strings, and those of them that are prose (LONG_TEXT)."""
    import pandas as pd

    if not df.columns.is_unique:  # a label would name several columns: leave them as they are
        return [], []
    text = [c for c, col in df.items() if pd.api.types.infer_dtype(col, skipna=True) == "string"]
    prose = [c for c in text
             if df[c].dropna().map(lambda v: len(v) > LONG_TEXT and " " in v).any()]
    return text, prose


def show_table(df: pd.DataFrame, caption: str, precision: int | None = None) -> Styler:
    """A table without its index, every column whole, missing values as a dash, every cell
    and header escaped (a rule's `<claim arm>` is text, not a tag), prose at a reading width.

    `precision` digits after the point for floats (pandas' default when None).
    """
    # The table's HTML id from its caption, not at random: the same table is the same bytes.
    uuid = hashlib.sha256(caption.encode()).hexdigest()[:8]
    styler = df.style.hide(axis="index").set_caption(html.escape(caption)).set_uuid(uuid)
    styler = styler.format(na_rep=MISSING, precision=precision, escape="html")
    styler = styler.format_index(escape="html", axis=1)
    text, prose = _text_columns(df)
    if text:
        styler = styler.format(lambda v: breakable(str(v)), subset=text, na_rep=MISSING)
    if prose:
        width = [{"selector": "td", "props": f"min-width: {TEXT_MIN_WIDTH};"}]
        styler = styler.set_table_styles(dict.fromkeys(prose, width), overwrite=False)
    return styler.set_table_attributes('class="dataframe gravrev-table"')
