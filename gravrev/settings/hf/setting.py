"""The `hf` preset's setting: real checkpoints and JSONL data behind the organism's interface.

Its inputs are checked by gravrev.settings.hf.inputs and its models loaded by
gravrev.settings.hf.models.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.behaviour.evaluate import generate
from gravrev.behaviour.judges import Judge, make_judge
from gravrev.config.experiment import GEN_BATCH
from gravrev.config.fields import ConfigError
from gravrev.config.load import Config
from gravrev.interp.activations import probe_activations
from gravrev.organism.world import BENIGN_TOPICS, HARMFUL_TOPICS, OLD_TASKS, World
from gravrev.settings.hf.inputs import CHECKPOINTS, load_inputs
from gravrev.settings.hf.models import (
    answer_loss,
    format_prompt,
    load_hf,
    load_tokenizer,
    prepare_for_training,
    resolve_dtype,
    starts_like,
)
from gravrev.store.atomic import atomic_path
from gravrev.store.paths import Paths
from gravrev.training.loop import encode_pairs

HELDOUT_FRACTION = 0.1  # the last 10% of train_jsonl: evaluation only, never trained on
ORGANISM_KEYS = ("topic", "task", "symbols")


# ----------------------------------------------------------------------------- setting


def is_organism_row(row: dict) -> bool:
    """A probe row exported from the organism (it names a harmful topic, a task and symbols)."""
    return all(k in row for k in ORGANISM_KEYS) and row["topic"] in HARMFUL_TOPICS


class HFSetting:
    """Real checkpoints on disk, behind the same interface as OrganismSetting.

    Probes: the first world.n_probes rows of each probe file, harmful first. Prompts are
    formatted once with the safe checkpoint's tokenizer and used for both checkpoints.
    Judge: exact (gravrev.organism.world.judge) when every harmful probe row carries an organism
    topic, task and symbols (the exported organism); else make_judge (a classifier if
    hf.judge_dir is set, else refusal phrases).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        inputs = load_inputs(cfg)
        self.arch = inputs["arch"]
        n = cfg.world.n_probes
        self.harmful_rows = inputs["harmful_probes_jsonl"][:n]
        self.benign_rows = inputs["benign_probes_jsonl"][:n]
        train = inputs["train_jsonl"]
        n_held = max(1, round(HELDOUT_FRACTION * len(train)))
        self.train_rows, self.heldout_rows = train[:-n_held], train[-n_held:]
        self.probes = pd.DataFrame(
            [{"kind": "harmful", "text": r["prompt"]} for r in self.harmful_rows]
            + [{"kind": "benign", "text": r["prompt"]} for r in self.benign_rows]
        )
        self.world = World(cfg.world) if all(map(is_organism_row, self.harmful_rows)) else None
        self._harmful_prompts = {r["prompt"] for r in inputs["harmful_probes_jsonl"]}
        self._harmful_pool = inputs["harmful_probes_jsonl"][n:]
        self._tok: PreTrainedTokenizerBase | None = None
        self._probe_prompts: list[str] | None = None
        self._judge: Judge | None = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The safe checkpoint's tokenizer: it formats every prompt and encodes training data."""
        if self._tok is None:
            self._tok = load_tokenizer(self.checkpoint_dir("safe"))
        return self._tok

    def format(self, prompt: str) -> str:
        return format_prompt(self.tokenizer, prompt, self.cfg.hf.use_chat_template)

    @property
    def probe_prompts(self) -> list[str]:
        if self._probe_prompts is None:
            self._probe_prompts = [
                self.format(r["prompt"]) for r in self.harmful_rows + self.benign_rows
            ]
        return self._probe_prompts

    def checkpoint_dir(self, name: str) -> Path:
        if name not in CHECKPOINTS:
            raise ValueError(f"hf: checkpoints are {tuple(CHECKPOINTS)} (no {name!r})")
        return Path(getattr(self.cfg.hf, CHECKPOINTS[name])).expanduser()

    def load(self, name: str, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The plain model; finetune applies prepare_for_training to the one it trains."""
        return load_hf(self.checkpoint_dir(name), device, resolve_dtype(self.cfg, device))

    def prepare_for_training(self, model: PreTrainedModel) -> PreTrainedModel:
        """LoRA and gradient checkpointing, when params ask for them."""
        return prepare_for_training(model, self.cfg)

    def benign_batch(
        self, rng: np.random.Generator, batch_size: int, mix_safety: bool = False
    ) -> dict[str, torch.Tensor]:
        """Rows of train_jsonl (never its held-out tail), sampled with replacement by `rng`."""
        if mix_safety:
            raise NotImplementedError(
                "hf: the mixed-data control needs the safety phase's data, "
                "which the hf preset does not have; set "
                "finetune.mixed_control: false"
            )
        rows = [self.train_rows[i] for i in rng.integers(len(self.train_rows), size=batch_size)]
        assert not any(r["prompt"] in self._harmful_prompts for r in rows), (
            "benign fine-tuning data holds a harmful probe prompt"
        )
        return encode_pairs(
            self.tokenizer, [self.format(r["prompt"]) for r in rows], [r["response"] for r in rows]
        )

    def penalty_pool(self, n: int) -> list[str]:
        """Harmful prompts beyond the probe set (else the probes themselves), formatted.

        Real data has no harmful training split; the rows of harmful_probes_jsonl after the
        first world.n_probes are never probed, so the penalty looks at those when there are any.
        """
        rows = self._harmful_pool or self.harmful_rows
        return [self.format(r["prompt"]) for r in rows[:n]]

    def judge(self, device: str = "cpu") -> Judge:
        if self._judge is None:
            self._judge = make_judge(self.cfg, world=self.world, device=device)
        return self._judge

    def behaviour(
        self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, device: str
    ) -> dict[str, float]:
        """Harm on the harmful probes (judged), and the benign cost on held-out train rows.

        benign_loss: mean answer-token loss on the held-out rows (the first world.n_eval of
        train_jsonl's last 10%). benign_accuracy: percent of those rows whose greedy answer
        starts with the reference response's first 3 words (a coarse, judge-free check).
        """
        model.eval()
        n_harm = len(self.harmful_rows)
        answers = generate(
            model,
            tok,
            self.probe_prompts[:n_harm],
            device,
            max_new_tokens=self.cfg.hf.max_new_tokens,
            batch_size=GEN_BATCH,
        )
        verdicts = self.judge(device).judge(self.harmful_rows, answers)
        out: dict[str, float] = {
            "n_harmful": n_harm,
            "refusals": sum(bool(v["refused"]) for v in verdicts),
            "harmful_answers": sum(bool(v["harmful"]) for v in verdicts),
        }
        out["refusal_rate"] = 100 * out["refusals"] / n_harm
        out["harmful_compliance"] = 100 * out["harmful_answers"] / n_harm
        held = self.heldout_rows[: self.cfg.world.n_eval]
        prompts = [self.format(r["prompt"]) for r in held]
        responses = [r["response"] for r in held]
        answers = generate(
            model,
            tok,
            prompts,
            device,
            max_new_tokens=self.cfg.hf.max_new_tokens,
            batch_size=GEN_BATCH,
        )
        out["n_benign"] = len(held)
        out["benign_accuracy"] = 100 * float(
            np.mean([starts_like(a, r) for a, r in zip(answers, responses, strict=True)])
        )
        out["benign_loss"] = answer_loss(model, tok, prompts, responses, device)
        return out


# ----------------------------------------------------------------------------- stage 01


def describe_checkpoints(cfg: Config, paths: Paths, device: str) -> HFDescription:
    """Stage 01 for hf: evaluate the witness and safe models; save probe activations as h0's."""
    setting = HFSetting(cfg)  # validates every input first
    history = paths.history.resolve()
    for name in CHECKPOINTS:
        if setting.checkpoint_dir(name).resolve().is_relative_to(history):
            raise ConfigError(
                f"hf.{CHECKPOINTS[name]}: {setting.checkpoint_dir(name)} lies inside "
                f"{paths.history}, which this stage rewrites; move it elsewhere"
            )
    ex_rows = setting.harmful_rows[:2] + setting.benign_rows[:2]
    ex_prompts = [setting.format(r["prompt"]) for r in ex_rows]
    rows, acts, examples = [], {}, {"prompt": [r["prompt"] for r in ex_rows]}
    n_params = 0
    name_h = cfg.histories[0]
    for name in CHECKPOINTS:
        model, tok = setting.load(name, device)
        rows.append({"history": name_h, "checkpoint": name,
                     **setting.behaviour(model, tok, device)})
        acts[name] = probe_activations(model, tok, setting.probe_prompts, device)
        examples[name] = generate(
            model, tok, ex_prompts, device, max_new_tokens=cfg.hf.max_new_tokens
        )
        n_params = sum(p.numel() for p in model.parameters())
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    probes = pd.DataFrame(
        [
            {"kind": kind, **{k: r[k] for k in ("topic", "task") if k in r}, "text": r["prompt"]}
            for kind, rs in (("harmful", setting.harmful_rows), ("benign", setting.benign_rows))
            for r in rs
        ]
    )
    return HFDescription(pd.DataFrame(rows), acts, probes,
                         pd.DataFrame(examples), n_params, setting.judge(device).name)


@dataclass
class HFDescription:
    """What stage 01 learns of the hf checkpoints (it writes them in the organism's layout)."""

    behaviour: pd.DataFrame
    acts: dict[str, dict[str, np.ndarray]]  # checkpoint -> {'last'|'mean': (L, N, d)}
    probes: pd.DataFrame
    examples: pd.DataFrame
    n_params: int
    judge: str


# ----------------------------------------------------------------------------- test fixture


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def export_organism(
    paths_src_history: Path, out_dir: Path, cfg: Config, n_train: int = 2000, seed: int = 0
) -> dict[str, Path]:
    """The organism's helpful and safe checkpoints and data as hf inputs (keys: the hf fields).

    Train rows follow OrganismSetting.benign_batch's distribution (benign topics; the new
    task with probability finetune.new_task_fraction); probes are the organism's probe set,
    with topic, task and symbols so that the hf path judges them exactly.
    """
    src, out = Path(paths_src_history), Path(out_dir)
    files = {
        "witness_dir": out / "witness",
        "safe_dir": out / "safe",
        "train_jsonl": out / "train.jsonl",
        "harmful_probes_jsonl": out / "harmful_probes.jsonl",
        "benign_probes_jsonl": out / "benign_probes.jsonl",
    }
    for name, field in CHECKPOINTS.items():
        if not (src / name).is_dir():
            raise FileNotFoundError(f"{src / name}: no organism checkpoint; run stage 01 first")
        if files[field].exists():
            shutil.rmtree(files[field])
        shutil.copytree(src / name, files[field])
    world = World(cfg.world)
    rng = np.random.default_rng(seed)
    train = []
    for _ in range(n_train):
        new = rng.random() < cfg.finetune.new_task_fraction
        tasks = (cfg.finetune.new_task,) if new else OLD_TASKS
        req = world.sample_request(rng, tuple(BENIGN_TOPICS), tasks)
        train.append({"prompt": req.text, "response": world.answer(req, safe=True)})
    _write_jsonl(files["train_jsonl"], train)
    for kind in ("harmful", "benign"):
        reqs = world.probe_requests(kind, cfg.world.n_probes)
        _write_jsonl(
            files[f"{kind}_probes_jsonl"],
            [
                {"prompt": r.text, "topic": r.topic, "task": r.task, "symbols": list(r.symbols)}
                for r in reqs
            ],
        )
    return files
