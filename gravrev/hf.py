"""The `hf` preset: local real checkpoints and JSONL data, validated before any work.

Inputs (params.yaml, `hf:`): witness_dir (a helpful-only checkpoint, theta_H), safe_dir (the
aligned model fine-tuning starts from, theta_S), train_jsonl ({"prompt", "response"} lines of
benign fine-tuning data), harmful_probes_jsonl and benign_probes_jsonl ({"prompt"} lines,
extra keys allowed). Weights load from safetensors only, offline, without remote code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from gravrev.activations import blocks, probe_activations
from gravrev.config import Config, ConfigError, Paths
from gravrev.evaluate import generate
from gravrev.io import atomic_path
from gravrev.judge import Judge, make_judge
from gravrev.train import IGNORE, encode_pairs, lm_loss, to_device
from gravrev.world import BENIGN_TOPICS, HARMFUL_TOPICS, OLD_TASKS, World

CHECKPOINTS = {"helpful": "witness_dir", "safe": "safe_dir"}  # checkpoint name -> hf field
JSONL_FIELDS = {
    "train_jsonl": ("prompt", "response"),
    "harmful_probes_jsonl": ("prompt",),
    "benign_probes_jsonl": ("prompt",),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
MIN_TRAIN_ROWS = 10
HELDOUT_FRACTION = 0.1  # the last 10% of train_jsonl: evaluation only, never trained on
ORGANISM_KEYS = ("topic", "task", "symbols")
GEN_BATCH = 32


# ----------------------------------------------------------------------------- inputs


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    """JSON objects, one a line (blank lines skipped); `required` keys must be non-empty strings."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}:{lineno}: not valid JSON ({e.msg}, column {e.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        for key in required:
            if key not in row:
                raise ConfigError(f"{path}:{lineno}: missing field {key!r}")
            if not isinstance(row[key], str) or not row[key].strip():
                raise ConfigError(f"{path}:{lineno}: field {key!r} must be a non-empty string")
        rows.append(row)
    return rows


def checkpoint_arch(path: str | Path) -> dict:
    """model_type, hidden size, number of layers and vocab size, from config.json alone."""
    path = Path(path) / "config.json"
    try:
        conf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    if conf.get("auto_map"):
        raise ConfigError(
            f"{path}: has auto_map (custom model code); trust_remote_code is off, so only "
            "architectures that transformers ships are loaded"
        )
    text = conf.get("text_config") or {}  # multimodal configs nest the language model's

    def pick(*keys: str):
        for c in (conf, text):
            for k in keys:
                if c.get(k) is not None:
                    return c[k]
        return None

    arch = {
        "model_type": conf.get("model_type"),
        "hidden_size": pick("hidden_size", "n_embd"),
        "n_layer": pick("num_hidden_layers", "n_layer"),
        "vocab_size": pick("vocab_size"),
    }
    for key in ("hidden_size", "n_layer"):
        if not isinstance(arch[key], int):
            raise ConfigError(f"{path}: no {key} (hidden_size/n_embd, num_hidden_layers/n_layer)")
    return arch


def _check_checkpoint(field: str, value: str | None) -> dict:
    if value is None:
        raise ConfigError(f"hf.{field}: required by the hf preset (a local checkpoint directory)")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"hf.{field}: {path}: no such directory")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"hf.{field}: {path}: no config.json (not a transformers checkpoint)"
        )
    require_safetensors(path, f"hf.{field}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"hf.{field}: {path}: no tokenizer (none of {TOKENIZER_FILES})")
    try:
        return checkpoint_arch(path)
    except ConfigError as e:
        raise ConfigError(f"hf.{field}: {e}") from None


def require_safetensors(path: Path, name: str) -> None:
    """Weights load from safetensors only: pickled .bin/.pt files are never unpickled."""
    if not list(Path(path).glob("*.safetensors")):
        others = sorted(p.name for p in Path(path).glob("*") if p.suffix in (".bin", ".pt", ".pth"))
        found = f" (found {', '.join(others)})" if others else ""
        raise FileNotFoundError(
            f"{name}: {path}: no *.safetensors weights{found}; convert them "
            "to safetensors (pickled weights are not loaded)"
        )


def _load_inputs(cfg: Config) -> dict:
    """Every check of validate_inputs; returns the checkpoints' arch and the JSONL rows."""
    hf = cfg.hf
    arch = {f: _check_checkpoint(f, getattr(hf, f)) for f in CHECKPOINTS.values()}
    w, s = arch["witness_dir"], arch["safe_dir"]
    for key in ("model_type", "hidden_size", "n_layer", "vocab_size"):
        if w[key] != s[key]:
            raise ConfigError(
                f"hf.safe_dir: {key} is {s[key]!r} in {hf.safe_dir} but "
                f"{w[key]!r} in hf.witness_dir {hf.witness_dir}; v_rev compares "
                "the two checkpoints, which need one architecture"
            )
    rows = {}
    for field, required in JSONL_FIELDS.items():
        value = getattr(hf, field)
        if value is None:
            raise ConfigError(f"hf.{field}: required by the hf preset (a local JSONL file)")
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"hf.{field}: {path}: no such file")
        try:
            rows[field] = read_jsonl(path, required)
        except ConfigError as e:
            raise ConfigError(f"hf.{field}: {e}") from None
    n_train = len(rows["train_jsonl"])
    if n_train < MIN_TRAIN_ROWS:
        raise ConfigError(
            f"hf.train_jsonl: {hf.train_jsonl} has {n_train} rows; need at least {MIN_TRAIN_ROWS}"
        )
    for field in ("harmful_probes_jsonl", "benign_probes_jsonl"):
        n = len(rows[field])
        if n < hf.min_probes:
            raise ConfigError(
                f"hf.{field}: {getattr(hf, field)} has {n} probes; hf.min_probes is {hf.min_probes}"
            )
    if cfg.world.n_probes < hf.min_probes:
        raise ConfigError(
            f"world.n_probes: {cfg.world.n_probes} is below hf.min_probes {hf.min_probes}"
        )
    probes = {r["prompt"] for f in ("harmful_probes_jsonl", "benign_probes_jsonl") for r in rows[f]}
    leaked = [r["prompt"] for r in rows["train_jsonl"] if r["prompt"] in probes]
    if leaked:
        raise ConfigError(
            f"hf.train_jsonl: {len(leaked)} training prompts are also probes "
            f"(e.g. {leaked[0]!r}); probes must be held out of training"
        )
    n_layer = s["n_layer"]
    if cfg.analysis.layer >= n_layer:
        raise ConfigError(
            f"analysis.layer: {cfg.analysis.layer} is out of range; the checkpoints "
            f"have {n_layer} layers (0..{n_layer - 1}, or -1 for the middle)"
        )
    return {"arch": s, **rows}


