"""Stage 04, nulls: every run-step pair against isotropic and anisotropic nulls and controls."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
from gravrev.stats.summaries import grouped_summary
from gravrev.stats.trajectories import beats_null
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json
from gravrev.store.paths import Paths

MATCHED_NULL_RULE = (
    "The matched null of history h is the set of directions from θ_S(h)'s mean probe "
    "activation toward the mean probe activation of every saved checkpoint of another history "
    "g that is not a helpful witness: the snapshots of g's safety phase after its first "
    "(the first is θ_H(g)), its last being θ_S(g); or θ_S(g) alone when g saved "
    "no trajectory. Matched: the same layer, position and probe set as v_rev; the cosine is "
    "norm-invariant, so no norm is matched. At each logged step t of a trajectory (history x "
    "seed of the unblocked arm), the null sample is cos(drift_t, u) over those directions u; "
    "the step beats the null when cos(drift_t, v_rev) strictly exceeds the sample's q-quantile "
    "(q = analysis.null_quantile). A trajectory beats the null when every logged step does. "
    "A history with fewer than 2 null directions is not judged."
)
MIN_NULL_DIRECTIONS = 2  # an empirical quantile needs at least two values


def matched_directions(cfg: Config, paths: Paths, history: str) -> np.ndarray:
    """The matched null's directions of one history, (M, d), unnormalised (MATCHED_NULL_RULE)."""
    layer, pos = cfg.layer, cfg.analysis.position
    mask = probe_selection(cfg, paths)
    safe = read_npz(paths.acts("safe", history))[pos][layer]  # (N, d)
    targets = []
    for g in cfg.histories:
        if g == history:
            continue
        traj = paths.safe_trajectory(g)
        if traj.is_file():
            snaps = read_npz(traj)[pos][1:, layer]  # (K-1, N, d): theta_H(g) left out
            targets.extend(snaps)
        else:
            targets.append(read_npz(paths.acts("safe", g))[pos][layer])
    if not targets:
        return np.zeros((0, safe.shape[-1]))
    return drift(np.stack(targets), safe, mask)


@dataclass(frozen=True)
class TrajectoryNull:
    """One trajectory against the matched null, step by step."""

    all_steps_exceed: bool
    n_exceed: int
    n_steps: int


def trajectory_null(alignment: np.ndarray, null: np.ndarray, q: float) -> TrajectoryNull:
    """alignment (S,) against each step's null sample (S, M): how many steps beat its q-quantile."""
    null = np.asarray(null, dtype=np.float64)
    alignment = np.asarray(alignment, dtype=np.float64)
    if null.ndim != 2 or null.shape[0] != alignment.size:
        raise ValueError(f"null must be (steps, directions) for {alignment.size} steps, "
                         f"got {null.shape}")
    n_exceed = sum(beats_null([a], row, q).n_exceed for a, row in zip(alignment, null,
                                                                       strict=True))
    return TrajectoryNull(n_exceed == alignment.size > 0, n_exceed, int(alignment.size))


@dataclass(frozen=True)
class MatchedNull:
    """nulls.json's "matched_null": every trajectory against the matched empirical null."""

    rule: str
    per_trajectory: dict[str, TrajectoryNull]  # "<history>/<seed>"
    n_directions: dict[str, int]  # per history, the null's size

    @property
    def n_trajectories(self) -> int:
        return len(self.per_trajectory)

    @property
    def n_all_exceed(self) -> int:
        return sum(t.all_steps_exceed for t in self.per_trajectory.values())

    def to_json(self) -> dict:
        return {"rule": self.rule,
                "per_trajectory": {k: asdict(t) for k, t in self.per_trajectory.items()},
                "n_directions": dict(self.n_directions),
                "n_trajectories": self.n_trajectories, "n_all_exceed": self.n_all_exceed}

    @classmethod
    def from_json(cls, d: dict) -> MatchedNull:
        return cls(d["rule"], {k: TrajectoryNull(**t) for k, t in d["per_trajectory"].items()},
                   d["n_directions"])


def matched_null(cfg: Config, paths: Paths) -> tuple[pd.DataFrame, MatchedNull]:
    """Each unblocked run-step pair against its matched null, and each trajectory's verdict."""
    q, layer, pos = cfg.analysis.null_quantile, cfg.layer, cfg.analysis.position
    mask = probe_selection(cfg, paths)
    rows, per, n_dirs = [], {}, {}
    for h in cfg.histories:
        v = load_v_rev(cfg, paths, h)[layer]
        dirs = matched_directions(cfg, paths, h)
        n_dirs[h] = len(dirs)
        for seed in cfg.finetune.seeds:
            acts = read_npz(paths.run("finetune", h, "unblocked", seed))
            x = acts[pos][:, layer]
            d = drift(x[1:], x[0], mask)  # (S, d)
            align = np.array([cosine(di, v) for di in d])
            null = np.array([[cosine(di, u) for u in dirs] for di in d]).reshape(len(d), -1)
            judged = len(dirs) >= MIN_NULL_DIRECTIONS
            for i, step in enumerate(acts["steps"][1:]):
                p99 = beats_null([align[i]], null[i], q).threshold if judged else np.nan
                rows.append({"history": h, "seed": seed, "step": int(step),
                             "alignment": align[i], "matched_p99": p99,
                             "exceeds_matched": bool(align[i] > p99)})
            if judged:
                per[f"{h}/{seed}"] = trajectory_null(align, null, q)
    return pd.DataFrame(rows), MatchedNull(MATCHED_NULL_RULE, per, n_dirs)


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
    matched_pairs: pd.DataFrame  # history, seed, step, alignment, matched_p99, exceeds_matched
    matched: MatchedNull


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
    matched_pairs, matched = matched_null(cfg, paths)
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
        # the history is the unit: the interval is over the history means
        "control_drift_final": {arm: grouped_summary(g["alignment"].to_numpy(),
                                                     g["history"].to_numpy())
                                for arm, g in last.groupby("arm")},
        "matched_null": matched.to_json(),
    }
    with atomic_dir(paths.stage("nulls")) as out:
        write_csv(out / "pairs.csv", pairs)
        write_csv(out / "matched_null.csv", matched_pairs)
        np.save(out / "isotropic_samples.npy", iso[:20000])
    write_json(paths.metrics_file("nulls"), metrics)
    return load(cfg, paths)


def load(cfg: Config, paths: Paths) -> NullsResult:
    """Read stage 04's outputs back."""
    metrics = read_json(paths.metrics_file("nulls"))
    return NullsResult(
        pd.read_csv(paths.stage("nulls") / "pairs.csv"),
        np.load(paths.stage("nulls") / "isotropic_samples.npy"),
        _control_drift(cfg, paths),
        metrics,
        pd.read_csv(paths.stage("nulls") / "matched_null.csv"),
        MatchedNull.from_json(metrics["matched_null"]),
    )
