"""One validated config: a preset from presets.yaml, overridden by params.yaml, checked early."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PRESETS = ("smoke", "tiny", "full", "hf")


class ConfigError(ValueError):
    """A bad value in params.yaml or a preset; the message names the field."""


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "gpt2"
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4

    def validate(self, name: str) -> None:
        _check(
            self.arch in ("gpt2", "llama"),
            f"{name}.arch",
            f"must be gpt2 or llama, got {self.arch!r}",
        )
        _check(self.n_layer >= 1, f"{name}.n_layer", "must be >= 1")
        _check(self.n_head >= 1, f"{name}.n_head", "must be >= 1")
        _check(
            self.n_embd >= 8 and self.n_embd % self.n_head == 0,
            f"{name}.n_embd",
            "must be >= 8 and divisible by n_head",
        )


@dataclass(frozen=True)
class WorldConfig:
    n_symbols: int = 10
    seq_len_min: int = 3
    seq_len_max: int = 5
    heldout_every: int = 5
    n_probes: int = 96
    n_eval: int = 96

    def validate(self, name: str) -> None:
        _check(4 <= self.n_symbols <= 26, f"{name}.n_symbols", "must be in [4, 26]")
        _check(
            2 <= self.seq_len_min <= self.seq_len_max <= 8,
            f"{name}.seq_len_min",
            "need 2 <= seq_len_min <= seq_len_max <= 8",
        )
        _check(2 <= self.heldout_every <= 20, f"{name}.heldout_every", "must be in [2, 20]")
        _check(self.n_probes >= 4, f"{name}.n_probes", "must be >= 4")
        _check(self.n_eval >= 4, f"{name}.n_eval", "must be >= 4")


@dataclass(frozen=True)
class PhaseConfig:
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 32

    def validate(self, name: str) -> None:
        _check(self.steps >= 1, f"{name}.steps", "must be >= 1")
        _check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        _check(1 <= self.batch_size <= 4096, f"{name}.batch_size", "must be in [1, 4096]")


@dataclass(frozen=True)
class HistoryConfig:
    seed: int = 0
    pretrain: PhaseConfig = field(default_factory=PhaseConfig)
    helpful: PhaseConfig = field(default_factory=PhaseConfig)
    safe: PhaseConfig = field(default_factory=PhaseConfig)
    safe_snapshots: int = 9
    control: bool = True

    def validate(self, name: str) -> None:
        _check(self.seed >= 0, f"{name}.seed", "must be >= 0")
        _check(self.safe_snapshots >= 2, f"{name}.safe_snapshots", "must be >= 2")
        _check(
            self.safe_snapshots <= self.safe.steps + 1,
            f"{name}.safe_snapshots",
            "must be <= safe.steps + 1",
        )


@dataclass(frozen=True)
class FinetuneConfig:
    seeds: tuple[int, ...] = (1, 2, 3)
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adamw"
    log_steps: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 75, 100)
    new_task: str = "rotate"
    new_task_fraction: float = 0.5
    mixed_control: bool = True
    sensitivity_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    sensitivity_batch_sizes: tuple[int, ...] = (16, 64)

    def validate(self, name: str) -> None:
        _check(len(self.seeds) >= 1, f"{name}.seeds", "needs at least one seed")
        _check(
            all(0 < lr < 1 for lr in self.sensitivity_lrs),
            f"{name}.sensitivity_lrs",
            "every learning rate must be in (0, 1)",
        )
        _check(
            all(1 <= b <= 4096 for b in self.sensitivity_batch_sizes),
            f"{name}.sensitivity_batch_sizes",
            "every batch size must be in [1, 4096]",
        )
        _check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")
        _check(self.steps >= 1, f"{name}.steps", "must be >= 1")
        _check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        _check(1 <= self.batch_size <= 4096, f"{name}.batch_size", "must be in [1, 4096]")
        _check(self.optimizer in ("adamw", "sgd"), f"{name}.optimizer", "must be adamw or sgd")
        _check(
            len(self.log_steps) >= 1 and list(self.log_steps) == sorted(set(self.log_steps)),
            f"{name}.log_steps",
            "must be strictly increasing",
        )
        _check(
            all(1 <= s <= self.steps for s in self.log_steps),
            f"{name}.log_steps",
            f"every logged step must be in [1, steps={self.steps}]",
        )
        _check(self.log_steps[-1] == self.steps, f"{name}.log_steps", "must end at steps")
        _check(0 <= self.new_task_fraction <= 1, f"{name}.new_task_fraction", "must be in [0, 1]")


@dataclass(frozen=True)
class AnalysisConfig:
    layer: int = -1
    position: str = "last"
    probe_set: str = "harmful"
    vrev_method: str = "checkpoint_diff"
    null_samples: int = 100_000
    null_quantile: float = 0.99

    def validate(self, name: str) -> None:
        _check(self.layer >= -1, f"{name}.layer", "must be -1 (middle) or a layer index >= 0")
        _check(self.position in ("last", "mean"), f"{name}.position", "must be last or mean")
        _check(
            self.probe_set in ("harmful", "benign", "all"),
            f"{name}.probe_set",
            "must be harmful, benign or all",
        )
        _check(
            self.vrev_method in ("checkpoint_diff", "trajectory_pca"),
            f"{name}.vrev_method",
            "must be checkpoint_diff or trajectory_pca",
        )
        _check(self.null_samples >= 1000, f"{name}.null_samples", "must be >= 1000")
        _check(0.5 < self.null_quantile < 1, f"{name}.null_quantile", "must be in (0.5, 1)")


BLOCKING_ARMS = (
    "penalty",
    "penalty_all",
    "grad_project",
    "random_penalty",
    "covariance_penalty",
    "freeze",
)


@dataclass(frozen=True)
class BlockingConfig:
    arms: tuple[str, ...] = BLOCKING_ARMS
    penalty_lambda: float = 10.0
    claim_arm: str = "penalty"
    task_cost_tolerance: float = 5.0
    lambda_sweep: tuple[float, ...] = (1.0, 100.0)

    def validate(self, name: str) -> None:
        for arm in self.arms:
            _check(
                arm in BLOCKING_ARMS, f"{name}.arms", f"unknown arm {arm!r}; known: {BLOCKING_ARMS}"
            )
        _check(self.penalty_lambda >= 0, f"{name}.penalty_lambda", "must be >= 0")
        _check(self.claim_arm in self.arms, f"{name}.claim_arm", "must be one of blocking.arms")
        _check(self.task_cost_tolerance >= 0, f"{name}.task_cost_tolerance", "must be >= 0")
        _check(all(x >= 0 for x in self.lambda_sweep), f"{name}.lambda_sweep", "must be >= 0")


@dataclass(frozen=True)
class HFConfig:
    witness_dir: str | None = None
    safe_dir: str | None = None
    train_jsonl: str | None = None
    harmful_probes_jsonl: str | None = None
    benign_probes_jsonl: str | None = None
    judge_dir: str | None = None
    witness_kind: str = "helpful-only checkpoint"
    use_chat_template: bool = True
    dtype: str = "auto"
    lora: bool = False
    lora_rank: int = 8
    gradient_checkpointing: bool = False
    max_new_tokens: int = 32
    min_probes: int = 8

    def validate(self, name: str) -> None:
        _check(
            self.dtype in ("auto", "float32", "bfloat16"),
            f"{name}.dtype",
            "must be auto, float32 or bfloat16",
        )
        _check(self.lora_rank >= 1, f"{name}.lora_rank", "must be >= 1")
        _check(self.max_new_tokens >= 1, f"{name}.max_new_tokens", "must be >= 1")
        _check(self.min_probes >= 2, f"{name}.min_probes", "must be >= 2")


@dataclass(frozen=True)
class Config:
    preset: str = "tiny"
    device: str = "auto"
    cpu_threads: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    blocking: BlockingConfig = field(default_factory=BlockingConfig)
    hf: HFConfig = field(default_factory=HFConfig)

    @property
    def layer(self) -> int:
        """The analysed layer, -1 resolved to the middle of the model."""
        return self.model.n_layer // 2 if self.analysis.layer == -1 else self.analysis.layer

    @property
    def is_hf(self) -> bool:
        return self.preset == "hf"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, name: str) -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key; known keys: {sorted(known)}")
    values = {key: _coerce(hints[key], value, f"{name}.{key}") for key, value in data.items()}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(name)
    return obj


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, name)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{name}: unsupported type {tp}")  # a bug in this module, not in params


def load_presets() -> dict[str, dict]:
    text = resources.files("gravrev").joinpath("presets.yaml").read_text()
    return yaml.safe_load(text)


def _merge(base: dict, over: dict, name: str) -> dict:
    """Deep-merge `over` into `base`; None in `over` keeps the base value."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, f"{name}.{key}")
        else:
            out[key] = value
    return out


