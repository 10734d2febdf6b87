"""Stage 06, mediation: does v_rev carry refusal, and which components carry its loss?

Per history: v_rev ablated from theta_S and added (± multiples) to theta_S and theta_H; one
unblocked fine-tuning run re-done (the stage-02 run: same batches) to patch component groups
between theta_S and theta_T; the logit lens at theta_S, theta_H and theta_T.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.behaviour.evaluate import eval_sets
from gravrev.config.load import Config
from gravrev.interp.patching import NONE, logit_lens, patch_table
from gravrev.interp.steering import reversion_norms, run_mediation
from gravrev.organism.model import load_checkpoint, prompt_text
from gravrev.organism.world import World
from gravrev.report.mediation_words import (
    CHECKPOINTS,
    change_phrase,
    lens_findings,
    patch_findings,
    tolerance,
)
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stats.mediation import HistorySummary, history_summary
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.finetune import finetune_run
from gravrev.training.loop import pick_device

TABLES = ("baseline", "sweeps", "patching", "logit_lens")


@dataclass(frozen=True)
class MediationTask:
    """The mediation and route analyses of one history, written under `out`."""

    cfg: Config
    history: str
    paths: Paths
    out: Path


@dataclass
class MediationOutput:
    history: str
    seed: int
    batch_hash: str
    acts_max_abs_diff: float  # the re-run's probe snapshots against stage 02's
    seconds: float


def mediation_task(task: MediationTask) -> MediationOutput:
    """Sweeps, patching and logit lens of one history; its tables go to task.out/*.csv."""
    cfg, h, paths = task.cfg, task.history, task.paths
    start = time.perf_counter()
    device = pick_device(cfg.device, cfg.cpu_threads)
    world = World(cfg.world)
    requests = eval_sets(world, cfg.world.n_eval)["harmful"]
    helpful, tok = load_checkpoint(paths.checkpoint("helpful", h), device)
    safe, _ = load_checkpoint(paths.checkpoint("safe", h), device)
    pos, mask = cfg.analysis.position, probe_selection(cfg, paths)
    norms = reversion_norms(read_npz(paths.acts("helpful", h))[pos],
                            read_npz(paths.acts("safe", h))[pos], mask)
    med = run_mediation(helpful, safe, tok, requests, load_v_rev(cfg, paths, h), norms,
                        cfg.mediation.scales, device, alphabet=world.alphabet)
    seed = cfg.finetune.seeds[0]
    tuned = finetune_run(cfg.finetune, make_setting(cfg, paths.history / h), seed, device,
                         judge="none", keep_model=True)
    patches = patch_table(safe, tuned.model, tok, requests, device, alphabet=world.alphabet)
    prompts = [prompt_text(r.text) for r in requests]
    lens = pd.concat([logit_lens(m, tok, prompts, device).assign(checkpoint=name)
                      for name, m in zip(CHECKPOINTS, (safe, helpful, tuned.model), strict=True)],
                     ignore_index=True)
    tables = dict(zip(TABLES, (med.baseline, med.combined(), patches, lens), strict=True))
    for name, df in tables.items():
        write_csv(task.out / f"{name}.csv", df.assign(history=h))
    saved = read_npz(paths.run("finetune", h, "unblocked", seed))
    diff = max(float(np.max(np.abs(saved[k] - tuned.acts[k]))) for k in tuned.acts)
    return MediationOutput(h, seed, tuned.batch_hash, diff, time.perf_counter() - start)


@dataclass
class MediationStageResult:
    """What chapter 06 shows; tables carry a `history` column."""

    layer: int  # the analysed layer
    baseline: pd.DataFrame  # checkpoint, refusal_rate, harmful_compliance, n
    sweeps: pd.DataFrame  # checkpoint, mode, layer, scale, rates (EVERY_LAYER: each own row)
    patching: pd.DataFrame  # patch (T->S | S->T), group, rates
    lens: pd.DataFrame  # checkpoint, layer, logp_refuse, logp_comply, margin
    runs: pd.DataFrame  # the re-run fine-tuning runs against stage 02's
    metrics: dict


def summaries(result: MediationStageResult) -> dict[str, HistorySummary]:
    """Each history's summary, computed from the result's tables."""
    return {
        h: history_summary(*(df[df["history"] == h] for df in (
            result.baseline, result.sweeps, result.patching, result.lens)), result.layer)
        for h in dict.fromkeys(result.baseline["history"])
    }


def metrics(cfg: Config, result: MediationStageResult) -> dict:
    """data/metrics/mediation.json: per history, the summary and whether the re-run reproduced."""
    runs = result.runs.set_index("history")
    return {
        "preset": cfg.preset,
        "layer": result.layer,
        "n_layer": cfg.model.n_layer,
        "position": cfg.analysis.position,
        "method": cfg.analysis.vrev_method,
        "scales": list(cfg.mediation.scales),
        "histories": {h: asdict(s) for h, s in summaries(result).items()},
        "finetune_rerun": {h: {"seed": int(r.seed), "same_batches": bool(r.same_batches),
                               "identical_activations": bool(r.acts_max_abs_diff == 0)}
                           for h, r in runs.iterrows()},
    }


def _runs_table(cfg: Config, paths: Paths, done: list[MediationOutput],
                patching: pd.DataFrame) -> pd.DataFrame:
    ref = pd.read_csv(paths.stage("finetune") / "runs.csv")
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    rows = []
    for d in done:
        key = (ref["history"] == d.history) & (ref["arm"] == "unblocked") & (ref["seed"] == d.seed)
        at_t = log[(log["history"] == d.history) & (log["arm"] == "unblocked")
                   & (log["seed"] == d.seed) & (log["step"] == cfg.finetune.steps)]
        mine = patching[(patching["history"] == d.history) & (patching["patch"] == "S->T")
                        & (patching["group"] == NONE)]
        if not key.any() or at_t.empty:
            raise ValueError(f"{paths.stage('finetune')}: no unblocked run of {d.history} with "
                             f"seed {d.seed} to T; re-run stage finetune with this config")
        expected = ref.loc[key, "batch_hash"].iloc[0]
        rows.append({"history": d.history, "seed": d.seed, "batch_hash": d.batch_hash,
                     "stage02_batch_hash": expected, "same_batches": d.batch_hash == expected,
                     "acts_max_abs_diff": d.acts_max_abs_diff,
                     "refusal_at_T": float(mine["refusal_rate"].iloc[0]),
                     "stage02_refusal_at_T": float(at_t["refusal_rate"].iloc[0])})
    return pd.DataFrame(rows)


def run(cfg: Config, paths: Paths) -> MediationStageResult:
    """Every history's analyses through the executor; tables, re-run checks and metrics."""
    if cfg.is_hf:
        raise ValueError("preset hf: the mediation stage judges with the organism's world; "
                         "it has no judged sweeps for real models yet")
    with atomic_dir(paths.stage("mediation")) as out:
        tasks = [MediationTask(cfg, h, paths, out / h) for h in cfg.histories]
        done: list[MediationOutput] = run_all(mediation_task, tasks, cfg.executor,
                                              desc="mediation and route")
        for name in TABLES:
            write_csv(out / f"{name}.csv", pd.concat(
                [pd.read_csv(out / h / f"{name}.csv") for h in cfg.histories], ignore_index=True))
        runs = _runs_table(cfg, paths, done, pd.read_csv(out / "patching.csv"))
        bad = runs[~runs["same_batches"]]
        if len(bad):
            raise RuntimeError(f"the re-run fine-tuning of {bad['history'].tolist()} saw other "
                               "batches than stage 02's: its theta_T is not stage 02's")
        write_csv(out / "runs.csv", runs)
    result = load(cfg, paths, with_metrics=False)
    write_json(paths.metrics_file("mediation"), metrics(cfg, result))
    write_json(paths.timings / "mediation.json", {d.history: d.seconds for d in done})
    return load(cfg, paths)


def load(cfg: Config, paths: Paths, with_metrics: bool = True) -> MediationStageResult:
    """Read stage 06's outputs back."""
    folder = paths.stage("mediation")
    m = read_json(paths.metrics_file("mediation")) if with_metrics else {}
    tables = [pd.read_csv(folder / f"{name}.csv") for name in TABLES]
    return MediationStageResult(cfg.layer, *tables, pd.read_csv(folder / "runs.csv"), m)


def findings(result: MediationStageResult) -> list[str]:
    """The chapter's conclusions in plain words, computed from the tables, over histories."""
    s = summaries(result)
    rows, layer = list(s.values()), result.layer
    tol = tolerance(min(x.n for x in rows))
    safe = np.array([x.refusal_safe for x in rows])
    helpful = np.array([x.refusal_helpful for x in rows])
    out = []
    if (safe <= tol).all():
        out.append(f"theta_S refuses {safe.mean():.1f}% of held-out harmful requests (mean over "
                   f"{len(rows)} histories): there is almost no refusal to remove, so the "
                   "ablation and patching tests below cannot show anything carrying it.")
    ablated = change_phrase(safe, [x.ablated_at_layer for x in rows], tol)
    out.append(f"Ablating v_rev (its layer-{layer} row, projected out of the embeddings and "
               f"after every block) from theta_S's residual stream {ablated}.")
    sw = result.sweeps
    one_row = sw[(sw["mode"] == "ablate") & (sw["layer"] >= 0)]
    per_row = one_row.groupby("layer")["refusal_rate"].mean()
    if len(per_row) > 1:
        out.append("With one row of v_rev removed at a time, theta_S refuses " + ", ".join(
            f"{v:.1f}% (layer {k})" for k, v in per_row.items()) + f" (means over {len(rows)} "
            "histories).")
    ablated = change_phrase(safe, [x.ablated_all_layers for x in rows], tol)
    out.append(f"Ablating each block's own row of v_rev after that block {ablated}.")
    scales = sorted(rows[0].add_safe)
    for name, start, key in (("theta_S", safe, "add_safe"), ("theta_H", helpful, "add_helpful")):
        ends = dict.fromkeys(x for x in (scales[0], scales[-1]) if x != 0)
        parts = [f"at {x:+g} x it {change_phrase(start, [getattr(r, key)[x] for r in rows], tol)}"
                 for x in ends]
        if parts:
            out.append(f"Adding v_rev to {name} after block {layer} (in units of |mean h_H - "
                       f"mean h_S| there): " + "; ".join(parts) + ".")
    n_layer = int(result.lens["layer"].max()) + 1
    return out + patch_findings(s, tol) + lens_findings(s, n_layer, layer)
