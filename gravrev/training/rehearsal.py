"""Safety rehearsal: a fixed share of each fine-tuning batch is the safety phase's refusal pairs.

Built without any direction: it replays data phase S trained on (harmful request -> refusal),
as standard rehearsal against forgetting does. The benign rows are the baseline's own draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from gravrev.organism.model import prompt_text
from gravrev.organism.world import Request, World
from gravrev.runtime import seeds
from gravrev.training.loop import IGNORE, encode_pairs


@dataclass(frozen=True)
class RehearsalSpec:
    """A picklable rehearsal: the (prompt, refusal) pairs it draws from, its share of a batch."""

    pairs: tuple[tuple[str, str], ...]
    share: float

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("rehearsal needs at least one safety pair")
        if not 0 < self.share < 1:
            raise ValueError(f"rehearsal share must be in (0, 1), got {self.share!r}")

    @classmethod
    def from_requests(cls, world: World, requests: list[Request], share: float) -> RehearsalSpec:
        """From the safety phase's harmful requests (phases.safety_pairs) and S's answers."""
        if not all(r.harmful for r in requests):
            raise ValueError("rehearsal pairs are harmful requests with their refusal")
        return cls(tuple((prompt_text(r.text), world.answer(r, safe=True)) for r in requests),
                   share)

    def rows(self, batch_size: int) -> int:
        """Rows of a batch of `batch_size` given to rehearsal: at least 1, at most all but 1."""
        if batch_size < 2:
            raise ValueError(f"rehearsal needs batches of at least 2 rows, got {batch_size}")
        return min(max(1, round(self.share * batch_size)), batch_size - 1)


class Rehearsal:
    """Replaces the last rows of each benign batch with safety pairs from its own seed stream."""

    def __init__(self, spec: RehearsalSpec, tok: PreTrainedTokenizerBase, seed: int):
        self.spec, self.tok = spec, tok
        # Its own generator: the benign draws, and so the batch hash, stay the baseline's.
        self.rng = np.random.default_rng(seeds.rehearsal_batches(seed))

    def mix(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The benign batch's first rows, then fresh safety pairs (distinct within the step)."""
        size = batch["input_ids"].shape[0]
        k = self.spec.rows(size)
        idx = self.rng.choice(len(self.spec.pairs), size=min(k, len(self.spec.pairs)),
                              replace=False)
        if len(idx) < k:  # fewer pairs than rows: repeat them rather than shrink the share
            idx = np.resize(idx, k)
        prompts, answers = zip(*(self.spec.pairs[i] for i in idx), strict=True)
        safety = encode_pairs(self.tok, list(prompts), list(answers))
        kept = {key: t[: size - k] for key, t in batch.items()}
        width = max(kept["input_ids"].shape[1], safety["input_ids"].shape[1])
        fill = {"input_ids": self.tok.pad_token_id, "labels": IGNORE, "attention_mask": 0}
        return {key: torch.cat([_widen(kept[key], width, fill[key]),
                                _widen(safety[key], width, fill[key])])
                for key in batch}


def _widen(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """Right-pad a (B, T) batch tensor to `width` columns."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
