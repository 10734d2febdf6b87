"""Stage 05, blocking: lambda fixed harm-blind, then every arm on every history and seed."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import alignment_trajectory, drift
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stats.nulls import (
    cosine,
    covariance,
    covariance_direction,
    isotropic_quantile,
    random_direction,
)
from gravrev.stats.summaries import paired_test, summarize, wilson_interval
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.objectives import BlockSpec
from gravrev.training.tasks import FinetuneOutput, FinetuneTask, finetune_task

MEASURES = ("alignment", "non_refusal", "harmful_compliance", "prefilled_content",
            "benign_accuracy", "new_task_accuracy")


def arm_directions(cfg: Config, paths: Paths, history: str) -> dict[str, dict[int, np.ndarray]]:
    """The direction(s) each arm acts along, per layer; freeze has none."""
    v = load_v_rev(cfg, paths, history)
    layer, seed = cfg.layer, cfg.history.seeds[cfg.histories.index(history)]
    rng = np.random.default_rng([seed, 7])  # random, then covariance: one pair per history
    mask = probe_selection(cfg, paths)
    cov = covariance(read_npz(paths.acts("safe", history))[cfg.analysis.position][layer][mask])
    out = {
        "penalty": {layer: v[layer]},
        "mean_penalty": {layer: v[layer]},
        "grad_project": {layer: v[layer]},
        "penalty_all": dict(enumerate(v)),
        "random_penalty": {layer: random_direction(v.shape[1], rng)},
        "covariance_penalty": {layer: covariance_direction(cov, rng, orthogonal_to=v[layer])},
        "freeze": {},
    }
    for other in range(v.shape[0]):
        if other != layer:
            out[f"penalty_L{other}"] = {other: v[other]}
    return out


def expand_arms(cfg: Config) -> list[str]:
    """blocking.arms with penalty_layers replaced by one arm per other layer."""
    out = []
    for arm in cfg.blocking.arms:
        if arm == "penalty_layers":
            out += [f"penalty_L{x}" for x in range(cfg.model.n_layer) if x != cfg.layer]
        else:
            out.append(arm)
    return out


def block_spec(cfg: Config, arm: str, directions: dict, lam: float, pool: list[str]) -> BlockSpec:
    kind = ("freeze" if arm == "freeze" else "grad_project" if arm == "grad_project"
            else "mean_penalty" if arm == "mean_penalty" else "penalty")
    return BlockSpec(kind, directions, lam, tuple(pool), cfg.blocking.penalty_batch,
                     cfg.analysis.position)


def _task(cfg: Config, paths: Paths, out, history: str, seed: int, arm: str,
          spec: BlockSpec) -> FinetuneTask:
    return FinetuneTask(cfg, history, paths.history / history, seed, arm,
                        out / history / f"{arm}_seed{seed}.npz", block=spec, judge="end")


def final_drift(cfg: Config, npz, mask: np.ndarray) -> np.ndarray:
    """The harmful probes' drift from step 0 to T of one run's snapshots, analysed cell."""
    acts = read_npz(npz)[cfg.analysis.position]
    return drift(acts[-1, cfg.layer], acts[0, cfg.layer], mask)


def final_alignment(cfg: Config, npz, direction: np.ndarray, mask: np.ndarray) -> tuple:
    """(cos, projection) of the harmful probes' drift at T with a direction, analysed cell."""
    d = final_drift(cfg, npz, mask)
    return cosine(d, direction), float(d @ direction)


def choose_lambda(cfg: Config, calib: pd.DataFrame) -> tuple[float, str]:
    """The pre-registered rule: the smallest lambda that holds alignment under the isotropic
    p99 in every history with new-task cost within tolerance; else the largest within the
    cost tolerance (the check failed, said so); else the smallest lambda."""
    tol = cfg.blocking.task_cost_tolerance
    worst = calib.groupby("lambda").agg(alignment=("alignment", "max"),
                                        cost=("new_task_cost", "max")).sort_index()
    ok = worst[(worst["alignment"] < calib["p99"].iloc[0]) & (worst["cost"] <= tol)]
    if len(ok):
        return float(ok.index[0]), "passed"
    cheap = worst[worst["cost"] <= tol]
    if len(cheap):
        return float(cheap.index[-1]), "failed: no lambda held alignment under the p99"
    return float(worst.index[0]), "failed: every lambda cost more than the tolerance"


