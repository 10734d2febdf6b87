"""Stage 04, nulls: every run-step pair against isotropic and anisotropic nulls and controls."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import drift
from gravrev.stages.artifacts import analysed_cell, load_v_rev, probe_selection
from gravrev.stats.nulls import (
    anisotropic_samples,
    cosine,
    covariance,
    isotropic_quantile,
    isotropic_samples,
    monte_carlo_quantile,
)
from gravrev.stats.summaries import summarize
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json
from gravrev.store.paths import Paths


def control_history(cfg: Config, history: str) -> str | None:
    """The independent history whose v_rev is this one's control direction (the next one)."""
    hs = cfg.histories
    return None if len(hs) < 2 else hs[(hs.index(history) + 1) % len(hs)]


def pair_table(cfg: Config, paths: Paths, history: str, rng: np.random.Generator) -> pd.DataFrame:
    """Each unblocked run-step pair of one history against every null and the control."""
    q, n, layer, pos = (cfg.analysis.null_quantile, cfg.analysis.null_samples, cfg.layer,
                        cfg.analysis.position)
    mask = probe_selection(cfg, paths)
    v = load_v_rev(cfg, paths, history)[layer]
    other = control_history(cfg, history)
    control = None if other is None else load_v_rev(cfg, paths, other)[layer]
    cov = covariance(read_npz(paths.acts("safe", history))[pos][layer][mask])
    iso = isotropic_quantile(len(v), q)
    rows = []
    for seed in cfg.finetune.seeds:
        acts = read_npz(paths.run("finetune", history, "unblocked", seed))
        x = acts[pos][:, layer]  # (S, N, d)
        d = drift(x[1:], x[0], mask)
        for i, step in enumerate(acts["steps"][1:]):
            row = {"history": history, "seed": seed, "step": int(step),
                   "alignment": cosine(d[i], v), "isotropic_p99": iso,
                   "anisotropic_p99": float(np.quantile(anisotropic_samples(d[i], cov, n, rng), q))}
            if control is not None:
                row["control_cosine"] = cosine(d[i], control)
            rows.append(row)
    table = pd.DataFrame(rows)
    table["exceeds_isotropic"] = table["alignment"] > table["isotropic_p99"]
    table["exceeds_anisotropic"] = table["alignment"] > table["anisotropic_p99"]
    if control is not None:
        table["beats_control"] = table["alignment"] > table["control_cosine"]
    return table


@dataclass
class NullsResult:
    """What chapter 04 shows."""

    pairs: pd.DataFrame  # history, seed, step, alignment, thresholds, exceedances
    iso_samples: np.ndarray
    control_drift: pd.DataFrame  # alignment per history, arm (unblocked | mixed), seed, step
    metrics: dict


def _counts(pairs: pd.DataFrame) -> dict:
    cols = {"isotropic": "exceeds_isotropic", "anisotropic": "exceeds_anisotropic",
            "control_direction": "beats_control"}
    out = {}
    for h, g in [*pairs.groupby("history", sort=False), ("all", pairs)]:
        out[h] = {k: {"k": int(g[c].sum()), "n": len(g)} for k, c in cols.items() if c in g}
    return out


def _control_drift(cfg: Config, paths: Paths) -> pd.DataFrame:
    table = pd.read_csv(paths.stage("vrev") / "alignment.csv")
    return analysed_cell(table[table["arm"].isin(["unblocked", "mixed"])], cfg)


def run(cfg: Config, paths: Paths, seed: int = 0) -> NullsResult:
    """Every history's run-step pairs against the nulls; data/metrics/nulls.json."""
    rng = np.random.default_rng(seed)
    pairs = pd.concat([pair_table(cfg, paths, h, rng) for h in cfg.histories], ignore_index=True)
    q = cfg.analysis.null_quantile
    d = len(load_v_rev(cfg, paths, cfg.histories[0])[cfg.layer])
    iso = isotropic_samples(d, cfg.analysis.null_samples, rng)
    mc, mc_se = monte_carlo_quantile(iso, q)
    cd = _control_drift(cfg, paths)
    last = cd[cd["step"] == cd["step"].max()]
    metrics = {
        "preset": cfg.preset,
        "d": d,
        "quantile": q,
        "isotropic_closed_form": isotropic_quantile(d, q),
        "isotropic_monte_carlo": mc,
        "isotropic_monte_carlo_se": mc_se,
        "exceedance": _counts(pairs),
        "control_direction_cos_v_rev": {
            h: cosine(load_v_rev(cfg, paths, h)[cfg.layer],
                      load_v_rev(cfg, paths, o)[cfg.layer])
            for h in cfg.histories if (o := control_history(cfg, h)) is not None
        },
        "control_drift_final": {arm: summarize(g["alignment"].to_numpy())
                                for arm, g in last.groupby("arm")},
    }
    with atomic_dir(paths.stage("nulls")) as out:
        write_csv(out / "pairs.csv", pairs)
        np.save(out / "isotropic_samples.npy", iso[:20000])
    write_json(paths.metrics_file("nulls"), metrics)
    return load(cfg, paths)


def load(cfg: Config, paths: Paths) -> NullsResult:
    """Read stage 04's outputs back."""
    return NullsResult(
        pd.read_csv(paths.stage("nulls") / "pairs.csv"),
        np.load(paths.stage("nulls") / "isotropic_samples.npy"),
        _control_drift(cfg, paths),
        read_json(paths.metrics_file("nulls")),
    )
