"""Shared fixtures: the repository root, the smoke config, a random-weight smoke organism, and
one smoke pipeline run in a copy of the repository."""

import subprocess
from pathlib import Path

import pytest
import torch
from smoke_pipeline import copy_as_smoke_repo, dvc, tail

from gravrev.config.load import resolve
from gravrev.organism.model import build_model, build_tokenizer

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


# ----------------------------------------------------------------------------- the smoke pipeline
# One `dvc repro` of the smoke preset, in a copy of the repository, shared by every test that
# needs the built pipeline (tests/test_pipeline.py, tests/test_browser.py): a few minutes.


@pytest.fixture(scope="session")
def smoke_copy(tmp_path_factory) -> Path:
    """The committed copy of the working tree, preset smoke, before any stage ran."""
    return copy_as_smoke_repo(tmp_path_factory.mktemp("pipeline") / "repo")


@pytest.fixture(scope="session")
def smoke_repro(smoke_copy) -> subprocess.CompletedProcess:
    """The first `dvc repro` of the copy (it must succeed)."""
    proc = dvc(smoke_copy, "repro")
    assert proc.returncode == 0, f"dvc repro failed:\n{tail(proc)}"
    return proc


@pytest.fixture(scope="session")
def smoke_repo(smoke_copy, smoke_repro) -> Path:
    """The copy after its first `dvc repro`: every stage's output and the book are built."""
    return smoke_copy
