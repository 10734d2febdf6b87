"""Stages 03 and 04 in code: v_rev, the alignment of every run-step pair, and the nulls."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gravrev.config import Config, Paths
from gravrev.direction import (
    alignment_trajectory,
    drift,
    probe_mask,
    v_rev_checkpoint_diff,
    v_rev_trajectory_pca,
)
from gravrev.io import read_npz
from gravrev.nulls import anisotropic_samples, cosine, covariance, isotropic_quantile
from gravrev.stats import summarize

POSITIONS = ("last", "mean")


def load_probes(paths: Paths) -> pd.DataFrame:
    return pd.read_csv(paths.finetune / "probes.csv")


def directions(cfg: Config, paths: Paths, branch: str = "main") -> dict[str, dict[str, np.ndarray]]:
    """v_rev per method and position, each (L, d) with unit rows, from the history's activations."""
    base = paths.history if branch == "main" else paths.history / branch
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    helpful, safe = read_npz(base / "acts_helpful.npz"), read_npz(base / "acts_safe.npz")
    out: dict[str, dict[str, np.ndarray]] = {"checkpoint_diff": {}, "trajectory_pca": {}}
    trajectory = (
        read_npz(base / "safe_trajectory.npz") if (base / "safe_trajectory.npz").exists() else None
    )
    for pos in POSITIONS:
        out["checkpoint_diff"][pos] = v_rev_checkpoint_diff(helpful[pos], safe[pos], mask)
        if trajectory is not None:
            out["trajectory_pca"][pos] = v_rev_trajectory_pca(trajectory[pos], mask)
    return {k: v for k, v in out.items() if v}


def run_acts(paths: Paths, arm: str, seed: int, base: str = "finetune") -> dict[str, np.ndarray]:
    return read_npz(
        (paths.finetune if base == "finetune" else paths.blocking) / f"{arm}_seed{seed}.npz"
    )


def alignment_table(
    cfg: Config, paths: Paths, v_rev: dict[str, np.ndarray], arms: list[str], base: str = "finetune"
) -> pd.DataFrame:
    """cos(drift_t, v_rev) for every arm, seed, logged step, layer and position."""
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    frames = []
    for arm in arms:
        for seed in cfg.finetune.seeds:
            acts = run_acts(paths, arm, seed, base)
            for pos in POSITIONS:
                df = alignment_trajectory(acts[pos], acts["steps"], v_rev[pos], mask)
                frames.append(df.assign(arm=arm, seed=seed, position=pos))
    return pd.concat(frames, ignore_index=True)


