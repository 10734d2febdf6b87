"""The book's presentation: cell tags, the figure style, tables and the inline-script fix."""

import re

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

from gravrev.report.publish import (
    FIGURE_DPI,
    MISSING,
    presentation_tags,
    set_figure_style,
    show_table,
    tidy_executed,
)
from gravrev.report.sphinx_assets import unique_scripts


@pytest.mark.parametrize(
    ("cell_type", "tags", "expected"),
    [
        ("code", [], ["hide-input"]),
        ("code", ["parameters"], ["parameters", "remove-cell"]),
        ("code", ["injected-parameters"], ["injected-parameters", "remove-cell"]),
        ("code", ["parameters", "hide-input"], ["parameters", "remove-cell"]),
        ("code", ["remove-input"], ["remove-input"]),
        ("code", ["output_scroll"], ["output_scroll", "hide-input"]),
        ("markdown", [], []),
    ],
)
def test_presentation_tags(cell_type, tags, expected):
    assert presentation_tags(cell_type, tags) == expected
    assert presentation_tags(cell_type, expected) == expected  # idempotent


def test_tidy_executed_rewrites_tags_keeps_outputs_and_is_idempotent(tmp_path):
    params = nbformat.v4.new_code_cell('params_path = "params.yaml"')
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('params_path = "other.yaml"')
    injected.metadata["tags"] = ["injected-parameters"]
    work = nbformat.v4.new_code_cell("1 + 1", execution_count=1)
    work.outputs = [
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)
    ]
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Title"), params, injected, work]
    )
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)

    tidy_executed(path)
    cells = nbformat.read(path, as_version=4).cells
    assert [c.metadata.get("tags", []) for c in cells] == [
        [],
        ["parameters", "remove-cell"],
        ["injected-parameters", "remove-cell"],
        ["hide-input"],
    ]
    assert cells[3].outputs[0]["data"]["text/plain"] == "2"
    once = path.read_bytes()
    tidy_executed(path)
    assert path.read_bytes() == once
    assert [p.name for p in tmp_path.iterdir()] == ["executed.ipynb"]  # no temporaries left


def test_show_table_hides_the_index_keeps_long_cells_and_dashes_missing_values():
    long = "a cell long enough that pandas' own repr would cut it short " * 4
    df = pd.DataFrame({"claim": ["x", "y"], "why": [long, None], "value": [0.5, np.nan]})
    df.index = [101, 202]
    html = show_table(df, "Claims").to_html()
    assert ">101<" not in html and ">202<" not in html
    assert long.strip() in html
    assert "Claims" in html
    assert html.count(MISSING) == 2
    assert not re.search(r"\b(?:nan|None)\b", html)
    assert "0.500000" in html
    assert "0.50<" in show_table(df, "Claims", precision=2).to_html()


def test_set_figure_style_sets_the_dpi_and_the_grid():
    import matplotlib.pyplot as plt

    with matplotlib.rc_context():
        set_figure_style()
        fig = plt.figure(figsize=(2, 1))
        assert fig.dpi == FIGURE_DPI
        assert plt.rcParams["savefig.dpi"] == FIGURE_DPI
        assert plt.rcParams["axes.grid"] is True  # seaborn's whitegrid
        plt.close(fig)


def test_unique_scripts_drops_an_inline_script_registered_twice():
    from sphinx.builders.html._assets import _JavaScript

    thebe = "const THEBE_JS_URL = 'x'"
    scripts = [
        _JavaScript("_static/a.js"),
        _JavaScript(None, body=thebe),
        _JavaScript("_static/b.js"),
        _JavaScript("", body=thebe),  # Sphinx 7.4's second copy of the same script
        _JavaScript("", body="let other = 1"),
        _JavaScript("_static/a.js", priority=900),  # another priority: a different asset
    ]
    kept = unique_scripts(scripts)
    assert kept == [scripts[0], scripts[1], scripts[2], scripts[4], scripts[5]]


def test_tidy_executed_drops_what_changes_from_run_to_run(tmp_path):
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=1)
    cell.metadata["execution"] = {"iopub.execute_input": "2026-11-23T18:00:37Z"}
    cell.metadata["papermill"] = {"start_time": "2026-11-23T18:00:37", "duration": 0.1}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="/home/me/.venv/tqdm: a warning"),
        nbformat.v4.new_output("stream", name="stdout", text="kept"),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["papermill"] = {"start_time": "x", "end_time": "y", "duration": 1.0,
                                "input_path": "/tmp/a", "output_path": "/tmp/b",
                                "parameters": {"params_path": "params.yaml"}}
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)
    tidy_executed(path)
    out = nbformat.read(path, as_version=4)
    assert out.metadata["papermill"] == {"parameters": {"params_path": "params.yaml"}}
    (c,) = out.cells
    assert c.id == "cell-0" and "execution" not in c.metadata and "papermill" not in c.metadata
    assert [o["text"] for o in c.outputs] == ["kept"]


def test_the_same_table_is_the_same_html():
    df = pd.DataFrame({"claim": ["a"], "value": [0.5]})
    assert show_table(df, "Claims").to_html() == show_table(df, "Claims").to_html()


def test_the_early_alignment_figure_is_the_same_picture_every_time():
    import io

    from gravrev.report import figures as plots

    early = pd.DataFrame({"arm": "early", "history": ["h0"] * 6 + ["h1"] * 6,
                          "step": [1, 1, 1, 2, 2, 2] * 2, "alignment": np.linspace(0, 1, 12)})
    pngs = []
    for _ in range(2):
        buf = io.BytesIO()
        plots.early_alignment(early).savefig(buf, format="png")
        pngs.append(buf.getvalue())
    assert pngs[0] == pngs[1]
