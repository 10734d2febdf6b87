"""The book's presentation: cell tags, the figure style, tables, figures at column width, the
table of contents, how the book is served, and the browser test's reading checks on small
hand-made pages (those need Chromium and skip without it)."""

import io
import json
import re
import shutil
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest
import test_browser as reader  # the book reader's checks, tried here on hand-made pages

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
        ("code", ["hide-output"], ["hide-input"]),  # "Parameters in force": shown
        ("code", ["hide-output", "output_scroll"], ["output_scroll", "hide-input"]),
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


def test_show_table_escapes_every_cell_and_lets_long_identifiers_wrap():
    rule = "gravrev.stages.blocking.run (arms.<claim arm>.per_run.alignment)"
    df = pd.DataFrame({"claim <id>": ["final_alignment_blocked"], "source": [rule], "n": [3]})
    html = show_table(df, "Rules & sources").to_html()
    assert "<claim arm>" not in html and "&lt;claim arm&gt;" in html
    assert "claim &lt;id&gt;" in html and "Rules &amp; sources" in html
    assert "final_<wbr>alignment_<wbr>blocked" in html
    assert re.sub(r"<wbr>", "", html).count("per_run.alignment") == 1  # the text itself intact


def test_show_table_gives_prose_columns_a_reading_width():
    df = pd.DataFrame({"claim": ["a", "b"], "why": ["a reason long enough to be read as prose " * 2,
                                                   None], "value": [0.5, 1.5]})
    html = show_table(df, "Why").to_html()
    assert re.search(r"td\.col1 \{\s*min-width: 16em;", html)
    assert "col0 {" not in html and "col2 {" not in html  # short text and numbers as they were
    assert html.count(MISSING) == 1


@pytest.mark.parametrize(("n", "shape"), [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)),
                                          (5, (2, 3)), (6, (2, 3)), (8, (3, 3))])
def test_panel_grid_puts_more_than_three_panels_on_two_rows(n, shape):
    import matplotlib.pyplot as plt

    from gravrev.report.figures import MAX_ASPECT, panel_grid

    fig, axes = panel_grid(n)
    assert len(axes) == len(fig.axes) == n  # the spare cells are gone
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == shape
    width, height = fig.get_size_inches()
    assert width / height <= MAX_ASPECT
    plt.close(fig)


# The text column of a chapter at 1280 px (sphinx-book-theme, measured): a figure of aspect at
# most COLUMN_PX / MIN_IMAGE_HEIGHT is shown at least MIN_IMAGE_HEIGHT px tall.
COLUMN_PX = 660
ROOT = Path(__file__).resolve().parents[1]


def shared_figures() -> dict:
    """Every figure of gravrev.report.figures on small made-up data."""
    from gravrev.report import figures as plots

    rng = np.random.default_rng(0)
    steps = [0, 1, 2, 5, 10]
    curves = pd.DataFrame([(ph, h, s, float(np.exp(-s / 50) + 0.1)) for ph in "PHS"
                           for h in ("h0", "h1") for s in range(60)],
                          columns=["phase", "history", "step", "loss"])
    measures = ("refusal_rate", "harmful_compliance", "prefilled_content", "benign_accuracy")
    log = pd.DataFrame([(h, seed, st, *rng.uniform(0, 100, 4)) for h in ("h0", "h1")
                        for seed in (0, 1) for st in steps],
                       columns=["history", "seed", "step", *measures])
    sens = pd.DataFrame([(o, lr, b, st, float(rng.uniform(-1, 1))) for o in ("adam", "sgd")
                         for lr in (1e-3, 1e-2) for b in (8, 32) for st in (1, 2, 5)],
                        columns=["optimizer", "lr", "batch_size", "step", "alignment"])
    checks = pd.DataFrame([(h, f"check {i}", float(rng.normal(0, 10))) for h in ("h0", "h1")
                           for i in range(4)], columns=["history", "check", "margin"])
    ids = ["alignment_step1", "final_alignment_unblocked", "harmfulness_unblocked"]
    claims = pd.DataFrame({"id": ids, "unit": ["cosine", "cosine", "percent"],
                           "paper_mean": [0.2, 0.5, 80.0], "paper_sd": [0.1, np.nan, 5],
                           "mean": [0.1, 0.9, 100.0], "ci_low": [-1.2, 0.8, 100.0],
                           "ci_high": [1.4, 1.0, 100.0],
                           "direction": ["does not hold", "holds", "holds"],
                           "size": ["holds", "does not hold", "not comparable"]})
    histories = [f"h{i}" for i in range(8)]
    aligned = pd.DataFrame([(h, seed, st, float(rng.uniform(-1, 1)), *rng.uniform(0, 100, 2))
                            for h in histories for seed in (0, 1) for st in (1, 2, 5, 10, 20)],
                           columns=["history", "seed", "step", "alignment", "non_refusal",
                                    "harmful_compliance"])
    early = pd.DataFrame({"arm": "early", "history": ["h0"] * 6 + ["h1"] * 6,
                          "step": [1, 1, 1, 2, 2, 2] * 2, "alignment": np.linspace(0, 1, 12)})
    main = pd.DataFrame([(seed, st, float(rng.uniform(-1, 1))) for seed in range(3)
                         for st in (1, 2, 5, 10)], columns=["seed", "step", "alignment"])
    grid = pd.DataFrame(rng.uniform(-1, 1, (2, 3)), columns=["first", "mean", "last"])
    return {
        "training_curves": plots.training_curves(curves),
        "refusal_trajectories": plots.refusal_trajectories(log, measures),
        "sensitivity": plots.sensitivity(sens, 1e-3, "adam"),
        "shape_margins": plots.shape_margins(checks),
        "paper_vs_measured": plots.paper_vs_measured(claims),
        "alignment_and_refusal": plots.alignment_and_refusal(aligned),
        "alignment_and_refusal_3": plots.alignment_and_refusal(
            aligned[aligned["history"].isin(histories[:3])]),
        "early_alignment": plots.early_alignment(early),
        "alignment_trajectory": plots.alignment_trajectory(main, {"isotropic p99": 0.3}),
        "layer_position_heatmap": plots.layer_position_heatmap(grid, "grid"),
        "null_histograms": plots.null_histograms({"isotropic": rng.normal(0, 0.2, 500)},
                                                 rng.uniform(-1, 1, 10)),
    }