def chosen(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The rows of the analysed cell: the configured layer and position."""
    return df[(df["layer"] == cfg.layer) & (df["position"] == cfg.analysis.position)]


def per_step(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd (ddof=1), n and 95% interval of alignment per logged step."""
    rows = [
        {"step": step, **summarize(g["alignment"].to_numpy())} for step, g in df.groupby("step")
    ]
    return pd.DataFrame(rows)


def run_step_drifts(cfg: Config, paths: Paths, arm: str = "unblocked") -> pd.DataFrame:
    """The drift vector of every run-step pair at the analysed cell (for the nulls)."""
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    rows = []
    for seed in cfg.finetune.seeds:
        acts = run_acts(paths, arm, seed)
        x = acts[cfg.analysis.position][:, cfg.layer]  # (S, N, d)
        d = drift(x[1:], x[0], mask)
        for i, step in enumerate(acts["steps"][1:]):
            rows.append({"seed": seed, "step": int(step), "drift": d[i]})
    return pd.DataFrame(rows)


def null_table(
    cfg: Config,
    paths: Paths,
    v_rev: np.ndarray,
    control: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, dict]:
    """Each run-step pair against the isotropic and anisotropic nulls and the control direction."""
    q, n = cfg.analysis.null_quantile, cfg.analysis.null_samples
    pairs = run_step_drifts(cfg, paths)
    d = len(v_rev)
    iso = isotropic_quantile(d, q)
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    safe = read_npz(paths.history / "acts_safe.npz")[cfg.analysis.position][cfg.layer][mask]
    cov = covariance(safe)
    rows = []
    for _, p in pairs.iterrows():
        aniso = np.quantile(anisotropic_samples(p["drift"], cov, n, rng), q)
        row = {
            "seed": p["seed"],
            "step": p["step"],
            "alignment": cosine(p["drift"], v_rev),
            "isotropic_p99": iso,
            "anisotropic_p99": float(aniso),
        }
        if control is not None:
            row["control_cosine"] = cosine(p["drift"], control)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["exceeds_isotropic"] = table["alignment"] > table["isotropic_p99"]
    table["exceeds_anisotropic"] = table["alignment"] > table["anisotropic_p99"]
    if control is not None:
        table["beats_control"] = table["alignment"] > table["control_cosine"]
    return table, {"d": d, "cov": cov}


def vrev_stage(cfg: Config, paths: Paths) -> dict:
    """Stage 03: v_rev, the alignment table, per-step summaries and data/metrics/alignment.json."""
    from gravrev.io import write_csv, write_json, write_npz
    from gravrev.stats import spearman, trajectory_model

    dirs = directions(cfg, paths)
    method = cfg.analysis.vrev_method
    if method not in dirs:
        raise ValueError(f"analysis.vrev_method: {method!r} needs data this preset did not save")
    log = pd.read_csv(paths.finetune / "log.csv")
    arms = [a for a in ("unblocked", "mixed") if a in set(log["arm"])]
    table = pd.concat(
        [alignment_table(cfg, paths, dirs[m], arms).assign(method=m) for m in dirs],
        ignore_index=True,
    )
    main = chosen(table[(table["method"] == method) & (table["arm"] == "unblocked")], cfg)
    steps = per_step(main)
    behaviour = log[log["arm"] == "unblocked"][
        ["seed", "step", "harmful_compliance", "refusal_rate", "weight_cosine"]
    ]
    pairs = main.merge(behaviour, on=["seed", "step"])
    model = trajectory_model(main[["seed", "step", "alignment"]].rename(columns={"seed": "run"}))
    rho = spearman(pairs["alignment"], pairs["harmful_compliance"])
    rho_refusal = spearman(pairs["alignment"], pairs["refusal_rate"])
    methods_cos = (
        {
            pos: [
                cosine(a, b)
                for a, b in zip(
                    dirs["checkpoint_diff"][pos], dirs["trajectory_pca"][pos], strict=True
                )
            ]
            for pos in POSITIONS
        }
        if "trajectory_pca" in dirs
        else {}
    )
    out = paths.data / "vrev"
    write_npz(
        out / "v_rev.npz", **{f"{m}_{pos}": v for m, d in dirs.items() for pos, v in d.items()}
    )
    write_csv(out / "alignment.csv", table)
    by_step = {
        int(r["step"]): {k: r[k] for k in ("mean", "sd", "n", "ci_low", "ci_high")}
        for _, r in steps.iterrows()
    }
    metrics = {
        "preset": cfg.preset,
        "layer": cfg.layer,
        "position": cfg.analysis.position,
        "probe_set": cfg.analysis.probe_set,
        "method": method,
        "by_step": by_step,
        "per_run": {
            int(s): g.sort_values("step")["alignment"].tolist() for s, g in main.groupby("seed")
        },
        "steps": sorted(int(s) for s in main["step"].unique()),
        "trajectory_model": model,
        "spearman_alignment_harm": rho,
        "spearman_alignment_refusal": rho_refusal,
        "isotropic_p99": isotropic_quantile(
            dirs[method][cfg.analysis.position].shape[1], cfg.analysis.null_quantile
        ),
    }
    write_json(paths.metrics / "alignment.json", metrics)
    sensitivity = sensitivity_table(cfg, paths, dirs[method])
    if len(sensitivity):
        write_csv(out / "sensitivity.csv", sensitivity)
    return {
        "sensitivity": sensitivity,
        "directions": dirs,
        "table": table,
        "main": main,
        "steps": steps,
        "pairs": pairs,
        "model": model,
        "spearman": rho,
        "spearman_refusal": rho_refusal,
        "methods_cos": methods_cos,
        "metrics": metrics,
    }


def nulls_stage(cfg: Config, paths: Paths, seed: int = 0) -> dict:
    """Stage 04: every run-step pair against each null; data/metrics/nulls.json."""
    from gravrev.io import write_csv, write_json
    from gravrev.nulls import isotropic_samples, monte_carlo_quantile

    rng = np.random.default_rng(seed)
    method, pos, layer = cfg.analysis.vrev_method, cfg.analysis.position, cfg.layer
    saved = read_npz(paths.data / "vrev" / "v_rev.npz")
    v_rev = saved[f"{method}_{pos}"][layer]
    control = None
    if (paths.history / "control").is_dir():
        control = directions(cfg, paths, branch="control")[method][pos][layer]
    table, extra = null_table(cfg, paths, v_rev, control, rng)
    d, q = extra["d"], cfg.analysis.null_quantile
    iso_samples = isotropic_samples(d, cfg.analysis.null_samples, rng)
    mc, mc_se = monte_carlo_quantile(iso_samples, q)
    aniso_v = anisotropic_samples(v_rev, extra["cov"], cfg.analysis.null_samples, rng)
    alignment = pd.read_csv(paths.data / "vrev" / "alignment.csv")
    cell = chosen(alignment[alignment["method"] == method], cfg)
    by_arm = cell.groupby(["arm", "step"])["alignment"].agg(["mean", "std", "count"]).reset_index()
    counts = {
        "isotropic": [int(table["exceeds_isotropic"].sum()), len(table)],
        "anisotropic": [int(table["exceeds_anisotropic"].sum()), len(table)],
    }
    if control is not None:
        counts["control_direction"] = [int(table["beats_control"].sum()), len(table)]
    out = paths.data / "nulls"
    write_csv(out / "pairs.csv", table)
    metrics = {
        "preset": cfg.preset,
        "d": d,
        "quantile": q,
        "isotropic_closed_form": isotropic_quantile(d, q),
        "isotropic_monte_carlo": mc,
        "isotropic_monte_carlo_se": mc_se,
        "anisotropic_v_rev_quantile": float(np.quantile(aniso_v, q)),
        "exceedance": {k: {"k": v[0], "n": v[1]} for k, v in counts.items()},
        "control_direction_cos_v_rev": None if control is None else cosine(v_rev, control),
        "control_drift_final": _final_by_arm(cell),
    }
    write_json(paths.metrics / "nulls.json", metrics)
    return {
        "table": table,
        "metrics": metrics,
        "iso_samples": iso_samples,
        "aniso_samples": aniso_v,
        "by_arm": by_arm,
        "cell": cell,
    }


def _final_by_arm(cell: pd.DataFrame) -> dict:
    last = cell[cell["step"] == cell["step"].max()]
    return {arm: summarize(g["alignment"].to_numpy()) for arm, g in last.groupby("arm")}


def sensitivity_table(cfg: Config, paths: Paths, v_rev: dict[str, np.ndarray]) -> pd.DataFrame:
    """Alignment at the early steps of each sensitivity run, at the analysed cell."""
    from gravrev.io import read_json

    path = paths.finetune / "sensitivity.json"
    if not path.is_file():
        return pd.DataFrame()
    mask = probe_mask(load_probes(paths), cfg.analysis.probe_set)
    pos = cfg.analysis.position
    frames = []
    for run in read_json(path):
        acts = run_acts(paths, run["arm"], run["seed"])
        df = alignment_trajectory(acts[pos], acts["steps"], v_rev[pos], mask)
        df = df[df["layer"] == cfg.layer]
        frames.append(
            df.assign(optimizer=run["optimizer"], lr=run["lr"], batch_size=run["batch_size"])
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
