"""Glue for the book: every number a page states is pasted from an executed notebook."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """numpy scalars as Python ones, so myst-nb's format specs (`:.3f`) apply."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """myst_nb.glue, numpy-safe, hidden by default (the text pastes it where it is read)."""
    from myst_nb import glue as myst_glue

    myst_glue(name, plain(value), display=display)
    if not display and type(value).__name__ == "Figure":
        import matplotlib.pyplot as plt

        plt.close(value)  # shown once, where the page's glue:figure puts it, not also here
