"""Numbers in words and tables: rounded, never a negative zero ("-0.00")."""

from __future__ import annotations


def signed(x: float, digits: int) -> str:
    """x with its sign, rounded; a value that rounds to zero prints as +0.00."""
    return f"{round(x, digits) + 0.0:+.{digits}f}"


def fixed(x: float, digits: int) -> str:
    """x rounded, without a sign for positives; a value that rounds to zero prints as 0.00."""
    return f"{round(x, digits) + 0.0:.{digits}f}"
