"""Defenses from the literature that never see an activation direction, as fine-tuning objectives.

constrained_sft (Qi et al. 2024): the task loss replaced by a token-wise constrained loss
against the frozen theta_S. proximal (Lisa's proximal term, no alternation): rho/2 ||w - w_S||^2.
weight_direction (AsFT-style): lambda/2 times the squared norm of the update's component
outside the span of W_S - W_H, one flattened direction per weight tensor.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from gravrev.config.defenses import BETA_FIRST, BETA_PREFIX, BETA_REST
from gravrev.training.loop import IGNORE, right_padded
from gravrev.training.objectives import Baseline

DEFENSE_KINDS = ("constrained_sft", "proximal", "weight_direction")


@dataclass(frozen=True)
class DefenseSpec:
    """A picklable defense: its kind, its strength (beta scale, rho or lambda), beta's prefix."""

    kind: str
    strength: float
    prefix: int = 5

    def __post_init__(self) -> None:
        if self.kind not in DEFENSE_KINDS:
            raise ValueError(f"defense kind must be one of {DEFENSE_KINDS}, got {self.kind!r}")
        if not self.strength > 0:
            raise ValueError(f"defense strength must be > 0, got {self.strength!r}")
        if self.prefix < 1:
            raise ValueError(f"defense prefix must be >= 1, got {self.prefix!r}")


def beta_schedule(position: torch.Tensor, scale: float, prefix: int) -> torch.Tensor:
    """beta per answer token (position 1 = the first): 0.5, then 2 up to `prefix`, then 0.1."""
    beta = torch.full(position.shape, BETA_REST, dtype=torch.float32, device=position.device)
    beta = torch.where(position <= prefix, torch.full_like(beta, BETA_PREFIX), beta)
    beta = torch.where(position == 1, torch.full_like(beta, BETA_FIRST), beta)
    return scale * beta


def constrained_token_loss(logp: torch.Tensor, logp_ref: torch.Tensor,
                           beta: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of -(2/beta) log sigmoid(beta (log p - log p_S)), Qi et al.'s loss.

    Its gradient on log p is -2 sigmoid(-beta z): -1 at theta_S's probability (z = 0, the
    cross-entropy's), vanishing once log p exceeds log p_S by a few 1/beta; as beta -> 0 it
    is the cross-entropy's. Its infimum over p is within (2/beta) log 2 of its value at p_S.
    """
    z = logp - logp_ref
    return (-(2.0 / beta) * torch.nn.functional.logsigmoid(beta * z)).mean()


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> each labelled token's 1-based index within its row's labelled tokens."""
    on = (labels != IGNORE).long()
    return torch.cumsum(on, dim=1) * on


def token_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T-1) log-probability of each next token (the labels' shift, as lm_loss)."""
    mask = batch["attention_mask"]
    mask = None if right_padded(mask) else mask
    logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits[:, :-1].float()
    target = batch["labels"][:, 1:].clamp(min=0)
    return torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


def proximal_term(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor],
                  rho: float) -> torch.Tensor:
    """rho/2 * sum ||w - w_S||^2 over the tensors."""
    total = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
    return 0.5 * rho * total


def outside_span(update: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The component of a (flattened) update orthogonal to one direction (all of it if d = 0)."""
    u, d = update.flatten(), direction.flatten()
    norm = d.norm()
    if norm == 0:
        return u
    d = d / norm
    return u - (u @ d) * d


class Defense(Baseline):
    """Ordinary fine-tuning (Baseline) that keeps w_S; subclasses add a term or replace the loss."""

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params]  # w_S: the model is theta_S here


class ConstrainedSFT(Defense):
    """The task loss replaced by constrained_token_loss against a frozen copy of theta_S."""

    def __init__(self, spec: DefenseSpec):
        self.spec = spec

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        self.reference = copy.deepcopy(model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)

    def task_loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logp = token_logps(model, batch)
        with torch.no_grad():
            logp_ref = token_logps(self.reference, batch)
        labels = batch["labels"][:, 1:]
        on = labels != IGNORE
        beta = beta_schedule(answer_positions(labels), self.spec.strength, self.spec.prefix)
        return constrained_token_loss(logp[on], logp_ref[on], beta[on])


class Proximal(Defense):
    """rho/2 ||w - w_S||^2 beside the task loss."""

    def __init__(self, spec: DefenseSpec):
        self.spec = spec

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor:
        return proximal_term(self.params, self.anchor, self.spec.strength)


class WeightDirection(Defense):
    """lambda/2 sum over weight tensors of ||update outside span(W_S - W_H)||^2."""

    def __init__(self, spec: DefenseSpec, helpful: PreTrainedModel):
        self.spec = spec
        self.helpful = {n: p.detach() for n, p in helpful.named_parameters()}

    def prepare(self, model: PreTrainedModel, seed: int) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, _ in named if n not in self.helpful]
        if missing:
            raise ValueError(f"weight_direction needs theta_H's weights for every trained "
                             f"tensor; missing {missing[:3]} (adapters have none)")
        self.params = [p for _, p in named]
        self.anchor = [p.detach().clone() for p in self.params]
        self.directions = [(a - self.helpful[n].to(a.device)).flatten()
                           for (n, _), a in zip(named, self.anchor, strict=True)]
        del self.helpful

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor:
        total = sum((outside_span(p - a, d) ** 2).sum() for p, a, d in
                    zip(self.params, self.anchor, self.directions, strict=True))
        return 0.5 * self.spec.strength * total


def make_defense(spec: DefenseSpec, helpful: PreTrainedModel | None = None) -> Defense:
    """The objective a DefenseSpec describes (weight_direction needs theta_H's model)."""
    if spec.kind == "constrained_sft":
        return ConstrainedSFT(spec)
    if spec.kind == "proximal":
        return Proximal(spec)
    if helpful is None:
        raise ValueError("weight_direction needs theta_H's weights")
    return WeightDirection(spec, helpful)
