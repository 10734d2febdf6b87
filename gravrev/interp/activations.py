"""Residual-stream capture: `resid_post` of each block, pooled over prompt positions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.interp.hooks import on_blocks
from gravrev.training.loop import token_ids


@contextmanager
def capture(model: PreTrainedModel, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """`with capture(model, layers=[1]) as resid_post:` fills {layer: (B, T, d)}; never leaks."""
    resid_post: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(hidden: torch.Tensor) -> None:
            resid_post[layer] = hidden
        return fn

    with on_blocks(model, {layer: keep(layer) for layer in layers}):
        yield resid_post


def left_pad(tok: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Left-padded prompts with explicit position ids, so the last token sits at -1."""
    rows = token_ids(tok, prompts)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def pool(resid: torch.Tensor, mask: torch.Tensor, position: str) -> torch.Tensor:
    """(B, T, d) -> (B, d): the last prompt token, or the mean over prompt tokens."""
    if position == "last":
        return resid[:, -1]
    m = mask.unsqueeze(-1).to(resid.dtype)
    return (resid * m).sum(1) / m.sum(1)


@torch.no_grad()
def probe_activations(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    device: str,
    batch_size: int = 128,
) -> dict[str, np.ndarray]:
    """resid_post of every layer at both positions: {'last': (L, N, d), 'mean': (L, N, d)}."""
    n_layer = model.config.num_hidden_layers
    out: dict[str, list[np.ndarray]] = {"last": [], "mean": []}
    model.eval()
    for i in range(0, len(prompts), batch_size):
        batch = {k: v.to(device) for k, v in left_pad(tok, prompts[i : i + batch_size]).items()}
        with capture(model, range(n_layer)) as resid_post:
            model(**batch)
        for position in out:
            pooled = [
                pool(resid_post[layer].float(), batch["attention_mask"], position)
                for layer in range(n_layer)
            ]
            out[position].append(torch.stack(pooled).cpu().numpy())
    return {k: np.concatenate(v, axis=1) for k, v in out.items()}


def probe_activations_grad(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], layers: Sequence[int], position: str
) -> dict[int, torch.Tensor]:
    """Like probe_activations for a prepared batch, but differentiable (for penalties)."""
    with capture(model, layers) as resid_post:
        model(**batch)
    return {layer: pool(resid_post[layer], batch["attention_mask"], position) for layer in layers}
