"""Validation at the edge: params and every input checked before any stage touches data/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gravrev.config.fields import check
from gravrev.config.load import Config, load_config


def check_world(cfg: Config) -> None:
    """The world's split: training sequences, and held-out halves that hold a distinct
    sequence for every probe (first half) and every evaluation prompt (second half)."""
    from gravrev.organism.world import split_sequences

    w = cfg.world
    train, held = split_sequences(w)
    shape = (f"{w.n_symbols} symbols, lengths {w.seq_len_min}..{w.seq_len_max}, "
             f"heldout_every {w.heldout_every}")
    check(len(train) >= 1, "world.heldout_every", f"{shape}: no training sequences")
    for half, n, field in ((held[0::2], w.n_probes, "n_probes"), (held[1::2], w.n_eval, "n_eval")):
        check(len(half) >= n, "world.heldout_every",
              f"{shape}: {len(held)} held-out sequences, {len(half)} for world.{field} = {n}; "
              "each needs one of its own (more symbols or longer sequences, or a smaller "
              "heldout_every)")


def check_organism(cfg: Config) -> None:
    """Cross-field checks of the organism presets that single fields cannot make."""
    check(cfg.layer < cfg.model.n_layer, "analysis.layer",
           f"{cfg.layer} is out of range; the model has {cfg.model.n_layer} layers")
    check(max(cfg.finetune.early_steps, default=0) <= cfg.finetune.steps,
           "finetune.early_steps", "every early step must be <= finetune.steps")
    check(cfg.blocking.pool_size <= 4096, "blocking.pool_size", "must be <= 4096")
    for key in ("helpful_steps", "safe_steps", "seeds"):
        check(len(getattr(cfg.sweep, key)) >= 1, f"sweep.{key}",
              "is empty; the sweep stage needs at least one value")
    check_world(cfg)


def check_device(cfg: Config) -> None:
    """`device: cuda` only where torch sees a CUDA device."""
    if cfg.device != "cuda":
        return
    import torch

    check(torch.cuda.is_available(), "device",
          "cuda, but torch sees no CUDA device here (use auto or cpu)")


def check_executor(cfg: Config) -> None:
    """A Ray cluster's address resolves and answers within a timeout."""
    if cfg.executor.kind != "ray" or cfg.executor.address is None:
        return
    from gravrev.runtime.executor import address_problem

    problem = address_problem(cfg.executor.address)
    check(problem is None, "executor.address", str(problem))


def check_judge(cfg: Config) -> None:
    """The judge model loads and judges one probe (a broken judge_dir fails here, not after
    the witness has generated)."""
    from gravrev.behaviour.judges import ClassifierJudge
    from gravrev.config.fields import ConfigError
    from gravrev.settings.hf.inputs import read_jsonl

    path = Path(cfg.hf.judge_dir).expanduser()
    probe = read_jsonl(cfg.hf.harmful_probes_jsonl, ("prompt",))[0]
    try:
        verdict = ClassifierJudge(path).judge([probe], ["sure"])
    except Exception as e:  # any failure to load or run is the judge's, named as such
        raise ConfigError(f"hf.judge_dir: {path}: the judge does not load and run "
                          f"({type(e).__name__}: {e})") from None
    check(len(verdict) == 1, "hf.judge_dir", f"{path}: the judge gave no verdict on one probe")


def check_hf(cfg: Config, deep: bool = False) -> Config:
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
    if deep and cfg.hf.judge_dir is not None:
        check_judge(cfg)
    arch = checkpoint_arch(Path(s).expanduser())
    model = dataclasses.replace(cfg.model, n_layer=arch["n_layer"], n_embd=arch["hidden_size"])
    out = dataclasses.replace(cfg, model=model)
    check(out.layer < out.model.n_layer, "analysis.layer",
           f"{out.layer} is out of range; the checkpoints have {out.model.n_layer} layers")
    return out


def validated_config(path: str | Path = "params.yaml", deep: bool = False) -> Config:
    """The config in force, every input checked: what every stage and notebook runs on.

    `deep` (the config stage) also reaches the Ray cluster and loads and runs the judge."""
    cfg = load_config(path)
    check_device(cfg)
    if deep:
        check_executor(cfg)
    if cfg.is_hf:
        return check_hf(cfg, deep)
    check_organism(cfg)
    return cfg
