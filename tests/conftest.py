"""Shared fixtures: the repository root, the smoke config and a random-weight smoke organism."""

from pathlib import Path

import pytest
import torch

from gravrev.config import resolve
from gravrev.organism import build_model, build_tokenizer

# The test models are tiny: one thread is as fast as two on an idle machine, and 20-50x faster
# when another process (a concurrent `dvc repro`) competes for the cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_cfg():
    return resolve({"preset": "smoke"})


@pytest.fixture(scope="session")
def smoke_tok(smoke_cfg):
    return build_tokenizer(smoke_cfg.world)


@pytest.fixture
def smoke_model(smoke_cfg, smoke_tok):
    """A freshly initialised (untrained) smoke model in eval mode."""
    return build_model(smoke_cfg.model, smoke_tok, seed=0).eval()
