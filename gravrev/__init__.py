"""gravrev: fine-tuning reversion along a history-defined direction, on a model organism."""

import os

from gravrev.runtime.numerics import SWITCH, apply_pins

# Before anything imports torch: the pins only act if set before torch's first operation.
apply_pins(os.environ.get(SWITCH, "1") != "0")

__version__ = "0.1.0"