def test_every_shared_figure_is_readable_at_column_width():
    import matplotlib.pyplot as plt
    from PIL import Image

    with matplotlib.rc_context():
        set_figure_style()
        figures = shared_figures()
    wide = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")  # as the book's glue saves it: bbox tight
        plt.close(fig)
        width, height = Image.open(buf).size
        if COLUMN_PX * height / width < reader.MIN_IMAGE_HEIGHT:
            wide[name] = f"{width}x{height}: {COLUMN_PX * height / width:.0f} px tall"
    assert not wide, wide


# ----------------------------------------------------------------------------- the book's order


def page_title(book: Path, file: str) -> str:
    """The first level-1 heading of a book page (markdown) or chapter (its notebook)."""
    path = book / f"{file}.md"
    if path.is_file():
        text = path.read_text()
    else:
        nb = json.loads((book.parent / "notebooks" / f"{Path(file).name}.ipynb").read_text())
        text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return next(line[2:].strip() for line in text.splitlines() if line.startswith("# "))


def toc_files(entries: list[dict]) -> list[str]:
    """The pages of a _toc.yml list in reading order, each page before its sections."""
    return [f for e in entries
            for f in [e["file"], *toc_files(e.get("sections", []))]]


def test_chapter_numbers_run_in_order_and_provenance_comes_last(repo_root):
    import yaml

    book = repo_root / "book"
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    files = toc_files([c for part in toc["parts"] for c in part["chapters"]])
    numbers = [int(m.group(1)) for f in files
               if (m := re.match(r"(\d+) ·", page_title(book, f)))]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    assert files[-1] == "executed/09_provenance"
    assert files.index("executed/10_budget") == files.index("own_model") + 1


# ----------------------------------------------------------------------------- serving the book


def test_make_all_ends_by_printing_how_to_serve_the_book(repo_root):
    makefile = (repo_root / "Makefile").read_text()
    recipe = re.search(r"(?m)^all:.*\n((?:\t.*\n)+)", makefile).group(1).splitlines()
    command = "python -m http.server -d book/_build/html 8000"
    assert recipe[-1].lstrip("\t@").startswith("echo") and command in recipe[-1]
    assert f".venv/bin/{command}" in (repo_root / "book" / "reproduce.md").read_text()
    assert reader.serve_command() == ["-m", "http.server", "-d"]


# ----------------------------------------------------------------------------- the reader's checks


def test_text_faults_quote_each_fault_once_with_its_sentence():
    text = ("Refusal fell. The mean is nan here, and nan again.\n"
            "Range 0-0% over runs. A change of -0.00 points. Not -0.004, nor 10-0%.")
    found = reader.text_faults(text, reader.BAD_TEXT)
    assert found == [
        "'nan' in: The mean is nan here, and nan again.",
        "'0-0%' in: Range 0-0% over runs.",
        "'-0.00' in: A change of -0.00 points.",
    ]
    assert reader.text_faults("theta_S and θ_S.", reader.BAD_PROSE) == [
        "'theta_' in: theta_S and θ_S."]


def test_shared_reasons_names_the_claims_that_share_one():
    rows = [["a", "x"], ["b", "x"], ["c", "y"], ["a", "x"], ["d", ""]]
    assert reader.shared_reasons(rows, 1) == {"x": ["a", "b"]}


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def figure_png(path: Path, size: tuple[float, float]) -> str:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, dpi=100)
    fig.savefig(path)
    plt.close(fig)
    return path.name