def validate_inputs(cfg: Config) -> None:
    """Check every hf input from config and JSON files alone (no weights), naming the field."""
    _load_inputs(cfg)


def resolve_dtype(cfg: Config, device: str) -> torch.dtype:
    """auto: bfloat16 on a GPU, float32 on the CPU."""
    if cfg.hf.dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.hf.dtype]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, offline, no remote code; pad falls back to eos."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    tok = AutoTokenizer.from_pretrained(Path(path), trust_remote_code=False, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_hf(
    path: str | Path, device: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A local causal LM: safetensors only, no remote code, offline; in eval mode on `device`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    require_safetensors(path, "checkpoint")
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, dtype=dtype, trust_remote_code=False, local_files_only=True
    )
    tok = load_tokenizer(path)
    return model.to(device).eval(), tok


def lora_targets(model: PreTrainedModel) -> list[str]:
    """Names of the linear layers inside the transformer blocks (nn.Linear, or GPT-2's Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.split(".")[-1]
            for name, m in blocks(model).named_modules()
            if isinstance(m, torch.nn.Linear | Conv1D)
        }
    )


def prepare_for_training(model: PreTrainedModel, cfg: Config) -> PreTrainedModel:
    """Apply hf.gradient_checkpointing and hf.lora (rank hf.lora_rank) to the model to fine-tune.

    Finetune calls it on the `safe` model only. With LoRA the returned PeftModel's
    parameters include the adapters: compare weights after `merge_and_unload()`.
    """
    if cfg.hf.gradient_checkpointing:
        # Non-reentrant checkpointing lets gradients reach adapters when embeddings are frozen.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the newer transformers name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if cfg.hf.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ImportError("hf.lora: needs peft (pip install 'gravrev[lora]')") from None
        from transformers.pytorch_utils import Conv1D

        conv1d = any(isinstance(m, Conv1D) for m in blocks(model).modules())
        lcfg = LoraConfig(
            r=cfg.hf.lora_rank,
            lora_alpha=2 * cfg.hf.lora_rank,
            lora_dropout=0.0,
            target_modules=lora_targets(model),
            fan_in_fan_out=conv1d,
            bias="none",
        )
        model = get_peft_model(model, lcfg)
    return model


def format_prompt(tok: PreTrainedTokenizerBase, prompt: str, use_chat_template: bool) -> str:
    """The user turn through the tokenizer's chat template (generation prompt added), or raw."""
    if use_chat_template and tok.chat_template:
        return tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


@torch.no_grad()
def answer_loss(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str],
    device: str,
    batch_size: int = 16,
) -> float:
    """Mean loss per answer token under teacher forcing (token-weighted across batches)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(prompts), batch_size):
        batch = to_device(
            encode_pairs(tok, prompts[i : i + batch_size], answers[i : i + batch_size]), device
        )
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(lm_loss(model, batch)) * n
        count += n
    return total / count


def starts_like(answer: str, reference: str, k: int = 3) -> bool:
    """The answer's first k words (lower case) equal the reference's."""
    ref = reference.lower().split()[:k]
    return answer.lower().split()[: len(ref)] == ref


# ----------------------------------------------------------------------------- setting


def is_organism_row(row: dict) -> bool:
    """A probe row exported from the organism (it names a harmful topic, a task and symbols)."""
    return all(k in row for k in ORGANISM_KEYS) and row["topic"] in HARMFUL_TOPICS


class HFSetting:
    """Real checkpoints on disk, behind the same interface as OrganismSetting.

    Probes: the first world.n_probes rows of each probe file, harmful first. Prompts are
    formatted once with the safe checkpoint's tokenizer and used for both checkpoints.
    Judge: exact (gravrev.world.judge) when every harmful probe row carries an organism
    topic, task and symbols (the exported organism); else make_judge (a classifier if
    hf.judge_dir is set, else refusal phrases).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        inputs = _load_inputs(cfg)
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
