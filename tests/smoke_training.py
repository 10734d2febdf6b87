"""A seeded smoke-size training run whose result is the sha256 of its weights (for the tests)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from gravrev.config.load import resolve
from gravrev.organism.model import build_model, build_tokenizer
from gravrev.organism.world import World
from gravrev.training.loop import lm_loss, make_optimizer, set_seed
from gravrev.training.phases import phase_batch


def weights_sha256(model: torch.nn.Module) -> str:
    """One digest over every tensor of the state dict, names included, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_smoke_and_hash(seed: int, steps: int = 30) -> str:
    """Train the smoke organism for `steps` AdamW steps on phase-H batches; hash its weights."""
    cfg = resolve({"preset": "smoke"})
    set_seed(seed)
    world = World(cfg.world)
    tok = build_tokenizer(cfg.world)
    model = build_model(cfg.model, tok, seed=seed).train()
    opt = make_optimizer(model, "adamw", 3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        loss = lm_loss(model, phase_batch(world, tok, "helpful", rng, 16))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return weights_sha256(model)