HEAD = '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
HAND_MADE = HEAD + """<title>t</title>
<style>main {{ width: 660px; }} img {{ max-width: 100%; }}</style></head><body><main>
<p>Refusal falls from 90% at theta_S to 0% (range 0-0%), a change of -0.00 points.</p>
<p>A glued <span class="pasted-text" style="font-weight: bold">42</span> in bold.</p>
<p>In code, <code>theta_S</code> and <code>nan</code> are quoted, not printed.</p>
<div class="highlight-python"><pre>x = float("nan")  # theta_S</pre></div>
<div class="output stream highlight-myst-ansi"><div class="highlight"><pre>mean nan</pre>
</div></div>
<figure><img src="{tall}"><figcaption><p>Fig. 1 A tall figure.</p></figcaption></figure>
<figure><img src="{short}"><figcaption><p>Fig. 2 A strip.</p></figcaption></figure>
<img src="{tall}">
{rules}
<table><thead><tr><th>claim</th><th>why</th></tr></thead><tbody>
<tr><td>a</td><td>the same reason</td></tr><tr><td>b</td><td>the same reason</td></tr>
<tr><td>c</td><td>NaN</td></tr></tbody></table>
</main></body></html>"""
CLEAN = HEAD + """<title>t</title>
<style>span.pasted-text {{ font-weight: bold; }}</style><link rel="stylesheet" href="{css}">
</head><body><main>
<p>Refusal falls from 90% at θ_S to <span class="pasted-text">0%</span> (range 0–5%).</p>
<p><strong>Bold <span class="pasted-text">7</span></strong>, quoted: <code>theta_S</code>.</p>
<figure><img src="{tall}"><figcaption><p>Fig. 1 A tall figure.</p></figcaption></figure>
</main></body></html>"""


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory) -> Path:
    """Two small pages in a folder: one with every fault the reader looks for, one clean."""
    root = tmp_path_factory.mktemp("hand_made")
    tall = figure_png(root / "tall.png", (6, 4))  # 600x400: 400 px tall at 660 px
    short = figure_png(root / "short.png", (10, 1))  # 1000x100: 66 px tall at 660 px
    rules = pd.DataFrame({"claim": ["final_alignment_blocked"],
                          "source": ["gravrev.stages.blocking.run (arms.<claim arm>.per_run)"]})
    rules_html = show_table(rules, "Rules and sources").to_html()
    (root / "faults.html").write_text(HAND_MADE.format(tall=tall, short=short, rules=rules_html))
    # myst-nb's rule sets glued text bold (above); the book's stylesheet must undo it
    shutil.copy(ROOT / "book" / "_static" / "gravrev.css", root / "gravrev.css")
    (root / "clean.html").write_text(CLEAN.format(tall=tall, css="gravrev.css"))
    return root


@pytest.fixture(scope="module")
def chromium():
    yield from reader.chromium()


@pytest.fixture(scope="module")
def hand_made_url(hand_made) -> str:
    yield from reader.serve(hand_made)


@pytest.mark.slow
def test_the_reader_finds_every_fault_on_a_hand_made_page(chromium, hand_made, hand_made_url):
    shots = hand_made / "screenshots"
    faults = reader.visit(chromium, f"{hand_made_url}/faults.html", "faults.html", shots)
    assert not faults.broken_images and not faults.severe_logs
    bad = faults.bad_text()
    for word in ("'theta_' in: Refusal falls", "'0-0%'", "'-0.00'", "'nan' in: mean nan",
                 "'NaN'"):
        assert any(item.startswith(word) for item in bad), (word, bad)
    assert not any("quoted" in item or "float" in item for item in bad), bad  # code is quoted
    assert [s.split(" is ")[0] for s in faults.short_images()] == ["short.png (Fig. 2 A strip.)"]
    assert faults.uncaptioned() == ["tall.png: in no figure"]
    assert faults.bold_glue == ["42"]
    assert "arms.<claim arm>.per_run" in faults.text  # escaped, and the breaks invisible
    chromium.get(f"{hand_made_url}/faults.html")
    headers, rows = reader.table_with_column(chromium, "why")
    assert reader.shared_reasons(rows, headers.index("why")) == {"the same reason": ["a", "b"]}
    assert [png_width(p) for p in faults.screenshots] == list(reader.WIDTHS)


@pytest.mark.slow
def test_the_reader_finds_nothing_on_a_clean_page(chromium, hand_made, hand_made_url):
    clean = reader.visit(chromium, f"{hand_made_url}/clean.html", "clean.html",
                         hand_made / "screenshots")
    assert clean.n_images == 1
    assert not (clean.bad_text() or clean.short_images() or clean.uncaptioned()
                or clean.bold_glue or clean.severe_logs or clean.broken_images)
