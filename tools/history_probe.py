"""Probe the safety phase's shape off the pipeline: can any S keep the history's shape and leave
the fine-tuning regime room?

    python tools/history_probe.py --run RUN_DIR --out OUT [--steps 300,900] [--lrs 5e-4,1.5e-3]
                                  [--replays 0.5] [--ft-lrs 1e-4,2e-4,5e-4]

RUN_DIR is a finished run (its params.yaml and data/history: θ_P and each θ_H). For every S
variant (steps x lr x replay) each of the first `regime.search_histories` histories trains S
from its own θ_H with its own seed, then one unblocked fine-tuning run per fine-tuning lr (the
main regime's warmup and new-task share, to the longest horizon). Both are judged with the
pipeline's own definitions: the pre-registered shape checks (chapter 01) and the regime rule
(chapter 02), each horizon read off one run. Writes OUT/shapes.csv, OUT/log.csv and
OUT/candidates.csv and prints, per variant, whether every history kept its shape and which
candidates meet the rule. It changes nothing in RUN_DIR; nothing it finds enters the book.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gravrev.config.fields import ConfigError  # noqa: E402
from gravrev.config.validate import validated_config  # noqa: E402
from gravrev.organism.shape import shape_checks  # noqa: E402
from gravrev.runtime.executor import run_all  # noqa: E402
from gravrev.stages.finetune.grid import cell_config  # noqa: E402
from gravrev.stages.finetune.regime import candidates, judged  # noqa: E402
from gravrev.store.paths import Paths  # noqa: E402
from gravrev.training.tasks import (  # noqa: E402
    FinetuneTask,
    HistoryTask,
    finetune_task,
    history_run,
)


def floats(text: str, option: str) -> list[float]:
    """A comma-separated list of numbers, each once, in the order given."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{option}: {text!r} is not a comma-separated list of numbers") from None
    return list(dict.fromkeys(values))


def variant_name(steps: int, lr: float, replay: float) -> str:
    return f"S{steps}_lr{lr:g}_replay{replay:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run's root folder")
    ap.add_argument("--out", type=Path, required=True, help="where the probe writes")
    ap.add_argument("--steps", default="", help="S steps (default: the run's)")
    ap.add_argument("--lrs", default="", help="S learning rates (default: the run's)")
    ap.add_argument("--replays", default="", help="S replay shares (default: the run's)")
    ap.add_argument("--ft-lrs", default="", help="fine-tuning lrs (default: regime.lrs)")
    args = ap.parse_args(argv)

    params = args.run / "params.yaml"
    if not params.is_file():
        raise SystemExit(f"--run: {params} is missing (not a gravrev run)")
    try:
        cfg = validated_config(params)
    except ConfigError as err:
        raise SystemExit(f"--run: {params}: {err}") from None
    if cfg.is_hf:
        raise SystemExit("--run: the hf preset has no organism history to retrain")
    paths = Paths(args.run)
    if (not paths.resolved_config.is_file()
            or paths.resolved_config.read_text() != cfg.resolved_text()):
        raise SystemExit(f"--run: {params} differs from the run's {paths.resolved_config} "
                         "(or there is none): run dvc repro first")
    hc, fc = cfg.history, cfg.finetune
    steps = [int(s) for s in floats(args.steps, "--steps")] or [hc.safe.steps]
    lrs = floats(args.lrs, "--lrs") or [hc.safe.lr]
    replays = floats(args.replays, "--replays") or [hc.safe_replay]
    ft_lrs = floats(args.ft_lrs, "--ft-lrs") or list(cfg.regime.lrs)
    if cfg.regime.search_histories == 0:
        raise SystemExit("--run: regime.search_histories is 0: there is no history to probe")
    searched = list(zip(cfg.histories, hc.seeds, strict=True))[: cfg.regime.search_histories]
    for name, _ in searched:
        for need in (paths.pretrained, paths.checkpoint("helpful", name)):
            if not need.is_dir():
                raise SystemExit(f"--run: {need} is missing (run the history stage first)")
    variants = {}  # name -> the history config with that safety phase
    for s, lr, replay in itertools.product(steps, lrs, replays):
        vhist = dataclasses.replace(hc, safe=dataclasses.replace(hc.safe, steps=s, lr=lr),
                                    safe_replay=replay)
        try:
            vhist.safe.validate("history.safe")
            vhist.validate("history")
        except ConfigError as err:
            raise SystemExit(f"--steps/--lrs/--replays: S {s} steps, lr {lr:g}, replay "
                             f"{replay:g}: {err}") from None
        variants[variant_name(s, lr, replay)] = vhist
    if not all(0 < lr < 1 for lr in ft_lrs):
        raise SystemExit(f"--ft-lrs: every learning rate must be in (0, 1), got {ft_lrs}")

    histories = [HistoryTask(dataclasses.replace(cfg, history=vhist), name, seed, hc.helpful,
                             vhist.safe, paths.pretrained, args.out / variant / name,
                             paths.checkpoint("helpful", name))
                 for (variant, vhist), (name, seed) in itertools.product(variants.items(),
                                                                         searched)]
    made = run_all(history_run, histories, cfg.executor, desc="S variants")
    behaviour = pd.concat([m.behaviour.assign(variant=t.out.parent.name)
                           for t, m in zip(histories, made, strict=True)], ignore_index=True)
    shapes = pd.concat([shape_checks(g, hc.checks).assign(variant=v)
                        for v, g in behaviour.groupby("variant", sort=False)], ignore_index=True)

    runs = [FinetuneTask(cell_config(cfg, ft_lr, fc.warmup, fc.new_task_fraction), t.name,
                         t.out, fc.seeds[0], "probe", t.out / f"unblocked_lr{ft_lr:g}.npz")
            for t in histories for ft_lr in ft_lrs]
    done = run_all(finetune_task, runs, cfg.executor, desc="fine-tuning")
    log = pd.concat([d.log.assign(variant=t.checkpoints.parent.name, lr=t.cfg.finetune.lr,
                                  warmup=t.cfg.finetune.warmup,
                                  share=t.cfg.finetune.new_task_fraction)
                     for t, d in zip(runs, done, strict=True)], ignore_index=True)
    table = pd.concat([judged(cfg, candidates(cfg, g)).assign(variant=v)
                       for v, g in log.groupby("variant", sort=False)], ignore_index=True)

    args.out.mkdir(parents=True, exist_ok=True)
    shapes.to_csv(args.out / "shapes.csv", index=False)
    log.to_csv(args.out / "log.csv", index=False)
    table.to_csv(args.out / "candidates.csv", index=False)
    kept = shapes.groupby(["variant", "history"])["passed"].all().unstack()
    print("Shape kept (every pre-registered check) per history:\n", kept.to_string(), sep="")
    meeting = table[table["meets_rule"]]
    print(f"\nCandidates meeting the regime rule: {len(meeting)} of {len(table)}")
    if len(meeting):
        shown = meeting[["variant", "lr", "warmup", "share", "T", "worst_benign_drop",
                         "worst_new_task", "nonrefusal", "harmful"]]
        print(shown.round({"worst_benign_drop": 1, "worst_new_task": 1, "nonrefusal": 1,
                           "harmful": 1}).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
