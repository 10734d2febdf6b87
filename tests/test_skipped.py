"""A stage that does not apply to a setting leaves a record that says why, read as not run."""

from __future__ import annotations

import dataclasses
import json

import nbformat

from gravrev.config.load import resolve
from gravrev.report.publish import skipped_chapter
from gravrev.stages.skipped import NOT_FOR_HF, ran, skip_reason, skipped_metrics, write_skipped
from gravrev.store.paths import Paths


def test_only_hf_skips_and_only_the_stages_it_cannot_run():
    smoke = resolve({"preset": "smoke"})
    hf = dataclasses.replace(smoke, preset="hf")
    assert all(skip_reason(smoke, s) is None for s in ("mediation", "sweep", "finetune"))
    assert skip_reason(hf, "finetune") is None
    assert set(NOT_FOR_HF) == {"mediation", "sweep"}
    assert skip_reason(hf, "sweep").startswith("preset hf: it trains new histories")


def test_the_record_reaches_the_metrics_and_reads_as_not_run(tmp_path):
    cfg = dataclasses.replace(resolve({"preset": "smoke"}), preset="hf")
    paths = Paths(tmp_path)
    write_skipped(cfg, paths, "sweep")
    skipped_metrics(cfg, paths, "sweep", paths.data / "measures" / "sweep")
    record = json.loads(paths.metrics_file("sweep").read_text())
    assert record == {"preset": "hf", "skipped": skip_reason(cfg, "sweep")}
    assert json.loads((paths.data / "measures" / "sweep" / "skipped.json").read_text()) == record
    assert not ran(record) and ran({"preset": "hf", "outcome": "supported"})


def test_a_skipped_chapter_keeps_its_introduction_and_says_why(repo_root, tmp_path):
    dest = tmp_path / "06_mediation.ipynb"
    skipped_chapter(repo_root / "notebooks" / "06_mediation.ipynb", dest, "preset hf: because")
    nb = nbformat.read(dest, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown"]
    assert nb.cells[0].source.startswith("# 06 · ")
    assert "did not run" in nb.cells[1].source and "Preset hf: because." in nb.cells[1].source