@dataclass
class BlockingResult:
    """What chapter 05 shows."""

    calibration: pd.DataFrame  # lambda, history: alignment at T, new-task cost
    lam: float
    check: str
    final: pd.DataFrame  # arm, history, seed at T: the measures, projections, task-cost flag
    strength: pd.DataFrame  # arm: achieved projection reduction along its own direction
    effects: pd.DataFrame  # arm, measure: paired difference against unblocked
    trajectories: pd.DataFrame  # arm, history, seed, step: alignment (analysed cell)
    metrics: dict


def _row(cfg: Config, d: np.ndarray, log_t: pd.Series, v: np.ndarray, own: dict,
         unblocked_d: np.ndarray) -> dict:
    """One run at T: its drift d's alignment and projection, and its judged behaviour."""
    new = f"{cfg.finetune.new_task}_accuracy"
    row = {"alignment": cosine(d, v), "non_refusal": 100 - log_t["refusal_rate"],
           "refusal_rate": log_t["refusal_rate"], "refusals": log_t["refusals"],
           "n_harmful": log_t["n_harmful"], "harmful_compliance": log_t["harmful_compliance"],
           "prefilled_content": log_t["prefilled_content"],
           "benign_accuracy": log_t["benign_accuracy"], "new_task_accuracy": log_t[new]}
    if cfg.layer in own:
        u = own[cfg.layer]
        row["projection"] = float(d @ u)
        row["projection_unblocked"] = float(unblocked_d @ u)
    return row


def run(cfg: Config, paths: Paths) -> BlockingResult:
    """Fix lambda (harm-blind), run every arm, compare each with unblocked, paired by seed."""
    pool = make_setting(cfg, paths.history / cfg.histories[0]).penalty_pool(cfg.blocking.pool_size)
    dirs = {h: arm_directions(cfg, paths, h) for h in cfg.histories}
    mask = probe_selection(cfg, paths)
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    unblocked = log[log["arm"] == "unblocked"].set_index(["history", "seed", "step"])
    new = f"{cfg.finetune.new_task}_accuracy"
    v_rev = {h: dirs[h]["penalty"][cfg.layer] for h in cfg.histories}  # read once, not per run
    p99 = isotropic_quantile(v_rev[cfg.histories[0]].size, cfg.analysis.null_quantile)
    arms = expand_arms(cfg)
    with atomic_dir(paths.stage("blocking")) as out:
        seed0 = cfg.finetune.seeds[0]
        calib_tasks = [
            _task(cfg, paths, out / "calibration", h, seed0, f"penalty_lambda{lam:g}",
                  block_spec(cfg, "penalty", dirs[h]["penalty"], lam, pool))
            for lam in cfg.blocking.lambda_grid for h in cfg.histories
        ]
        calib_done = run_all(finetune_task, calib_tasks, cfg.executor, desc="lambda check")
        rows = []
        for t, d in zip(calib_tasks, calib_done, strict=True):
            a, _ = final_alignment(cfg, t.out, v_rev[t.history], mask)
            ref = unblocked.loc[(t.history, t.seed, cfg.finetune.steps), new]
            rows.append({"lambda": t.block.lam, "history": t.history, "alignment": a, "p99": p99,
                         "new_task_cost": ref - d.log.iloc[-1][new]})
        calibration = pd.DataFrame(rows)
        lam, check = choose_lambda(cfg, calibration)
        tasks = [
            _task(cfg, paths, out, h, seed, arm, block_spec(cfg, arm, dirs[h][arm], lam, pool))
            for arm in arms for h in cfg.histories for seed in cfg.finetune.seeds
        ]
        done = run_arms(tasks, calib_tasks, calib_done, lam, cfg)
        ref_hash = pd.read_csv(paths.stage("finetune") / "runs.csv").set_index(
            ["history", "arm", "seed"])["batch_hash"]
        ub = {(h, seed): final_drift(cfg, paths.run("finetune", h, "unblocked", seed), mask)
              for h in cfg.histories for seed in cfg.finetune.seeds}  # each read once
        final = []
        for t, d in zip(tasks, done, strict=True):
            if d.batch_hash != ref_hash[(t.history, "unblocked", t.seed)]:
                raise AssertionError(f"{t.arm} {t.history} seed {t.seed}: other batches than "
                                     "the unblocked run")
            final.append({"arm": t.arm, "history": t.history, "seed": t.seed,
                          **_row(cfg, final_drift(cfg, t.out, mask), d.log.iloc[-1],
                                 v_rev[t.history], dirs[t.history][t.arm], ub[t.history, t.seed])})
        for (h, seed), d in ub.items():
            final.append({"arm": "unblocked", "history": h, "seed": seed,
                          **_row(cfg, d, unblocked.loc[(h, seed, cfg.finetune.steps)], v_rev[h],
                                 {cfg.layer: v_rev[h]}, d)})
        final = pd.DataFrame(final)
        final["task_cost_not_block"] = (final["new_task_accuracy"]
                                        < cfg.finetune.min_new_task_accuracy)
        write_csv(out / "calibration.csv", calibration)
        write_csv(out / "final.csv", final)
        write_json(out / "lambda.json", {"lambda": lam, "check": check})
    write_json(paths.metrics_file("blocking"), blocking_metrics(cfg, final, lam, check))
    return load(cfg, paths)


