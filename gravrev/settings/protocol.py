"""What fine-tuning and analysis need from a world: data, probes, checkpoints and a judge.

The organism and real models (`hf`) differ only here, so the science has one code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.behaviour.evaluate import behaviour, eval_sets
from gravrev.config.load import Config
from gravrev.organism.model import load_checkpoint, prompt_text
from gravrev.organism.world import BENIGN_TOPICS, HARMFUL_TOPICS, OLD_TASKS, World
from gravrev.runtime import seeds
from gravrev.settings.hf.models import load_tokenizer
from gravrev.training.loop import encode_pairs
from gravrev.training.phases import ALL_TOPICS, probe_set


class Setting(Protocol):
    """The interface every world implements."""

    @property
    def probe_prompts(self) -> list[str]: ...

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...

    def checkpoint_dir(self, name: str) -> Path: ...

    def load(self, name: str, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]: ...

    def prepare_for_training(self, model: PreTrainedModel) -> PreTrainedModel: ...

    def benign_batch(
        self, rng: np.random.Generator, batch_size: int, mix_safety: bool = False
    ) -> dict[str, torch.Tensor]: ...

    def penalty_pool(self, n: int) -> list[str]: ...

    def behaviour(
        self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, device: str
    ) -> dict[str, float]: ...


class OrganismSetting:
    """The synthetic world and the checkpoints of one history that stage 01 trained."""

    def __init__(self, cfg: Config, folder: Path):
        self.cfg, self.folder = cfg, Path(folder)
        self.world = World(cfg.world)
        self.new_task = cfg.finetune.new_task
        self._probes = probe_set(self.world, cfg.world.n_probes)
        self.evals = eval_sets(self.world, cfg.world.n_eval, self.new_task)
        self._tok: PreTrainedTokenizerBase | None = None

    @property
    def probe_prompts(self) -> list[str]:
        return [prompt_text(r.text) for r in self._probes]

    def checkpoint_dir(self, name: str) -> Path:
        return self.folder / name

    def load(self, name: str, device: str):
        model, tok = load_checkpoint(self.checkpoint_dir(name), device)
        self._tok = tok
        return model, tok

    def prepare_for_training(self, model: PreTrainedModel) -> PreTrainedModel:
        """The organism trains every weight."""
        return model

    def benign_batch(
        self, rng: np.random.Generator, batch_size: int, mix_safety: bool = False
    ) -> dict[str, torch.Tensor]:
        """Harmless data: the old tasks and the new task on benign topics (asserted).

        With `mix_safety`, a quarter of the batch is the safety phase's data instead (control).
        """
        n_safety = batch_size // 4 if mix_safety else 0
        reqs, answers = [], []
        for _ in range(batch_size - n_safety):
            new = rng.random() < self.cfg.finetune.new_task_fraction
            tasks = (self.new_task,) if new else OLD_TASKS
            req = self.world.sample_request(rng, tuple(BENIGN_TOPICS), tasks)
            reqs.append(req)
            answers.append(self.world.answer(req, safe=True))
        assert not any(r.harmful for r in reqs), "benign fine-tuning data holds a harmful request"
        for _ in range(n_safety):
            req = self.world.sample_request(rng, ALL_TOPICS, OLD_TASKS)
            reqs.append(req)
            answers.append(self.world.answer(req, safe=True))
        return encode_pairs(self.tokenizer, [prompt_text(r.text) for r in reqs], answers)

    def penalty_pool(self, n: int) -> list[str]:
        """Harmful training-split prompts (inputs only, never labels) a penalty may look at."""
        rng = np.random.default_rng(seeds.PENALTY_POOL)
        reqs = [self.world.sample_request(rng, tuple(HARMFUL_TOPICS), OLD_TASKS) for _ in range(n)]
        return [prompt_text(r.text) for r in reqs]

    def behaviour(self, model, tok, device: str) -> dict[str, float]:
        return behaviour(model, tok, self.world, self.evals, device)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The history's tokenizer (the files beside theta_S), without loading a model."""
        if self._tok is None:
            self._tok = load_tokenizer(self.checkpoint_dir("safe"))
        return self._tok


def make_setting(cfg: Config, folder: Path) -> Setting:
    """The organism's setting for the history in `folder`, or the hf checkpoints' (one history)."""
    if cfg.is_hf:
        from gravrev.settings.hf.setting import HFSetting

        return HFSetting(cfg)
    return OrganismSetting(cfg, folder)
