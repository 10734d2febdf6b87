"""Fine-tuning objectives beside the task loss: penalties along a direction, projection, freeze.

Along a direction v and against theta_S, per harmful pool prompt: `penalty` holds the
projection still (squared change), `block` opposes positive motion, `push` reinforces it
up to a bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.interp.activations import left_pad, probe_activations_grad
from gravrev.interp.hooks import on_blocks
from gravrev.runtime import seeds
from gravrev.training.loop import lm_loss

KINDS = ("none", "penalty", "mean_penalty", "grad_project", "freeze", "block", "push")
# The one-sided kinds: their reduction is signed (overshooting past 0 counts as more than 1).
SIGNED_KINDS = ("block", "push")


class Objective(Protocol):
    """A fine-tuning objective: prepared at theta_S, its task loss, an extra loss, hooks."""

    def prepare(self, model: PreTrainedModel, seed: int) -> None: ...

    def task_loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]
                  ) -> torch.Tensor: ...

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor | None: ...

    def hooks(self, model: PreTrainedModel) -> AbstractContextManager: ...


@dataclass(frozen=True)
class BlockSpec:
    """A picklable description of one arm's block (built into an Objective in the worker)."""

    kind: str  # none | penalty | mean_penalty | grad_project | freeze | block | push
    directions: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> unit (d,)
    lam: float = 0.0
    pool: tuple[str, ...] = ()  # harmful training-split prompts the penalty looks at
    batch: int = 0  # prompts drawn from the pool each step
    position: str = "last"
    targets: dict[int, float] = field(default_factory=dict)  # push only: layer -> bound > 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"block kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "push" and (
            set(self.targets) != set(self.directions)
            or not all(np.isfinite(t) and t > 0 for t in self.targets.values())
        ):
            raise ValueError("a push needs one finite target > 0 per layer of its directions")


class Baseline:
    """Ordinary fine-tuning."""

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        pass

    def task_loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lm_loss(model, batch)

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor | None:
        return None

    @contextmanager
    def hooks(self, model: PreTrainedModel) -> Iterator[None]:
        yield


class Penalty(Baseline):
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

    def moved(self, model: PreTrainedModel) -> dict[int, torch.Tensor]:
        """Each layer's projection change since theta_S, (B,), of this step's fresh minibatch."""
        n = len(self.spec.pool)
        idx = self.rng.choice(n, size=min(self.spec.batch, n), replace=False)
        idx = torch.as_tensor(idx, device=self.device)  # once a step, not once per tensor
        proj = self._projections(model, idx)
        return {layer: p - self.reference[layer][idx] for layer, p in proj.items()}

    def term(self, layer: int, moved: torch.Tensor) -> torch.Tensor:
        """One layer's share of the loss, before lambda: hold the projection still."""
        return (moved**2).mean() if self.per_prompt else moved.mean() ** 2

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for layer, moved in self.moved(model).items():
            total = total + self.term(layer, moved)
        return self.spec.lam * total


class Block(Penalty):
    """lambda * mean relu(delta proj), per layer: opposes positive motion only, never pulls back.

    Its gradient vanishes for a prompt at or below its theta_S projection, so it lowers the
    projection as far as theta_S and no further on its own (the task loss may push past it).
    """

    def term(self, layer: int, moved: torch.Tensor) -> torch.Tensor:
        return torch.relu(moved).mean()


class Push(Penalty):
    """lambda * mean relu(target - delta proj), per layer: reinforces positive motion, bounded.

    Stabilised by a bounded target: a plain reward for motion (-lambda * delta) has no minimum
    and would drive the projection off without end. Here a prompt that has moved `target`
    along the direction has loss and gradient exactly 0; below it the gradient on each
    projection is a constant lambda / batch, never growing with the distance. The stage sets
    the target to theta_H's displacement along v (push_targets): push as far as the helpful
    checkpoint, the state reversion returns to, and no further.
    """

    def term(self, layer: int, moved: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.spec.targets[layer] - moved).mean()


def push_targets(
    acts_helpful: dict[int, np.ndarray], acts_safe: dict[int, np.ndarray],
    directions: dict[int, np.ndarray],
) -> dict[int, float]:
    """Per layer, (mean h_H - mean h_S) . v: how far theta_H sits from theta_S along v.

    acts_*: {layer: (N, d)} pooled activations of the same prompts (e.g. the penalty pool).
    """
    out = {}
    for layer, v in directions.items():
        gap = (np.asarray(acts_helpful[layer], dtype=np.float64).mean(axis=0)
               - np.asarray(acts_safe[layer], dtype=np.float64).mean(axis=0))
        out[layer] = float(gap @ np.asarray(v, dtype=np.float64))
    if not all(t > 0 for t in out.values()):
        raise ValueError(f"θ_H does not sit on the positive side of every direction: {out}")
    return out


class GradProject(Baseline):
    """Remove the direction's component of the gradient flowing back through each layer."""

    def __init__(self, spec: BlockSpec):
        self.v = {layer: torch.tensor(v, dtype=torch.float32) for layer, v in
                  spec.directions.items()}

    @contextmanager
    def hooks(self, model: PreTrainedModel) -> Iterator[None]:
        device = next(model.parameters()).device

        def projecting(v: torch.Tensor):
            def project(grad: torch.Tensor) -> torch.Tensor:
                u = v.to(grad.dtype)
                return grad - (grad @ u).unsqueeze(-1) * u

            def fn(hidden: torch.Tensor) -> None:
                if hidden.requires_grad:
                    hidden.register_hook(project)
            return fn

        with on_blocks(model, {layer: projecting(v.to(device)) for layer, v in self.v.items()}):
            yield


class Freeze(Baseline):
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


def make_objective(spec: BlockSpec, tok: PreTrainedTokenizerBase, device: str) -> Baseline:
    """The Objective a BlockSpec describes."""
    if spec.kind == "penalty":
        return Penalty(spec, tok, device)
    if spec.kind == "mean_penalty":
        return Penalty(spec, tok, device, per_prompt=False)
    if spec.kind == "block":
        return Block(spec, tok, device)
    if spec.kind == "push":
        return Push(spec, tok, device)
    if spec.kind == "grad_project":
        return GradProject(spec)
    if spec.kind == "freeze":
        return Freeze()
    return Baseline()