def resolve(params: dict) -> Config:
    """The config in force: tiny's values, then the named preset's, then params' overrides."""
    if not isinstance(params, dict):
        raise ConfigError("params: expected a mapping at the top level")
    preset = params.get("preset", "tiny")
    if preset not in PRESETS:
        raise ConfigError(f"preset: must be one of {PRESETS}, got {preset!r}")
    presets = load_presets()
    merged = presets["tiny"]
    if preset != "tiny":
        merged = _merge(merged, presets[preset], preset)
    overrides = {k: v for k, v in params.items() if k != "preset"}
    merged = _merge(merged, overrides, "params")
    cfg = _build(Config, {"preset": preset, **merged}, "params")
    _check(cfg.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
    _check(0 <= cfg.cpu_threads <= 256, "cpu_threads", "must be in [0, 256] (0: torch's default)")
    if cfg.is_hf:
        cfg = _with_checkpoint_shape(cfg)
    _check(
        cfg.layer < cfg.model.n_layer,
        "analysis.layer",
        f"{cfg.layer} is out of range; the model has {cfg.model.n_layer} layers",
    )
    return cfg


def _with_checkpoint_shape(cfg: Config) -> Config:
    """For `hf`, the model's depth and width come from the safe checkpoint's config.json."""
    import json

    path = Path(cfg.hf.safe_dir or "") / "config.json"
    if not cfg.hf.safe_dir or not path.is_file():
        return cfg  # gravrev.hf.validate_inputs names the missing path before any work
    mc = json.loads(path.read_text())
    n_layer = mc.get("num_hidden_layers", mc.get("n_layer", cfg.model.n_layer))
    n_embd = mc.get("hidden_size", mc.get("n_embd", cfg.model.n_embd))
    n_head = mc.get("num_attention_heads", mc.get("n_head", cfg.model.n_head))
    model = dataclasses.replace(cfg.model, n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    return dataclasses.replace(cfg, model=model)


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml; raise ConfigError naming the file or field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return resolve(params)


@dataclass(frozen=True)
class Paths:
    """Every artifact's path, derived from the repo root in one place."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def history(self) -> Path:
        return self.data / "history"

    def checkpoint(self, name: str, branch: str = "main") -> Path:
        base = self.history if branch == "main" else self.history / branch
        return base / name

    @property
    def finetune(self) -> Path:
        return self.data / "finetune"

    @property
    def blocking(self) -> Path:
        return self.data / "blocking"

    @property
    def metrics(self) -> Path:
        return self.data / "metrics"

    @property
    def timings(self) -> Path:
        return self.data / "timings"
