"""Blocking motion along a direction during fine-tuning: penalties, gradient projection, freeze."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.interp.activations import blocks, hidden_state, left_pad, probe_activations_grad
from gravrev.runtime import seeds

KINDS = ("none", "penalty", "mean_penalty", "grad_project", "freeze")


class Intervention(Protocol):
    """What fine-tuning asks of a block: prepare at theta_S, an extra loss, and hooks."""

    def prepare(self, model: PreTrainedModel, seed: int) -> None: ...

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor | None: ...

    def hooks(self, model: PreTrainedModel) -> AbstractContextManager: ...


@dataclass(frozen=True)
class BlockSpec:
    """A picklable description of one arm's block (built into an Intervention in the worker)."""

    kind: str  # none | penalty | mean_penalty | grad_project | freeze
    directions: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> unit (d,)
    lam: float = 0.0
    pool: tuple[str, ...] = ()  # harmful training-split prompts the penalty looks at
    batch: int = 0  # prompts drawn from the pool each step
    position: str = "last"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"block kind must be one of {KINDS}, got {self.kind!r}")


class NoBlock:
    """Ordinary fine-tuning."""

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        pass

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor | None:
        return None

    @contextmanager
    def hooks(self, model: PreTrainedModel) -> Iterator[None]:
        yield


class Penalty(NoBlock):
    """lambda * mean over a fresh minibatch of harmful prompts of (drift . v)^2, per layer.

    The drift of each prompt is taken against theta_S: at prepare time the model *is* theta_S,
    so each pool prompt's projection there is a constant, computed once. With `per_prompt`
    false, the minibatch's mean drift is projected instead (the older, weaker variant).
    """

    def __init__(self, spec: BlockSpec, tok: PreTrainedTokenizerBase, device: str,
                 per_prompt: bool = True):
        self.spec, self.per_prompt, self.device = spec, per_prompt, device
        self.v = {
            layer: torch.tensor(v, dtype=torch.float32, device=device)
            for layer, v in spec.directions.items()
        }
        self.pool = {k: t.to(device) for k, t in left_pad(tok, list(spec.pool)).items()}
        self.reference: dict[int, torch.Tensor] = {}
        self.rng: np.random.Generator | None = None

    def _projections(self, model: PreTrainedModel, idx: torch.Tensor | None) -> dict:
        batch = self.pool if idx is None else {k: t[idx] for k, t in self.pool.items()}
        pooled = probe_activations_grad(model, batch, list(self.v), self.spec.position)
        return {layer: pooled[layer].float() @ v for layer, v in self.v.items()}  # (B,)

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        # Its own generator: the benign batches stay those of the unblocked run of this seed.
        self.rng = np.random.default_rng(seeds.penalty_batches(seed))
        with torch.no_grad():
            self.reference = {k: v.detach() for k, v in self._projections(model, None).items()}

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor:
        n = len(self.spec.pool)
        idx = self.rng.choice(n, size=min(self.spec.batch, n), replace=False)
        idx = torch.as_tensor(idx, device=self.device)  # once a step, not once per tensor
        proj = self._projections(model, idx)
        total = torch.zeros((), device=self.device)
        for layer, p in proj.items():
            moved = p - self.reference[layer][idx]
            total = total + ((moved**2).mean() if self.per_prompt else moved.mean() ** 2)
        return self.spec.lam * total


class GradProject(NoBlock):
    """Remove the direction's component of the gradient flowing back through each layer."""

    def __init__(self, spec: BlockSpec):
        self.v = {layer: torch.tensor(v, dtype=torch.float32) for layer, v in
                  spec.directions.items()}

    @contextmanager
    def hooks(self, model: PreTrainedModel) -> Iterator[None]:
        device = next(model.parameters()).device
        handles = []
        for layer, v in self.v.items():
            v = v.to(device)

            def project(grad: torch.Tensor, v=v) -> torch.Tensor:
                u = v.to(grad.dtype)
                return grad - (grad @ u).unsqueeze(-1) * u

            def hook(_module, _inputs, output, project=project):
                hidden = hidden_state(output)
                if hidden.requires_grad:
                    hidden.register_hook(project)

            handles.append(blocks(model)[layer].register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


class Freeze(NoBlock):
    """No direction at all: embeddings, unembedding and final norm frozen (a control)."""

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        for module in frozen_modules(model):
            for p in module.parameters():
                p.requires_grad_(False)


def frozen_modules(model: PreTrainedModel) -> list[torch.nn.Module]:
    """Input and output embeddings, position embeddings and the final norm."""
    out = [model.get_input_embeddings(), model.get_output_embeddings()]
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("wpe", "ln_f", "norm") and name.count(".") <= 1:
            out.append(module)
    return [m for m in out if m is not None]


def make_intervention(spec: BlockSpec, tok: PreTrainedTokenizerBase, device: str) -> NoBlock:
    """The Intervention a BlockSpec describes."""
    if spec.kind == "penalty":
        return Penalty(spec, tok, device)
    if spec.kind == "mean_penalty":
        return Penalty(spec, tok, device, per_prompt=False)
    if spec.kind == "grad_project":
        return GradProject(spec)
    if spec.kind == "freeze":
        return Freeze()
    return NoBlock()
