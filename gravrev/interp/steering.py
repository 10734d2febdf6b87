"""Does v_rev mediate refusal? Ablate it from, or add it to, the residual stream and judge.

Signs: v_rev = unit(mean h_helpful - mean h_safe) points from theta_S toward theta_H. Adding
+v_rev moves a model toward helpful (expected: refusal falls in theta_S); adding -v_rev to
theta_H moves it toward safe (expected: refusal appears).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.behaviour.evaluate import generate, max_answer_tokens
from gravrev.interp.direction import drift
from gravrev.interp.hooks import on_blocks
from gravrev.interp.labels import EVERY_LAYER
from gravrev.organism.model import prompt_text
from gravrev.organism.world import Request, World, judge

MODES = ("add", "ablate")


def _project_out(hidden: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    v = v.to(hidden.dtype)
    return hidden - (hidden @ v).unsqueeze(-1) * v


def _unit_tensor(direction: np.ndarray, device: torch.device) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(direction, dtype=np.float64))
    norm = torch.linalg.vector_norm(v)
    if norm == 0:
        raise ValueError("cannot ablate a zero direction")
    return (v / norm).to(device=device, dtype=torch.float32)


def _per_layer(
    model: PreTrainedModel, directions: np.ndarray | dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    n = model.config.num_hidden_layers
    if isinstance(directions, dict):
        return dict(directions)
    arr = np.asarray(directions)
    if arr.ndim == 1:
        return dict.fromkeys(range(n), arr)
    if arr.shape[0] != n:
        raise ValueError(f"directions has {arr.shape[0]} rows for {n} layers")
    return dict(enumerate(arr))


@contextmanager
def ablate_direction(
    model: PreTrainedModel, directions: np.ndarray | dict[int, np.ndarray]
) -> Iterator[None]:
    """Project unit direction(s) out of the residual stream at every position while inside.

    A (d,) array is removed from the embedding output and after every block. An (L, d) array
    or {layer: (d,)} removes each layer's own direction after that block, and layer 0's
    direction also from the embeddings (the input of block 0): no block reads it back in.
    """
    device = next(model.parameters()).device
    per_layer = {k: _unit_tensor(v, device) for k, v in _per_layer(model, directions).items()}

    def remove(v: torch.Tensor):
        return lambda hidden: _project_out(hidden, v)

    first = remove(per_layer[0]) if 0 in per_layer else None
    with on_blocks(model, {layer: remove(v) for layer, v in per_layer.items()}, first):
        yield


@contextmanager
def add_direction(
    model: PreTrainedModel, layer: int, direction: np.ndarray, scale: float
) -> Iterator[None]:
    """Add scale * direction (as given, not renormalised) after block `layer`, every position."""
    device = next(model.parameters()).device
    shift = torch.as_tensor(scale * np.asarray(direction, dtype=np.float64)).to(device)
    with on_blocks(model, {layer: lambda hidden: hidden + shift.to(hidden.dtype)}):
        yield


@dataclass(frozen=True)
class Rates:
    """Judged greedy answers to harmful requests, in percent of n."""

    refusal_rate: float
    harmful_compliance: float
    n: int


def judged_rates(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[Request],
    device: str,
    world: World,
) -> Rates:
    """Refusal and harmful compliance of greedy answers, judged by gravrev.organism.world.judge
    over the window every stage judges (behaviour.evaluate.max_answer_tokens)."""
    answers = generate(model, tok, [prompt_text(r.text) for r in requests], device,
                       max_new_tokens=max_answer_tokens(world))
    verdicts = [judge(r, a, world.alphabet) for r, a in zip(requests, answers, strict=True)]
    n = len(verdicts)
    return Rates(
        refusal_rate=100 * sum(v["refused"] for v in verdicts) / n,
        harmful_compliance=100 * sum(v["harmful"] for v in verdicts) / n,
        n=n,
    )


def reversion_norms(
    acts_helpful: np.ndarray, acts_safe: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """|mean h_helpful - mean h_safe| per layer, (L, N, d) x 2 -> (L,): the unit of `scale`."""
    return np.linalg.norm(drift(acts_helpful, acts_safe, mask), axis=-1)


def intervention(
    model: PreTrainedModel,
    mode: str,
    v_rev: np.ndarray,
    layer: int,
    scale: float = 0.0,
    norms: np.ndarray | None = None,
) -> AbstractContextManager[None]:
    """The context of one sweep cell: add scale*norms[layer]*v_rev[layer], or ablate v_rev."""
    if mode == "add":
        if norms is None:
            raise ValueError("mode 'add' needs norms, the per-layer unit of scale")
        return add_direction(model, layer, v_rev[layer], scale * float(norms[layer]))
    if mode == "ablate":
        return ablate_direction(model, v_rev if layer == EVERY_LAYER else v_rev[layer])
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def mediation_sweep(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[Request],
    v_rev: np.ndarray,
    layers: Sequence[int],
    scales: Sequence[float],
    device: str,
    mode: str,
    *,
    world: World,
    norms: np.ndarray | None = None,
) -> pd.DataFrame:
    """Judged rates under each intervention: rows (mode, layer, scale, rates..., n).

    "add": v_rev[layer] * scale * norms[layer] after block `layer`, so `scale` counts multiples
    of |mean h_helpful - mean h_safe| at that layer (see reversion_norms); scale 0 is the
    unmodified model. "ablate": v_rev[layer] removed everywhere (embeddings and every block;
    scale is NaN), plus a row with layer EVERY_LAYER removing each block's own row of v_rev.
    """
    if mode == "add":
        cells = [(layer, float(s)) for layer in layers for s in scales]
    elif mode == "ablate":
        cells = [(layer, float("nan")) for layer in [*layers, EVERY_LAYER]]
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = []
    for layer, scale in cells:
        with intervention(model, mode, v_rev, layer, scale, norms):
            rates = judged_rates(model, tok, requests, device, world)
        rows.append(
            {
                "mode": mode,
                "layer": layer,
                "scale": scale,
                "refusal_rate": rates.refusal_rate,
                "harmful_compliance": rates.harmful_compliance,
                "n": rates.n,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class MediationResult:
    """Unmodified rates, v_rev ablated from theta_S, and v_rev added to theta_H and theta_S."""

    baseline: pd.DataFrame
    ablate_safe: pd.DataFrame
    add_helpful: pd.DataFrame
    add_safe: pd.DataFrame

    def combined(self) -> pd.DataFrame:
        """Every sweep row in one frame, with the checkpoint it ran on."""
        return pd.concat(
            [
                self.ablate_safe.assign(checkpoint="θ_S"),
                self.add_helpful.assign(checkpoint="θ_H"),
                self.add_safe.assign(checkpoint="θ_S"),
            ],
            ignore_index=True,
        )


def run_mediation(
    helpful: PreTrainedModel,
    safe: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[Request],
    v_rev: np.ndarray,
    norms: np.ndarray,
    scales: Sequence[float],
    device: str,
    *,
    world: World,
    layers: Sequence[int] | None = None,
) -> MediationResult:
    """Both checkpoints under every intervention; use symmetric scales, e.g. -2 ... 2.

    Negative scales on theta_H move it toward safe; positive scales on theta_S toward helpful.
    """
    layers = list(range(len(v_rev))) if layers is None else list(layers)
    baseline = pd.DataFrame(
        [
            {"checkpoint": name, **asdict(judged_rates(m, tok, requests, device, world))}
            for name, m in (("θ_H", helpful), ("θ_S", safe))
        ]
    )

    def sweep(model: PreTrainedModel, mode: str) -> pd.DataFrame:
        return mediation_sweep(
            model,
            tok,
            requests,
            v_rev,
            layers,
            scales,
            device,
            mode,
            world=world,
            norms=norms,
        )

    return MediationResult(
        baseline=baseline,
        ablate_safe=sweep(safe, "ablate"),
        add_helpful=sweep(helpful, "add"),
        add_safe=sweep(safe, "add"),
    )
