"""Stage 05: block motion along v_rev during benign fine-tuning, with specificity controls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.activations import blocks, left_pad, probe_activations_grad
from gravrev.nulls import covariance_direction, random_direction


class NoBlock:
    """Ordinary fine-tuning."""

    name = "unblocked"

    def prepare(self, model: PreTrainedModel) -> None:
        pass

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor | None:
        return None

    @contextmanager
    def hooks(self, model: PreTrainedModel) -> Iterator[None]:
        yield


class Penalty(NoBlock):
    """lambda * (projection of the probe activations' mean drift onto a direction)^2, per layer.

    The drift is taken against theta_S: at prepare time the model *is* theta_S, so its
    projection is a constant and no frozen copy needs a forward pass each step.
    """

    def __init__(
        self,
        name: str,
        directions: dict[int, np.ndarray],
        lam: float,
        tok: PreTrainedTokenizerBase,
        prompts: list[str],
        position: str,
        device: str,
    ):
        self.name, self.lam, self.position = name, lam, position
        self.directions = {
            layer: torch.tensor(v, dtype=torch.float32, device=device)
            for layer, v in directions.items()
        }
        self.batch = {k: v.to(device) for k, v in left_pad(tok, prompts).items()}
        self.reference: dict[int, float] = {}

    def _projections(self, model: PreTrainedModel) -> dict[int, torch.Tensor]:
        pooled = probe_activations_grad(model, self.batch, list(self.directions), self.position)
        return {layer: pooled[layer].float().mean(0) @ v for layer, v in self.directions.items()}

    def prepare(self, model: PreTrainedModel) -> None:
        with torch.no_grad():
            self.reference = {k: float(v) for k, v in self._projections(model).items()}

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor:
        proj = self._projections(model)
        return self.lam * sum((proj[k] - self.reference[k]) ** 2 for k in proj)


class GradProject(NoBlock):
    """Remove the v_rev component of the gradient flowing back through the residual stream."""

    def __init__(self, layer: int, direction: np.ndarray):
        self.name, self.layer = "grad_project", layer
        self.v = torch.tensor(direction, dtype=torch.float32)

    @contextmanager
    def hooks(self, model: PreTrainedModel) -> Iterator[None]:
        v = self.v.to(next(model.parameters()).device)

        def project(grad: torch.Tensor) -> torch.Tensor:
            return grad - (grad @ v.to(grad.dtype)).unsqueeze(-1) * v.to(grad.dtype)

        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.requires_grad:
                hidden.register_hook(project)

        handle = blocks(model)[self.layer].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


class Freeze(NoBlock):
    """No direction at all: embeddings, unembedding and final norm frozen (a control)."""

    name = "freeze"

    def prepare(self, model: PreTrainedModel) -> None:
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


def make_intervention(
    arm: str, cfg, v_rev: np.ndarray, cov: np.ndarray, tok, prompts: list[str], device: str
) -> NoBlock:
    """The intervention of one arm; v_rev is (L, d) at the analysed position, cov is (d, d)."""
    layer, lam, pos = cfg.layer, cfg.blocking.penalty_lambda, cfg.analysis.position
    rng = np.random.default_rng(cfg.history.seed + 7)  # one control direction for every seed
    if arm == "penalty":
        return Penalty(arm, {layer: v_rev[layer]}, lam, tok, prompts, pos, device)
    if arm == "penalty_all":
        return Penalty(arm, dict(enumerate(v_rev)), lam, tok, prompts, pos, device)
    if arm == "grad_project":
        return GradProject(layer, v_rev[layer])
    if arm == "random_penalty":
        return Penalty(
            arm, {layer: random_direction(v_rev.shape[1], rng)}, lam, tok, prompts, pos, device
        )
    if arm == "covariance_penalty":
        direction = covariance_direction(cov, rng, orthogonal_to=v_rev[layer])
        return Penalty(arm, {layer: direction}, lam, tok, prompts, pos, device)
    if arm == "freeze":
        return Freeze()
    raise ValueError(f"blocking.arms: unknown arm {arm!r}")
