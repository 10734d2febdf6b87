"""Stage 05 in code: every blocking arm on the unblocked runs' seeds and batches, compared."""

from __future__ import annotations

import dataclasses

import pandas as pd

from gravrev.analysis import alignment_table, chosen, load_probes
from gravrev.blocking import make_intervention
from gravrev.config import Config, Paths
from gravrev.direction import probe_mask
from gravrev.finetune import finetune_run, save_run, witness_params
from gravrev.io import read_json, read_npz, write_csv, write_json
from gravrev.nulls import covariance
from gravrev.setting import make_setting
from gravrev.stats import paired_test, summarize, wilson_interval

MEASURES = ("alignment", "harmful_compliance", "refusal_rate", "benign_accuracy", "benign_loss")
N_PENALTY_PROMPTS = 64


def run_arms(cfg: Config, paths: Paths, device: str) -> pd.DataFrame:
    """Fine-tune every seed under every blocking arm; the data order is the seed's, as unblocked."""
    setting = make_setting(cfg, paths)
    v = read_npz(paths.data / "vrev" / "v_rev.npz")[
        f"{cfg.analysis.vrev_method}_{cfg.analysis.position}"
    ]
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    safe_acts = read_npz(paths.history / "acts_safe.npz")[cfg.analysis.position][cfg.layer][mask]
    cov = covariance(safe_acts)
    _, tok = setting.load("safe", "cpu")
    prompts = setting.penalty_prompts(N_PENALTY_PROMPTS)
    logs, hashes = [], {}
    theta_h = witness_params(setting)
    for arm in cfg.blocking.arms:
        for seed in cfg.finetune.seeds:
            block = make_intervention(arm, cfg, v, cov, tok, prompts, device)
            result = finetune_run(
                cfg,
                setting,
                seed,
                device,
                arm=arm,
                intervention=block,
                judge_every_log=False,
                theta_h=theta_h,
            )
            save_run(result, paths.blocking)
            logs.append(result.log)
            hashes[f"{arm}_seed{seed}"] = result.batch_hash
    seed = cfg.finetune.seeds[0]
    for lam in cfg.blocking.lambda_sweep:
        sweep_cfg = dataclasses.replace(
            cfg, blocking=dataclasses.replace(cfg.blocking, penalty_lambda=lam)
        )
        block = make_intervention("penalty", sweep_cfg, v, cov, tok, prompts, device)
        result = finetune_run(
            cfg,
            setting,
            seed,
            device,
            arm=f"penalty_lambda{lam:g}",
            intervention=block,
            judge_every_log=False,
            theta_h=theta_h,
        )
        save_run(result, paths.blocking)
        logs.append(result.log.assign(penalty_lambda=lam))
    write_json(paths.blocking / "batch_hashes.json", hashes)
    log = pd.concat(logs, ignore_index=True)
    write_csv(paths.blocking / "log.csv", log)
    return log


def lambda_table(cfg: Config, paths: Paths, log: pd.DataFrame) -> pd.DataFrame:
    """The penalty arm at each lambda (first seed) at T: alignment, refusal, task accuracy."""
    from gravrev.direction import alignment_trajectory

    seed = cfg.finetune.seeds[0]
    v = read_npz(paths.data / "vrev" / "v_rev.npz")[
        f"{cfg.analysis.vrev_method}_{cfg.analysis.position}"
    ]
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    rows = []
    main = log[(log["arm"] == "penalty") & (log["seed"] == seed)].assign(
        penalty_lambda=cfg.blocking.penalty_lambda
    )
    sweep = log[log["arm"].str.startswith("penalty_lambda")]
    unblocked = pd.read_csv(paths.finetune / "log.csv")
    unblocked = unblocked[(unblocked["arm"] == "unblocked") & (unblocked["seed"] == seed)]
    sweep = pd.concat([sweep, unblocked.assign(penalty_lambda=0.0)])
    for arm, g in pd.concat([main, sweep]).groupby("arm"):
        base = paths.finetune if arm == "unblocked" else paths.blocking
        acts = read_npz(base / f"{arm}_seed{seed}.npz")
        a = alignment_trajectory(acts[cfg.analysis.position], acts["steps"], v, mask)
        final = g[g["step"] == cfg.finetune.steps].iloc[0]
        rows.append(
            {
                "lambda": float(final["penalty_lambda"]),
                "alignment": a[(a["layer"] == cfg.layer)]["alignment"].iloc[-1],
                **{c: final[c] for c in final.index if c.endswith(("_rate", "_accuracy"))},
            }
        )
    return pd.DataFrame(rows).sort_values("lambda")


