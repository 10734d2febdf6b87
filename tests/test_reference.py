"""The committed reference run agrees with the presets that claim to follow from it."""

from __future__ import annotations

import json
from pathlib import Path

from gravrev.config.load import resolve

ROOT = Path(__file__).resolve().parents[1]


def test_the_reference_search_chose_no_other_regime_than_the_one_in_force():
    """The committed search ran the tiny regime, and chose either it or nothing (the
    confirmation over every history may choose nothing; chapter 02 then says so)."""
    search = json.loads((ROOT / "data/metrics/finetune.json").read_text())["search"]
    fc = resolve({"preset": "tiny"}).finetune
    in_force = {"lr": fc.lr, "warmup": fc.warmup, "share": fc.new_task_fraction, "T": fc.steps}
    assert search["in_force"] == in_force
    assert search["choice"] in (in_force, None)
    assert search["in_force_is_choice"] is (None if search["choice"] is None else True)


def test_the_reference_ran_the_default_histories():
    history = json.loads((ROOT / "data/metrics/finetune.json").read_text())["histories"]
    # the JSON's keys are sorted as text (h10 before h2): compare the sets
    assert sorted(history) == sorted(resolve({"preset": "tiny"}).histories)
