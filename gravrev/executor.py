"""Placeholder executor (in-process); replaced by the process-pool/Ray executor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def run_all(fn: Callable[[T], R], tasks: Sequence[T], cfg, desc: str) -> list[R]:
    return [fn(t) for t in tqdm(tasks, desc=desc)]
