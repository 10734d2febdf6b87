"""The committed reference run agrees with the presets that claim to follow from it."""

from __future__ import annotations

import json
from pathlib import Path

from gravrev.config.load import resolve

ROOT = Path(__file__).resolve().parents[1]


def test_the_main_regime_is_the_choice_the_reference_search_made():
    """presets.yaml says the tiny regime is the rule's choice: the committed search agrees."""
    search = json.loads((ROOT / "data/metrics/finetune.json").read_text())["search"]
    fc = resolve({"preset": "tiny"}).finetune
    assert search["in_force_is_choice"] is True
    assert search["choice"] == {"lr": fc.lr, "warmup": fc.warmup, "share": fc.new_task_fraction,
                                "T": fc.steps}


def test_the_reference_ran_the_default_histories():
    history = json.loads((ROOT / "data/metrics/finetune.json").read_text())["histories"]
    # the JSON's keys are sorted as text (h10 before h2): compare the sets
    assert sorted(history) == sorted(resolve({"preset": "tiny"}).histories)
