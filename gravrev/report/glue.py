"""Glue for the book: every number a page states is pasted from an executed notebook."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

RENDERING = "GRAVREV_RENDERING"  # set while `gravrev notebook` executes a chapter for the book


@contextlib.contextmanager
def rendering() -> Iterator[None]:
    """Mark the chapters executed inside as renders for the book (their kernels inherit it)."""
    old = os.environ.get(RENDERING)
    os.environ[RENDERING] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(RENDERING, None)
        else:
            os.environ[RENDERING] = old


def is_rendering() -> bool:
    return os.environ.get(RENDERING) == "1"


def plain(value: Any) -> Any:
    """numpy scalars as Python ones, so myst-nb's format specs (`:.3f`) apply."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """myst_nb.glue, numpy-safe, hidden by default (the text pastes it where it is read).

    A figure is closed after gluing only in a render for the book, where the page's
    glue:figure shows it; opened in Jupyter, the chapter shows its figures where they are made.
    """
    from myst_nb import glue as myst_glue

    myst_glue(name, plain(value), display=display)
    if not display and type(value).__name__ == "Figure":
        if is_rendering():
            import matplotlib.pyplot as plt

            plt.close(value)  # shown once, where the page's glue:figure puts it, not also here
        else:
            from IPython.display import display as show

            show(value)