def check_pairing(cfg: Config, paths: Paths) -> None:
    """Every blocked run saw exactly the batches of the unblocked run of its seed."""
    blocked = read_json(paths.blocking / "batch_hashes.json")
    for seed in cfg.finetune.seeds:
        ref = read_json(paths.finetune / f"unblocked_seed{seed}.json")["batch_hash"]
        for arm in cfg.blocking.arms:
            if blocked[f"{arm}_seed{seed}"] != ref:
                raise AssertionError(f"arm {arm} seed {seed} saw other batches than unblocked")


def final_table(cfg: Config, paths: Paths, log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows per arm and seed at T (harm with Wilson intervals), and every logged step."""
    unblocked = pd.read_csv(paths.finetune / "log.csv")
    both = pd.concat([unblocked[unblocked["arm"] == "unblocked"], log], ignore_index=True)
    v = {
        pos: read_npz(paths.data / "vrev" / "v_rev.npz")[f"{cfg.analysis.vrev_method}_{pos}"]
        for pos in ("last", "mean")
    }
    align = pd.concat(
        [
            chosen(alignment_table(cfg, paths, v, ["unblocked"]), cfg),
            chosen(alignment_table(cfg, paths, v, list(cfg.blocking.arms), "blocking"), cfg),
        ]
    )
    merged = both.merge(
        align[["arm", "seed", "step", "alignment"]], on=["arm", "seed", "step"], how="left"
    )
    fin = merged[merged["step"] == cfg.finetune.steps].copy()
    lo_hi = [
        wilson_interval(int(k), int(n))
        for k, n in zip(fin["harmful_answers"], fin["n_harmful"], strict=True)
    ]
    fin["harm_low"] = [100 * a for a, _ in lo_hi]
    fin["harm_high"] = [100 * b for _, b in lo_hi]
    return fin, merged


def paired_effects(cfg: Config, fin: pd.DataFrame) -> pd.DataFrame:
    """Each arm against unblocked, paired by seed: difference, paired t, sign-flip p, Cohen's dz."""
    base = fin[fin["arm"] == "unblocked"].set_index("seed")
    rows = []
    for arm in cfg.blocking.arms:
        cur = fin[fin["arm"] == arm].set_index("seed").loc[base.index]
        for measure in MEASURES:
            test = paired_test(cur[measure].to_numpy(), base[measure].to_numpy())
            rows.append({"arm": arm, "measure": measure, **test})
    return pd.DataFrame(rows)


def blocking_stage(cfg: Config, paths: Paths, device: str) -> dict:
    """Stage 05: run the arms, check the pairing, compare, write data/metrics/blocking.json."""
    log = run_arms(cfg, paths, device)
    check_pairing(cfg, paths)
    sweep = lambda_table(cfg, paths, log) if "penalty" in cfg.blocking.arms else pd.DataFrame()
    log = log[~log["arm"].str.startswith("penalty_lambda")]
    fin, trajectories = final_table(cfg, paths, log)
    effects = paired_effects(cfg, fin)
    arms = ["unblocked", *cfg.blocking.arms]
    per_arm = {}
    for arm in arms:
        f = fin[fin["arm"] == arm]
        k, n = int(f["harmful_answers"].sum()), int(f["n_harmful"].sum())
        per_arm[arm] = {m: summarize(f[m].to_numpy()) for m in MEASURES}
        per_arm[arm]["harm_pooled_wilson"] = [100 * x for x in wilson_interval(k, n)]
        per_arm[arm]["per_seed"] = {m: f.sort_values("seed")[m].tolist() for m in MEASURES}
    metrics = {
        "preset": cfg.preset,
        "lambda": cfg.blocking.penalty_lambda,
        "layer": cfg.layer,
        "claim_arm": cfg.blocking.claim_arm,
        "paired": True,
        "arms": per_arm,
        "effects": effects.to_dict(orient="records"),
    }
    write_json(paths.metrics / "blocking.json", metrics)
    write_csv(paths.blocking / "final.csv", fin)
    return {
        "final": fin,
        "trajectories": trajectories,
        "effects": effects,
        "metrics": metrics,
        "lambda_sweep": sweep,
    }