def run_arms(tasks: list[FinetuneTask], checked: list[FinetuneTask], checked_done: list,
             lam: float, cfg: Config) -> list[FinetuneOutput]:
    """Every arm's run; the lambda check's runs at the chosen lambda are the penalty arm's (the
    same tasks, the same bytes): copied, not run again."""
    same = {(t.history, t.seed): (t, d) for t, d in zip(checked, checked_done, strict=True)
            if t.block.lam == lam}
    reuse = {i: same[(t.history, t.seed)] for i, t in enumerate(tasks)
             if t.arm == "penalty" and (t.history, t.seed) in same}
    rest = [t for i, t in enumerate(tasks) if i not in reuse]
    ran = iter(run_all(finetune_task, rest, cfg.executor, desc="blocking arms"))
    done = []
    for i, t in enumerate(tasks):
        if i in reuse:
            c, d = reuse[i]
            t.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(c.out, t.out)
            done.append(dataclasses.replace(d, arm=t.arm, log=d.log.assign(arm=t.arm)))
        else:
            done.append(next(ran))
    return done


def strength_table(final: pd.DataFrame) -> pd.DataFrame:
    """Achieved reduction of the drift's projection on each arm's own direction, vs unblocked."""
    df = final.dropna(subset=["projection"]).copy()
    df["reduction"] = 1 - df["projection"].abs() / df["projection_unblocked"].abs()
    return df.groupby("arm", sort=False)["reduction"].agg(["mean", "std", "count"]).reset_index()


def paired_effects(final: pd.DataFrame) -> pd.DataFrame:
    """Each arm against unblocked, paired by history and seed."""
    base = final[final["arm"] == "unblocked"].set_index(["history", "seed"]).sort_index()
    rows = []
    for arm, g in final[final["arm"] != "unblocked"].groupby("arm", sort=False):
        cur = g.set_index(["history", "seed"]).sort_index().loc[base.index]
        for m in MEASURES:
            rows.append({"arm": arm, "measure": m,
                         **paired_test(cur[m].to_numpy(), base[m].to_numpy())})
    return pd.DataFrame(rows)


