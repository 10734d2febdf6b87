"""A direction read through the vocabulary at theta_S: the logit lens and the steered first token.

The pre-registered score is the mean logit change of the task-engaging first answer tokens
minus that of the refusal opening: > 0 means the direction favours engaging over refusing.
A difference of two means of logits, it ignores any shift shared by every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.interp.activations import left_pad
from gravrev.interp.steering import add_direction
from gravrev.organism.world import Request, World, refusal_answer
from gravrev.runtime import seeds
from gravrev.stats.nulls import random_direction
from gravrev.training.loop import token_ids


@dataclass(frozen=True)
class ReadoutTokens:
    """The first answer tokens the score compares: task-engaging openings and refusal openings."""

    engaging: tuple[int, ...]
    refusal: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.engaging or not self.refusal:
            raise ValueError("the readout needs engaging and refusal tokens")
        if set(self.engaging) & set(self.refusal):
            raise ValueError("a token cannot open both an engaging answer and a refusal")


@dataclass(frozen=True)
class NullRank:
    """A score beside the same score of n random unit directions."""

    score: float
    null_mean: float
    rank: int  # 1 + how many null scores exceed it: 1 is above every random direction
    n_null: int
    percentile: float  # percent of null scores strictly below it
    p_value: float  # one-sided, (1 + #null >= score) / (n + 1)


@dataclass(frozen=True)
class Readout:
    """One direction's readout: its logit lens, its steered logit change, and their scores."""

    lens: np.ndarray  # (V,) the direction through the final norm and the unembedding
    change: np.ndarray  # (V,) mean change of the first answer token's logits under +eps*v
    lens_rank: NullRank
    change_rank: NullRank


def first_tokens(tok: PreTrainedTokenizerBase, answers: Sequence[str]) -> tuple[int, ...]:
    """The distinct first token ids of some answers, sorted."""
    return tuple(sorted({ids[0] for ids in token_ids(tok, list(answers)) if ids}))


def world_tokens(world: World, tok: PreTrainedTokenizerBase,
                 requests: Sequence[Request]) -> ReadoutTokens:
    """From the world: the openings of its compliant answers to `requests`, and of its refusal."""
    engaging = first_tokens(tok, [world.answer(r, safe=False) for r in requests])
    return ReadoutTokens(engaging, first_tokens(tok, [refusal_answer()]))


def readout_score(logits: np.ndarray, tokens: ReadoutTokens) -> float:
    """Mean logit (change) of the engaging tokens minus that of the refusal tokens."""
    x = np.asarray(logits, dtype=np.float64)
    return float(x[list(tokens.engaging)].mean() - x[list(tokens.refusal)].mean())


def final_norm(model: PreTrainedModel) -> torch.nn.Module:
    """The norm before the unembedding (GPT-2's ln_f, Llama's norm)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("ln_f", "norm") and name.count(".") <= 1:
            return module
    raise ValueError(f"no final norm found in {type(model).__name__}")


@torch.no_grad()
def unembed_direction(model: PreTrainedModel, direction: np.ndarray) -> np.ndarray:
    """W_U (g * v), (d,) -> (V,): v centred for a LayerNorm, scaled by the norm's weight.

    The norm is linearised: its 1/std is one positive factor for every token, and its bias
    and the unembedding's bias do not depend on v, so neither changes which tokens v favours.
    """
    norm = final_norm(model)
    w_u = model.get_output_embeddings().weight
    v = torch.as_tensor(np.asarray(direction, dtype=np.float64)).to(w_u.device, torch.float64)
    if isinstance(norm, torch.nn.LayerNorm):
        v = v - v.mean()
    if getattr(norm, "weight", None) is not None:
        v = v * norm.weight.to(torch.float64)
    return (w_u.to(torch.float64) @ v).cpu().numpy()


@torch.no_grad()
def _first_token_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits[:, -1].double()  # (N, V): the prediction of answer token 1


def logit_change(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    layer: int,
    direction: np.ndarray,
    eps: float,
    device: str,
) -> np.ndarray:
    """Mean over prompts of the first answer token's logits with eps*unit(v) added after
    block `layer`, minus without: (V,)."""
    model.eval()
    batch = {k: t.to(device) for k, t in left_pad(tok, list(prompts)).items()}
    plain = _first_token_logits(model, batch)
    return _steered_change(model, batch, plain, layer, direction, eps)


def _steered_change(model: PreTrainedModel, batch: dict[str, torch.Tensor], plain: torch.Tensor,
                    layer: int, direction: np.ndarray, eps: float) -> np.ndarray:
    v = np.asarray(direction, dtype=np.float64)
    with add_direction(model, layer, v / np.linalg.norm(v), eps):
        steered = _first_token_logits(model, batch)
    return (steered - plain).mean(0).cpu().numpy()


def null_rank(score: float, null: np.ndarray) -> NullRank:
    """Where `score` falls among the null's scores."""
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 1 or null.size == 0:
        raise ValueError("the null needs at least one score")
    return NullRank(
        score=float(score),
        null_mean=float(null.mean()),
        rank=1 + int(np.count_nonzero(null > score)),
        n_null=int(null.size),
        percentile=float(100 * np.mean(null < score)),
        p_value=float((1 + np.count_nonzero(null >= score)) / (null.size + 1)),
    )


def vocabulary_readout(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    layer: int,
    direction: np.ndarray,
    eps: float,
    tokens: ReadoutTokens,
    n_null: int,
    history_seed: int,
    device: str,
) -> Readout:
    """The readout of unit(direction) at `layer` of theta_S (model), each score against n_null
    random unit directions of the history's readout stream (steered at the same eps)."""
    rng = np.random.default_rng(seeds.readout_directions(history_seed))
    null_dirs = [random_direction(len(direction), rng) for _ in range(n_null)]
    direction = np.asarray(direction, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)  # unit, as the null's directions are
    model.eval()
    batch = {k: t.to(device) for k, t in left_pad(tok, list(prompts)).items()}
    plain = _first_token_logits(model, batch)
    lens = unembed_direction(model, direction)
    change = _steered_change(model, batch, plain, layer, direction, eps)
    lens_null = [readout_score(unembed_direction(model, u), tokens) for u in null_dirs]
    change_null = [readout_score(_steered_change(model, batch, plain, layer, u, eps), tokens)
                   for u in null_dirs]
    return Readout(
        lens=lens,
        change=change,
        lens_rank=null_rank(readout_score(lens, tokens), np.array(lens_null)),
        change_rank=null_rank(readout_score(change, tokens), np.array(change_null)),
    )
