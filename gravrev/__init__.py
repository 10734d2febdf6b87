"""gravrev: fine-tuning reversion along a history-defined direction, on a model organism."""

__version__ = "0.1.0"
