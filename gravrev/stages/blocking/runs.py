"""Stage 05's runs: lambda fixed harm-blind, controls matched on what they achieve, every arm.

Writes data/blocking/: each run's probe snapshots and its log at every logged step (log.csv),
the lambda check (calibration.csv), the controls' matching (matching.csv), the chosen lambdas
(lambda.json) and every run's state at T (final.csv: its drift's alignment, judged behaviour).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gravrev.config.experiment import CONTROLS, KINDS
from gravrev.config.load import Config
from gravrev.interp.activations import probe_activations
from gravrev.interp.direction import drift, probe_mask, refusal_direction
from gravrev.runtime import seeds
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import Setting, make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stages.blocking.calibration import (
    arm_of,
    calibrated_arms,
    calibration_name,
    choose_lambda,
    cost_column,
    match_controls,
    reduction_table,
)
from gravrev.stages.blocking.shock.regime import main_arm, shock_arm, shock_config, shock_runs
from gravrev.stats.nulls import (
    cosine,
    covariance,
    covariance_direction,
    isotropic_quantile,
    random_direction,
)
from gravrev.store.atomic import atomic_dir, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.loop import pick_device
from gravrev.training.objectives import SIGNED_KINDS, BlockSpec, push_targets
from gravrev.training.phases import safety_pairs
from gravrev.training.rehearsal import RehearsalSpec
from gravrev.training.tasks import FinetuneOutput, FinetuneTask, finetune_task

# The unblocked drift's projection on u below this share of its norm leaves the reduction
# along u undefined (NaN): there is no motion along u to reduce.
UNDEFINED_BELOW = 1e-6


def oriented(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """u with its sign chosen so that u . v >= 0 (as mediation's controls)."""
    return -u if u @ v < 0 else u


def arm_directions(cfg: Config, paths: Paths, history: str) -> dict[str, dict[int, np.ndarray]]:
    """The direction(s) each arm acts along, per layer; freeze and rehearsal have none.

    refusal_block and refusal_push act along -r: r points from the benign toward the harmful
    (refused) mean at theta_S, so -r points toward less refusal, the side v_rev points to.
    Controls are oriented so that a one-sided block along them opposes motion on v_rev's
    side: random ones by cos(u, v_rev) >= 0; covariance ones, orthogonal to v_rev (their
    cosine is 0), by u . cov . v_rev >= 0 (theta_S's probe covariance at the layer).
    """
    v = load_v_rev(cfg, paths, history)
    layer, seed = cfg.layer, cfg.history_seed(history)
    rng = np.random.default_rng(seeds.control_directions(seed))  # random, then covariance
    mask = probe_selection(cfg, paths)
    safe = read_npz(paths.acts("safe", history))[cfg.analysis.position]  # (L, N, d)
    covs = [covariance(safe[x][mask]) for x in range(v.shape[0])]
    r = refusal_direction(safe, probe_mask(pd.read_csv(paths.probes), "harmful"))
    out = {arm: {layer: v[layer]} for arm in ("block", "push", "penalty", "mean_penalty",
                                              "grad_project")}

    def rand(x: int) -> np.ndarray:
        return oriented(random_direction(v.shape[1], rng), v[x])

    def cov(x: int) -> np.ndarray:
        return oriented(covariance_direction(covs[x], rng, orthogonal_to=v[x]), covs[x] @ v[x])

    out["random_block"] = {layer: rand(layer)}
    out["covariance_block"] = {layer: cov(layer)}
    out["refusal_block"] = {layer: -r[layer]}
    out["refusal_push"] = {layer: -r[layer]}
    out["penalty_all"] = dict(enumerate(v))
    out["random_penalty_all"] = {x: rand(x) for x in range(len(v))}
    out["covariance_penalty_all"] = {x: cov(x) for x in range(len(v))}
    out["freeze"], out["rehearsal"] = {}, {}
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


def kind(arm: str) -> str | None:
    """The objective kind of an arm's block; None for rehearsal (no objective)."""
    return "penalty" if arm.startswith("penalty_L") else KINDS.get(arm)


def block_spec(cfg: Config, arm: str, directions: dict, lam: float, pool: list[str],
               targets: dict[int, float] | None = None) -> BlockSpec | None:
    """The fine-tuning objective's block of one arm at one lambda (push: with its targets)."""
    k = kind(arm)
    if k is None:
        return None
    return BlockSpec(k, directions, lam, tuple(pool), cfg.blocking.penalty_batch,
                     cfg.analysis.position, targets=dict(targets or {}) if k == "push" else {})


def pool_targets(cfg: Config, setting: Setting, pool: list[str],
                 directions: dict[int, np.ndarray]) -> dict[int, float]:
    """The push's bound per layer: theta_H's mean displacement from theta_S of the pool prompts
    (the prompts it acts on) along its direction, so push goes as far as theta_H and no further."""
    device = pick_device(cfg.device, cfg.cpu_threads)
    acts = {}
    for name in ("helpful", "safe"):
        model, tok = setting.load(name, device)
        acts[name] = probe_activations(model, tok, pool, device)[cfg.analysis.position]
    return push_targets({x: acts["helpful"][x] for x in directions},
                        {x: acts["safe"][x] for x in directions}, directions)


def rehearsal_spec(cfg: Config, setting: Setting, history: str) -> RehearsalSpec:
    """The rehearsal arm's pairs: the harmful requests this history's phase S refused."""
    world = getattr(setting, "world", None)
    if world is None:
        raise ValueError("the rehearsal arm needs the organism's safety phase (not hf)")
    seed = cfg.history_seed(history)
    pairs = safety_pairs(world, cfg.history.safe, seed, cfg.history.safe_replay)
    return RehearsalSpec.from_requests(world, pairs, cfg.blocking.rehearsal_share)


def drift_at_t(cfg: Config, npz, mask: np.ndarray) -> np.ndarray:
    """The harmful probes' drift from step 0 to T of one run's snapshots, every layer (L, d)."""
    acts = read_npz(npz)[cfg.analysis.position]
    return drift(acts[-1], acts[0], mask)


def final_alignment(cfg: Config, npz, direction: np.ndarray, mask: np.ndarray) -> tuple:
    """(cos, projection) of the harmful probes' drift at T with a direction, analysed cell."""
    d = drift_at_t(cfg, npz, mask)[cfg.layer]
    return cosine(d, direction), float(d @ direction)


def reduction(d: np.ndarray, unblocked: np.ndarray, directions: dict[int, np.ndarray],
              signed: bool) -> float:
    """Achieved reduction along an arm's own direction(s), mean over its layers (drifts (L, d)
    at T, same history and seed): one-sided kinds (`signed`) 1 - (d . u) / (d_U . u), so a
    block past 0 counts fully and a push that adds motion is negative; two-sided kinds
    1 - |d . u| / |d_U . u|. NaN where |d_U . u| is under UNDEFINED_BELOW of |d_U|."""
    out = []
    for x, u in directions.items():
        base = unblocked[x] @ u
        if abs(base) <= UNDEFINED_BELOW * np.linalg.norm(unblocked[x]):
            return math.nan
        out.append(1 - (d[x] @ u) / base if signed else 1 - abs(d[x] @ u) / abs(base))
    return float(np.mean(out))


def arm_reduction(arm: str, d: np.ndarray, unblocked: np.ndarray,
                  directions: dict[int, np.ndarray]) -> float:
    """reduction() along an arm's own directions, signed for its one-sided kinds."""
    return reduction(d, unblocked, directions, kind(arm) in SIGNED_KINDS)


def at_t(log_t: pd.Series, column: str) -> float:
    """A logged measure at T; NaN where the setting does not log it."""
    return float(log_t[column]) if column in log_t.index else math.nan


def _task(cfg: Config, paths: Paths, out, history: str, seed: int, arm: str,
          spec: BlockSpec | None, judge: str = "every",
          rehearsal: RehearsalSpec | None = None) -> FinetuneTask:
    return FinetuneTask(cfg, history, paths.history / history, seed, arm,
                        out / history / f"{arm}_seed{seed}.npz", block=spec, judge=judge,
                        rehearsal=rehearsal)


def _row(cfg: Config, arm: str, d: np.ndarray, log_t: pd.Series, v: np.ndarray, own: dict,
         unblocked_d: np.ndarray) -> dict:
    """One run at T: its drift's alignment, projection and reduction, its judged behaviour
    (NaN for a measure the setting does not log: hf has no prefilled content, no new task)."""
    row = {"alignment": cosine(d[cfg.layer], v), "non_refusal": 100 - log_t["refusal_rate"],
           "refusal_rate": log_t["refusal_rate"], "refusals": log_t["refusals"],
           "n_harmful": log_t["n_harmful"], "harmful_compliance": log_t["harmful_compliance"],
           "prefilled_content": at_t(log_t, "prefilled_content"),
           "benign_accuracy": at_t(log_t, "benign_accuracy"),
           "new_task_accuracy": at_t(log_t, f"{cfg.finetune.new_task}_accuracy")}
    if cfg.layer in own:
        u = own[cfg.layer]
        row["projection"] = float(d[cfg.layer] @ u)
        row["projection_unblocked"] = float(unblocked_d[cfg.layer] @ u)
    if own:
        row["reduction"] = arm_reduction(arm, d, unblocked_d, own)
    return row


def run(cfg: Config, paths: Paths) -> None:
    """Fix lambda (harm-blind), match the controls, run every arm at every logged step."""
    setting0 = make_setting(cfg, paths.history / cfg.histories[0])
    pool = setting0.penalty_pool(cfg.blocking.pool_size)
    dirs = {h: arm_directions(cfg, paths, h) for h in cfg.histories}
    arms = expand_arms(cfg)
    claim = cfg.blocking.claim_arm
    if kind(claim) in (None, "freeze", "grad_project"):
        raise ValueError(f"blocking.claim_arm {claim!r} has no weight for the lambda check")
    pushes = [a for a in arms if kind(a) == "push"]  # each bounded along its own direction
    targets = {h: {a: pool_targets(cfg, make_setting(cfg, paths.history / h), pool, dirs[h][a])
                   for a in pushes} for h in cfg.histories}
    rehearse = {h: rehearsal_spec(cfg, make_setting(cfg, paths.history / h), h)
                for h in cfg.histories} if "rehearsal" in arms else {}
    mask = probe_selection(cfg, paths)
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    unblocked = log[log["arm"] == "unblocked"].set_index(["history", "seed", "step"])
    cost_of = cost_column(cfg, unblocked.columns)
    v_rev = {h: dirs[h]["block"][cfg.layer] for h in cfg.histories}  # read once, not per run
    p99 = isotropic_quantile(v_rev[cfg.histories[0]].size, cfg.analysis.null_quantile)
    ub = {(h, seed): drift_at_t(cfg, paths.run("finetune", h, "unblocked", seed), mask)
          for h in cfg.histories for seed in cfg.finetune.seeds}  # each read once
    seed0 = cfg.finetune.seeds[0]
    grid = cfg.blocking.lambda_grid

    def spec(h: str, arm: str, lam: float) -> BlockSpec | None:
        return block_spec(cfg, arm, dirs[h][arm], lam, pool, targets[h].get(arm))

    def arm_tasks(out, arm: str, lam: float) -> list[FinetuneTask]:
        return [_task(cfg, paths, out, h, seed, arm, spec(h, arm, lam),
                      rehearsal=rehearse.get(h) if arm == "rehearsal" else None)
                for h in cfg.histories for seed in cfg.finetune.seeds]

    def reductions(tasks: list[FinetuneTask]) -> list[float]:
        return [arm_reduction(arm_of(t.arm), drift_at_t(cfg, t.out, mask), ub[t.history, t.seed],
                              dirs[t.history][arm_of(t.arm)]) for t in tasks]

    with atomic_dir(paths.stage("blocking")) as out:
        # 1. On the first seed of the calibration histories, at every lambda: the claim arm (at T,
        # for the harm-blind check) and, for the matching, each control and the arm it controls.
        controls = [a for a in arms if a in CONTROLS]
        calib_tasks = [_task(cfg, paths, out / "calibration", h, seed0, calibration_name(a, g),
                             spec(h, a, g), judge="end" if a == claim else "none")
                       for a in calibrated_arms(claim, controls) for g in grid
                       for h in cfg.first_histories(cfg.blocking.calibration_histories)]
        calib_done = run_all(finetune_task, calib_tasks, cfg.executor, desc="lambda check")
        rows = []
        for t, d in zip(calib_tasks, calib_done, strict=True):
            if arm_of(t.arm) != claim:
                continue
            a, _ = final_alignment(cfg, t.out, v_rev[t.history], mask)
            ref = unblocked.loc[(t.history, t.seed, cfg.finetune.steps), cost_of]
            rows.append({"lambda": t.block.lam, "history": t.history, "alignment": a, "p99": p99,
                         "new_task_cost": ref - d.log.iloc[-1][cost_of], "cost_of": cost_of})
        calibration = pd.DataFrame(rows)
        lam, check = choose_lambda(cfg, calibration)
        matching = reduction_table(calib_tasks, reductions(calib_tasks))
        matched = match_controls(matching, controls, lam)
        # 2. Every arm, judged at every logged step: at lambda, the controls at their match.
        tasks = [t for a in arms
                 for t in arm_tasks(out, a, matched[a]["lambda"] if a in CONTROLS else lam)]
        done = run_all(finetune_task, tasks, cfg.executor, desc="blocking arms")
        ref_hash = pd.read_csv(paths.stage("finetune") / "runs.csv").set_index(
            ["history", "arm", "seed"])["batch_hash"]
        final = []
        for t, d in zip(tasks, done, strict=True):
            if d.batch_hash != ref_hash[(t.history, "unblocked", t.seed)]:
                raise AssertionError(f"{t.arm} {t.history} seed {t.seed}: other batches than "
                                     "the unblocked run")
            final.append({"arm": t.arm, "history": t.history, "seed": t.seed,
                          **_row(cfg, t.arm, drift_at_t(cfg, t.out, mask), d.log.iloc[-1],
                                 v_rev[t.history], dirs[t.history][t.arm], ub[t.history, t.seed])})
        for (h, seed), d in ub.items():
            final.append({"arm": "unblocked", "history": h, "seed": seed,
                          **_row(cfg, "unblocked", d, unblocked.loc[(h, seed, cfg.finetune.steps)],
                                 v_rev[h], {cfg.layer: v_rev[h]}, d)})
        final = pd.DataFrame(final)
        final["task_cost_not_block"] = (final["new_task_accuracy"]
                                        < cfg.finetune.min_new_task_accuracy)
        # 3. The claim arms again in the shock regime (first seed, the same lambda).
        shock_cfg = shock_config(cfg)
        shock_tasks = [_task(shock_cfg, paths, out / "shock", h, seed0, shock_arm(a),
                             None if a == "unblocked" else spec(h, a, lam),
                             rehearsal=rehearse.get(h) if a == "rehearsal" else None)
                       for h, a in shock_runs(cfg)]
        shock_done = run_all(finetune_task, shock_tasks, cfg.executor, desc="shock regime")
        shock_ub = {t.history: drift_at_t(cfg, t.out, mask) for t in shock_tasks
                    if t.arm == shock_arm("unblocked")}
        shock_hash = {t.history: d.batch_hash for t, d in zip(shock_tasks, shock_done, strict=True)
                      if t.arm == shock_arm("unblocked")}
        shock_final = []
        for t, d in zip(shock_tasks, shock_done, strict=True):
            if d.batch_hash != shock_hash[t.history]:
                raise AssertionError(f"{t.arm} {t.history}: other batches than the shock "
                                     "regime's unblocked run")
            arm = main_arm(t.arm)
            own = {cfg.layer: v_rev[t.history]} if arm == "unblocked" else dirs[t.history][arm]
            shock_final.append({"arm": arm, "history": t.history, "seed": t.seed,
                                **_row(shock_cfg, arm, drift_at_t(cfg, t.out, mask),
                                       d.log.iloc[-1], v_rev[t.history], own,
                                       shock_ub[t.history])})
        shock_final = pd.DataFrame(shock_final)
        shock_final["task_cost_not_block"] = (shock_final["new_task_accuracy"]
                                              < cfg.finetune.min_new_task_accuracy)
        write_csv(out / "shock_final.csv", shock_final)
        write_csv(out / "shock_log.csv", pd.concat(
            [d.log.assign(arm=main_arm(t.arm)) for t, d in zip(shock_tasks, shock_done,
                                                               strict=True)], ignore_index=True))
        write_csv(out / "calibration.csv", calibration)
        write_csv(out / "matching.csv", matching)
        write_csv(out / "final.csv", final)
        write_csv(out / "log.csv", pd.concat([d.log for d in done], ignore_index=True))
        write_json(out / "lambda.json", {"lambda": lam, "check": check, "matched": matched,
                                         **{f"{a}_targets": {h: t[a][cfg.layer]
                                                             for h, t in targets.items()}
                                            for a in pushes}})
    every: list[FinetuneOutput] = [*calib_done, *done, *shock_done]
    write_json(paths.timings / "blocking_runs.json",
               {f"{d.history}/{d.arm}_seed{d.seed}": d.seconds for d in every})