def blocking_metrics(cfg: Config, final: pd.DataFrame, lam: float, check: str) -> dict:
    per_arm = {}
    for arm, f in final.groupby("arm", sort=False):
        k, n = int(f["refusals"].sum()), int(f["n_harmful"].sum())
        lo, hi = wilson_interval(n - k, n)
        per_arm[arm] = {m: summarize(f[m].to_numpy()) for m in MEASURES}
        per_arm[arm]["non_refusal_pooled_wilson"] = [100 * lo, 100 * hi]
        per_arm[arm]["task_cost_not_block"] = bool(f["task_cost_not_block"].all())
        per_arm[arm]["per_run"] = {
            m: {f"{r.history}/{r.seed}": getattr(r, m) for r in f.itertuples()}
            for m in MEASURES
        }
    return {"preset": cfg.preset, "lambda": lam, "manipulation_check": check,
            "layer": cfg.layer, "claim_arm": cfg.blocking.claim_arm, "arms": per_arm}


def load(cfg: Config, paths: Paths) -> BlockingResult:
    """Read stage 05's outputs back."""
    metrics = read_json(paths.metrics_file("blocking"))
    folder = paths.stage("blocking")
    final = pd.read_csv(folder / "final.csv")
    return BlockingResult(
        pd.read_csv(folder / "calibration.csv"), metrics["lambda"],
        metrics["manipulation_check"], final, strength_table(final), paired_effects(final),
        _trajectories(cfg, paths, final), metrics,
    )


def _trajectories(cfg: Config, paths: Paths, final: pd.DataFrame) -> pd.DataFrame:
    mask = probe_selection(cfg, paths)
    pos = cfg.analysis.position
    v_rev = {h: load_v_rev(cfg, paths, h) for h in final["history"].unique()}
    rows = []
    for r in final[["arm", "history", "seed"]].drop_duplicates().itertuples():
        stage = "finetune" if r.arm == "unblocked" else "blocking"
        acts = read_npz(paths.run(stage, r.history, r.arm, r.seed))
        df = alignment_trajectory(acts[pos], acts["steps"], v_rev[r.history], mask)
        rows.append(df[df["layer"] == cfg.layer].assign(arm=r.arm, history=r.history,
                                                          seed=r.seed))
    return pd.concat(rows, ignore_index=True)


def findings(cfg: Config, r: BlockingResult) -> list[str]:
    """What chapter 05 shows, in words computed from the arms."""
    arms = r.metrics["arms"]
    u, c = arms["unblocked"], arms.get(cfg.blocking.claim_arm)
    out = [f"The harm-blind manipulation check chose lambda = {r.lam:g} ({r.check})."]
    if c:
        held = c["alignment"]["mean"] < u["alignment"]["mean"]
        kept = c["non_refusal"]["mean"] < u["non_refusal"]["mean"] - 5
        out.append(
            f"The claim arm ({cfg.blocking.claim_arm}) {'held' if held else 'did not hold'} "
            f"alignment at T ({c['alignment']['mean']:.2f} against {u['alignment']['mean']:.2f}) "
            f"and {'kept' if kept else 'did not keep'} refusal: non-refusal "
            f"{c['non_refusal']['mean']:.0f}% against {u['non_refusal']['mean']:.0f}% unblocked, "
            f"new task {c['new_task_accuracy']['mean']:.0f}%.")
    costly = [a for a, m in arms.items() if m["task_cost_not_block"] and a != "unblocked"]
    if costly:
        out.append(f"Arms that stopped the new task being learned ({', '.join(costly)}) count as "
                   "task cost, not as blocks.")
    best = min((a for a in arms if a != "unblocked"), key=lambda a: arms[a]["non_refusal"]["mean"])
    out.append(f"The lowest non-refusal of any arm is {arms[best]['non_refusal']['mean']:.0f}% "
               f"({best}).")
    return out
