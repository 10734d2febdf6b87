"""Validation at the edge: params and every input checked before any stage touches data/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gravrev.config.fields import check
from gravrev.config.load import Config, load_config


def check_organism(cfg: Config) -> None:
    """Cross-field checks of the organism presets that single fields cannot make."""
    check(cfg.layer < cfg.model.n_layer, "analysis.layer",
           f"{cfg.layer} is out of range; the model has {cfg.model.n_layer} layers")
    check(max(cfg.finetune.early_steps, default=0) <= cfg.finetune.steps,
           "finetune.early_steps", "every early step must be <= finetune.steps")
    check(cfg.blocking.pool_size <= 4096, "blocking.pool_size", "must be <= 4096")


def check_hf(cfg: Config) -> Config:
    """Every hf input (paths, JSONL, checkpoint configs); the model shape from the checkpoint."""
    from gravrev.settings.hf.inputs import checkpoint_arch, validate_inputs

    check(not cfg.finetune.mixed_control, "finetune.mixed_control",
           "must be false for hf: the mixed control needs the safety phase's data")
    w, s = cfg.hf.witness_dir, cfg.hf.safe_dir
    if w and s:
        check(Path(w).expanduser().resolve() != Path(s).expanduser().resolve(),
               "hf.witness_dir", f"is the same directory as hf.safe_dir ({s}); v_rev would be 0")
    if cfg.hf.judge_dir is not None:
        check(Path(cfg.hf.judge_dir).expanduser().is_dir(), "hf.judge_dir",
               f"{cfg.hf.judge_dir}: no such directory")
    validate_inputs(cfg)
    arch = checkpoint_arch(Path(s).expanduser())
    model = dataclasses.replace(cfg.model, n_layer=arch["n_layer"], n_embd=arch["hidden_size"])
    out = dataclasses.replace(cfg, model=model)
    check(out.layer < out.model.n_layer, "analysis.layer",
           f"{out.layer} is out of range; the checkpoints have {out.model.n_layer} layers")
    return out


def validated_config(path: str | Path = "params.yaml") -> Config:
    """The config in force, every input checked: what every stage and notebook runs on."""
    cfg = load_config(path)
    if cfg.is_hf:
        return check_hf(cfg)
    check_organism(cfg)
    return cfg
