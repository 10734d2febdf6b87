"""One validated config: a preset from presets.yaml, overridden by params.yaml, checked early."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PRESETS = ("smoke", "tiny", "full", "sweep", "hf")


class ConfigError(ValueError):
    """A bad value in params.yaml or a preset; the message names the field."""


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int

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
    n_symbols: int
    seq_len_min: int
    seq_len_max: int
    heldout_every: int
    n_probes: int
    n_eval: int
    topic_rate: float  # share of pretraining sentences that state a topic's content

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
        _check(0 <= self.topic_rate <= 1, f"{name}.topic_rate", "must be in [0, 1]")


@dataclass(frozen=True)
class PhaseConfig:
    steps: int
    lr: float
    batch_size: int

    def validate(self, name: str) -> None:
        _check(self.steps >= 1, f"{name}.steps", "must be >= 1")
        _check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        _check(1 <= self.batch_size <= 4096, f"{name}.batch_size", "must be in [1, 4096]")


@dataclass(frozen=True)
class ShapeChecks:
    """The pre-registered targets of the history, in percent (gap: percentage points)."""

    helpful_harmful: float  # theta_H answers harmful requests with the content, at least
    safe_refusal: float  # theta_S refuses harmful requests, at least
    safe_latent: float  # theta_S still states the content when the answer is prefilled
    benign_gap: float  # theta_S's benign accuracy at most this far below theta_H's
    enforce: bool  # a failed check stops the pipeline (false: report and go on)

    def validate(self, name: str) -> None:
        for key in ("helpful_harmful", "safe_refusal", "safe_latent"):
            _check(0 <= getattr(self, key) <= 100, f"{name}.{key}", "must be in [0, 100]")
        _check(self.benign_gap >= 0, f"{name}.benign_gap", "must be >= 0")


@dataclass(frozen=True)
class HistoryConfig:
    seeds: tuple[int, ...]  # one history (H then S from the shared theta_P) per seed
    pretrain_seed: int
    pretrain: PhaseConfig
    helpful: PhaseConfig
    safe: PhaseConfig
    safe_replay: float  # share of each safety batch that replays pretraining text
    safe_snapshots: int
    checks: ShapeChecks

    def validate(self, name: str) -> None:
        _check(len(self.seeds) >= 1, f"{name}.seeds", "needs at least one history seed")
        _check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")
        _check(all(s >= 0 for s in self.seeds), f"{name}.seeds", "every seed must be >= 0")
        _check(self.pretrain_seed >= 0, f"{name}.pretrain_seed", "must be >= 0")
        _check(0 <= self.safe_replay < 1, f"{name}.safe_replay", "must be in [0, 1)")
        _check(self.safe_snapshots >= 2, f"{name}.safe_snapshots", "must be >= 2")
        _check(
            self.safe_snapshots <= self.safe.steps + 1,
            f"{name}.safe_snapshots",
            "must be <= safe.steps + 1",
        )


NEW_TASKS = ("rotate", "swap")


@dataclass(frozen=True)
class FinetuneConfig:
    seeds: tuple[int, ...]
    steps: int
    lr: float
    warmup: int
    batch_size: int
    optimizer: str
    log_steps: tuple[int, ...]
    new_task: str
    new_task_fraction: float
    min_new_task_accuracy: float  # the regime's rule: the new task is learned by T
    mixed_control: bool
    early_runs: int  # short runs per history for the early steps (seeds 1001, 1002, ...)
    early_steps: tuple[int, ...]
    sensitivity_lrs: tuple[float, ...]
    sensitivity_batch_sizes: tuple[int, ...]

    def validate(self, name: str) -> None:
        _check(len(self.seeds) >= 1, f"{name}.seeds", "needs at least one seed")
        _check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")
        _check(all(0 <= s < 1000 for s in self.seeds), f"{name}.seeds", "must be in [0, 1000)")
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
        _check(self.steps >= 1, f"{name}.steps", "must be >= 1")
        _check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        _check(0 <= self.warmup < self.steps, f"{name}.warmup", "must be in [0, steps)")
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
        _check(
            self.new_task in NEW_TASKS,
            f"{name}.new_task",
            f"must be one of {NEW_TASKS}, got {self.new_task!r}",
        )
        _check(0 <= self.new_task_fraction <= 1, f"{name}.new_task_fraction", "must be in [0, 1]")
        _check(
            0 <= self.min_new_task_accuracy <= 100,
            f"{name}.min_new_task_accuracy",
            "must be in [0, 100]",
        )
        _check(self.early_runs >= 0, f"{name}.early_runs", "must be >= 0")
        _check(
            list(self.early_steps) == sorted(set(self.early_steps))
            and all(s >= 1 for s in self.early_steps),
            f"{name}.early_steps",
            "must be strictly increasing steps >= 1",
        )


@dataclass(frozen=True)
class AnalysisConfig:
    layer: int
    position: str
    probe_set: str
    vrev_method: str
    null_samples: int
    null_quantile: float

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
    "penalty_layers",
    "grad_project",
    "random_penalty",
    "covariance_penalty",
    "freeze",
    "mean_penalty",
)


@dataclass(frozen=True)
class BlockingConfig:
    arms: tuple[str, ...]
    claim_arm: str
    lambda_grid: tuple[float, ...]  # candidates of the harm-blind manipulation check
    penalty_batch: int  # harmful training-split prompts per step, fresh from the pool
    pool_size: int
    task_cost_tolerance: float

    def validate(self, name: str) -> None:
        for arm in self.arms:
            _check(
                arm in BLOCKING_ARMS, f"{name}.arms", f"unknown arm {arm!r}; known: {BLOCKING_ARMS}"
            )
        _check(self.claim_arm in self.arms, f"{name}.claim_arm", "must be one of blocking.arms")
        _check(
            len(self.lambda_grid) >= 1 and all(x > 0 for x in self.lambda_grid),
            f"{name}.lambda_grid",
            "needs at least one lambda, each > 0",
        )
        _check(
            list(self.lambda_grid) == sorted(set(self.lambda_grid)),
            f"{name}.lambda_grid",
            "must be strictly increasing",
        )
        _check(1 <= self.penalty_batch <= self.pool_size, f"{name}.penalty_batch",
               "must be in [1, pool_size]")
        _check(self.task_cost_tolerance >= 0, f"{name}.task_cost_tolerance", "must be >= 0")


@dataclass(frozen=True)
class MediationConfig:
    scales: tuple[float, ...]  # multiples of |mean h_helpful - mean h_safe| at the layer

    def validate(self, name: str) -> None:
        _check(0.0 in self.scales, f"{name}.scales", "must include 0 (the unmodified model)")


@dataclass(frozen=True)
class SweepConfig:
    helpful_steps: tuple[int, ...]
    safe_steps: tuple[int, ...]
    seeds: tuple[int, ...]

    def validate(self, name: str) -> None:
        for key in ("helpful_steps", "safe_steps"):
            values = getattr(self, key)
            _check(
                all(v >= 1 for v in values) and list(values) == sorted(set(values)),
                f"{name}.{key}",
                "must be strictly increasing step counts >= 1",
            )
        _check(len(set(self.seeds)) == len(self.seeds), f"{name}.seeds", "must be distinct")


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str  # local | ray
    workers: int  # 0: one per core
    address: str | None  # ray: the cluster's address; null starts a local one

    def validate(self, name: str) -> None:
        _check(self.kind in ("local", "ray"), f"{name}.kind", "must be local or ray")
        _check(0 <= self.workers <= 1024, f"{name}.workers", "must be in [0, 1024] (0: all cores)")


@dataclass(frozen=True)
class HFConfig:
    witness_dir: str | None
    safe_dir: str | None
    train_jsonl: str | None
    harmful_probes_jsonl: str | None
    benign_probes_jsonl: str | None
    judge_dir: str | None
    witness_kind: str
    use_chat_template: bool
    dtype: str
    lora: bool
    lora_rank: int
    gradient_checkpointing: bool
    max_new_tokens: int
    min_probes: int

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
    preset: str
    device: str
    cpu_threads: int
    numeric_pins: bool
    executor: ExecutorConfig
    model: ModelConfig
    world: WorldConfig
    history: HistoryConfig
    finetune: FinetuneConfig
    analysis: AnalysisConfig
    blocking: BlockingConfig
    mediation: MediationConfig
    sweep: SweepConfig
    hf: HFConfig

    @property
    def layer(self) -> int:
        """The analysed layer, -1 resolved to the middle of the model."""
        return self.model.n_layer // 2 if self.analysis.layer == -1 else self.analysis.layer

    @property
    def is_hf(self) -> bool:
        return self.preset == "hf"

    @property
    def histories(self) -> tuple[str, ...]:
        """The history names, h<seed>, in the order of history.seeds."""
        return tuple(f"h{s}" for s in self.history.seeds)

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
    missing = sorted(known - set(data))
    if missing:
        raise ConfigError(f"{name}.{missing[0]}: missing; the preset must give every key")
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
    if "preset" not in params or params["preset"] is None:
        raise ConfigError(f"preset: missing; params must name one of {PRESETS}")
    preset = params["preset"]
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
    return cfg


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
    """Every artifact's path, derived from the repo root in one place; nothing else builds one."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def resolved_config(self) -> Path:
        return self.data / "config.json"

    def stage(self, name: str) -> Path:
        """A stage's DVC-tracked output folder: data/<name>."""
        return self.data / name

    @property
    def history(self) -> Path:
        return self.stage("history")

    @property
    def pretrained(self) -> Path:
        return self.history / "pretrained"

    def checkpoint(self, name: str, history: str) -> Path:
        """theta_H ('helpful') or theta_S ('safe') of one history; theta_P is shared."""
        return self.pretrained if name == "pretrained" else self.history / history / name

    def acts(self, name: str, history: str) -> Path:
        """Probe activations of a checkpoint: {'last'|'mean': (L, N, d)}."""
        return self.history / history / f"acts_{name}.npz"

    def safe_trajectory(self, history: str) -> Path:
        return self.history / history / "safe_trajectory.npz"

    @property
    def probes(self) -> Path:
        return self.history / "probes.csv"

    def run(self, stage: str, history: str, arm: str, seed: int) -> Path:
        """A run's activation snapshots (npz); arm names may hold dots, so no with_suffix."""
        return self.stage(stage) / history / f"{arm}_seed{seed}.npz"

    @property
    def v_rev(self) -> Path:
        return self.stage("vrev") / "v_rev.npz"

    @staticmethod
    def v_rev_key(history: str, method: str, position: str) -> str:
        return f"{history}/{method}/{position}"

    @property
    def metrics(self) -> Path:
        return self.data / "metrics"

    def metrics_file(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    @property
    def timings(self) -> Path:
        """Wall-clock figures: never DVC-hashed, never compared."""
        return self.data / "timings"
