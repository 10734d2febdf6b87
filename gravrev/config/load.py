"""One validated config: a preset from presets.yaml, overridden by params.yaml, checked early.

The sections live in gravrev.config.organism, .experiment, .regime and .defenses, the typed build in
gravrev.config.fields; each name is imported from the module that defines it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gravrev.config.defenses import DefensesConfig
from gravrev.config.experiment import (
    CONTROLS,
    AnalysisConfig,
    BlockingConfig,
    ExecutorConfig,
    FinetuneConfig,
    HFConfig,
    MediationConfig,
)
from gravrev.config.fields import ConfigError, build, check
from gravrev.config.organism import (
    HistoryConfig,
    ModelConfig,
    SweepConfig,
    WorldConfig,
)
from gravrev.config.regime import RegimeConfig

PRESETS = ("smoke", "tiny", "full", "sweep", "hf")


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
    regime: RegimeConfig
    analysis: AnalysisConfig
    blocking: BlockingConfig
    defenses: DefensesConfig
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

    def history_seed(self, history: str) -> int:
        """The seed of a history, by its name."""
        return self.history.seeds[self.histories.index(history)]

    def first_histories(self, n: int) -> tuple[str, ...]:
        """The first n histories (0: all): a costly design's subset, chosen before any run."""
        return self.histories[:n] if n else self.histories

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_text(self) -> str:
        """The resolved config as data/config.json holds it (what a run was made with)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def validate(self, name: str) -> None:
        """Cross-section checks, before any work: the shock regime's arms, the first-n subsets
        against the histories and seeds, the rehearsal and weight-direction arms."""
        for arm in self.regime.shock.arms:
            check(arm in self.blocking.arms, "regime.shock.arms",
                  f"{arm!r} is not one of blocking.arms {self.blocking.arms}: the shock regime "
                  "reuses the main regime's arms and lambda")
            check(arm not in CONTROLS, "regime.shock.arms",
                  f"{arm!r} is a control matched to {CONTROLS.get(arm)}'s achieved reduction in "
                  "the main regime; the shock regime runs claim arms only, at the main lambda")
        n = len(self.history.seeds)
        for key, value in (("regime.search_histories", self.regime.search_histories),
                           ("regime.shock.n_histories", self.regime.shock.n_histories),
                           ("blocking.calibration_histories",
                            self.blocking.calibration_histories),
                           ("defenses.n_histories", self.defenses.n_histories)):
            check(value <= n, key, f"must be <= the number of histories ({n})")
        n_seeds = len(self.finetune.seeds)
        check(self.defenses.n_seeds <= n_seeds, "defenses.n_seeds",
              f"must be <= the number of finetune.seeds ({n_seeds}); 0: all")
        if "rehearsal" in self.blocking.arms:
            check(self.finetune.batch_size >= 2, "blocking.arms",
                  f"rehearsal needs finetune.batch_size >= 2 (one benign row and one safety "
                  f"pair per batch), got {self.finetune.batch_size}")
            check(not self.is_hf, "blocking.arms",
                  "rehearsal needs the organism's safety phase, which hf does not have")
        if "rehearsal" in self.defenses.arms:
            check(self.finetune.batch_size >= 2, "defenses.arms",
                  f"rehearsal needs finetune.batch_size >= 2, got {self.finetune.batch_size}")
            check(not self.is_hf, "defenses.arms",
                  "rehearsal needs the organism's safety phase, which hf does not have")
        check(not (self.is_hf and self.hf.lora and "weight_direction" in self.defenses.arms),
              "defenses.arms", "weight_direction constrains full weights; hf.lora trains "
              "adapters, which theta_H has none of")


def load_presets() -> dict[str, dict]:
    text = resources.files("gravrev.config").joinpath("presets.yaml").read_text()
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
    cfg = build(Config, {"preset": preset, **merged}, "params")
    check(cfg.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
    check(0 <= cfg.cpu_threads <= 256, "cpu_threads", "must be in [0, 256] (0: torch's default)")
    return cfg


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml; raise ConfigError naming the file or field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return resolve(params)
