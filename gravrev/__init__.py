"""gravrev: fine-tuning reversion along a history-defined direction, on a model organism."""

import os

# Weights, tokenizers and judges load from local folders only: Hugging Face reads these once,
# at its first import, so they are set here, before any module of gravrev imports it.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
os.environ.update(OFFLINE)

from gravrev.runtime.numerics import SWITCH, apply_pins  # noqa: E402 (after the switches)

# Before anything imports torch: the pins only act if set before torch's first operation.
apply_pins(os.environ.get(SWITCH, "1") != "0")

__version__ = "0.1.0"
