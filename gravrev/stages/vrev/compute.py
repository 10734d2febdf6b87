"""Stage 03, vrev: v_rev per history, and the alignment of every run's drift with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import (
    alignment_trajectory,
    v_rev_checkpoint_diff,
    v_rev_trajectory_pca,
)
from gravrev.stages.artifacts import analysed_cell, load_v_rev, probe_selection
from gravrev.stages.finetune.arms import arms_table
from gravrev.stats.nulls import cosine, isotropic_quantile
from gravrev.stats.summaries import (
    grouped_summary,
    history_trend,
    summarize,
    trajectory_model,
)
from gravrev.stats.trajectories import correlation_by_history
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json, write_npz
from gravrev.store.paths import Paths

POSITIONS = ("last", "mean")
METHODS = ("checkpoint_diff", "trajectory_pca")
HARMS = ("non_refusal", "harmful_compliance")  # the two harm measures, both always reported
MIN_STEPS = 3  # fewer logged steps give no rank correlation (NaN)


@dataclass(frozen=True)
class HistoryAlignmentHarm:
    """One history's Spearman rho of alignment and each harm measure over its logged steps,
    with its step-wise p (descriptive: the steps of one trajectory are not independent).

    Each step is the mean over the history's runs; a rho is NaN when a measure is constant,
    and at_bound says a measure sits at 0% or 100% on most steps (ties at a floor or ceiling).
    """

    rho_non_refusal: float
    rho_harmful_compliance: float
    at_bound_non_refusal: bool
    at_bound_harmful_compliance: bool
    n_steps: int
    p_non_refusal: float
    p_harmful_compliance: float

    @classmethod
    def from_json(cls, d: dict) -> HistoryAlignmentHarm:
        def num(x: float | None) -> float:
            return float("nan") if x is None else float(x)

        return cls(num(d["rho_non_refusal"]), num(d["rho_harmful_compliance"]),
                   bool(d["at_bound_non_refusal"]), bool(d["at_bound_harmful_compliance"]),
                   int(d["n_steps"]), num(d.get("p_non_refusal")),
                   num(d.get("p_harmful_compliance")))


@dataclass(frozen=True)
class AlignmentHarm:
    """alignment.json's "alignment_harm": the step correlations, the history the unit."""

    per_history: dict[str, HistoryAlignmentHarm]

    def to_json(self) -> dict:
        return {"per_history": {h: asdict(x) for h, x in self.per_history.items()}}

    @classmethod
    def from_json(cls, d: dict) -> AlignmentHarm:
        return cls({h: HistoryAlignmentHarm.from_json(x) for h, x in d["per_history"].items()})


def alignment_harm(main: pd.DataFrame) -> AlignmentHarm:
    """Per history, rho(alignment, harm) over the logged steps of the unblocked runs' means."""
    if main["step"].nunique() < MIN_STEPS:
        nan = float("nan")
        return AlignmentHarm({h: HistoryAlignmentHarm(nan, nan, False, False,
                                                      int(main["step"].nunique()), nan, nan)
                              for h in dict.fromkeys(main["history"])})
    by = {y: {c.history: c for c in correlation_by_history(main, "alignment", y)} for y in HARMS}
    out = {}
    for h in dict.fromkeys(main["history"]):
        nr, hc = by["non_refusal"][h].correlation, by["harmful_compliance"][h].correlation
        out[h] = HistoryAlignmentHarm(nr.rho, hc.rho, "non_refusal" in nr.at_bound,
                                      "harmful_compliance" in hc.at_bound, nr.n, nr.p, hc.p)
    return AlignmentHarm(out)


def directions(cfg: Config, paths: Paths, history: str) -> dict[tuple[str, str], np.ndarray]:
    """v_rev of one history per (method, position): (L, d) unit rows, oriented S -> H."""
    mask = probe_selection(cfg, paths)
    helpful = read_npz(paths.acts("helpful", history))
    safe = read_npz(paths.acts("safe", history))
    out = {}
    traj = paths.safe_trajectory(history)
    trajectory = read_npz(traj) if traj.is_file() else None
    for pos in POSITIONS:
        out[("checkpoint_diff", pos)] = v_rev_checkpoint_diff(helpful[pos], safe[pos], mask)
        if trajectory is not None:
            out[("trajectory_pca", pos)] = v_rev_trajectory_pca(trajectory[pos], mask)
    return out


def run_alignment(npz, v_rev: dict, mask: np.ndarray) -> pd.DataFrame:
    """cos(drift_t, v_rev) of one run's snapshots, for every layer, position and method."""
    acts = read_npz(npz)
    frames = []
    for (method, pos), v in v_rev.items():
        df = alignment_trajectory(acts[pos], acts["steps"], v, mask)
        frames.append(df.assign(method=method, position=pos))
    return pd.concat(frames, ignore_index=True)


def alignment_table(cfg: Config, paths: Paths, stage: str, runs: pd.DataFrame,
                    dirs: dict[str, dict]) -> pd.DataFrame:
    """Alignment of every run listed in `runs` (history, arm, seed) of a stage's folder."""
    mask = probe_selection(cfg, paths)
    frames = []
    for r in runs.itertuples():
        npz = paths.run(stage, r.history, r.arm, r.seed)
        df = run_alignment(npz, dirs[r.history], mask)
        frames.append(df.assign(history=r.history, arm=r.arm, seed=r.seed))
    return pd.concat(frames, ignore_index=True)


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    """per_step for each history (over its runs), and pooled as history 'all' with the history
    as the unit: the interval over the history means (histories - 1 df)."""
    each = per_step(df, ["history"])
    each = each.assign(n_groups=1, df=each["n"] - 1)
    rows = [{"history": "all", "step": int(s),
             **grouped_summary(g["alignment"].to_numpy(), g["history"].to_numpy())}
            for s, g in df.groupby("step", sort=True)]
    cols = [*each.columns, "group_sd"]
    return pd.concat([each, pd.DataFrame(rows, columns=cols)], ignore_index=True)


def per_step(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, sd (ddof=1), n and 95% interval of alignment per group and step."""
    rows = []
    for key, g in df.groupby([*by, "step"], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip([*by, "step"], key, strict=True)),
                     **summarize(g["alignment"].to_numpy())})
    return pd.DataFrame(rows, columns=[*by, "step", "mean", "sd", "n", "ci_low", "ci_high"])


@dataclass
class VrevResult:
    """What chapter 03 shows."""

    table: pd.DataFrame  # every run, step, layer, position, method
    main: pd.DataFrame  # unblocked runs at the analysed cell, with behaviour
    early: pd.DataFrame  # early runs (and the large-batch run) at the analysed cell
    sensitivity: pd.DataFrame  # sensitivity runs at the analysed cell, with each arm's setting
    by_step: pd.DataFrame  # per history and pooled ("all")
    early_by_step: pd.DataFrame
    models: dict[str, dict]  # the mixed model per history and pooled
    between_histories: pd.DataFrame  # cos(v_rev_h, v_rev_g)
    methods_cos: pd.DataFrame
    metrics: dict
    alignment_harm: AlignmentHarm  # rho(alignment, harm) over steps, per history


def run(cfg: Config, paths: Paths) -> VrevResult:
    """v_rev of every history; alignment tables; data/metrics/alignment.json."""
    dirs = {h: directions(cfg, paths, h) for h in cfg.histories}
    if (cfg.analysis.vrev_method, cfg.analysis.position) not in dirs[cfg.histories[0]]:
        raise ValueError(f"analysis.vrev_method: {cfg.analysis.vrev_method!r} needs data this "
                         "preset did not save")
    runs = pd.read_csv(paths.stage("finetune") / "runs.csv")
    table = alignment_table(cfg, paths, "finetune", runs, dirs)
    with atomic_dir(paths.stage("vrev")) as out:
        write_npz(out / "v_rev.npz", **{Paths.v_rev_key(h, m, p): v
                                        for h, d in dirs.items() for (m, p), v in d.items()})
        write_csv(out / "alignment.csv", table)
    metrics = alignment_metrics(cfg, paths, table, dirs)
    write_json(paths.metrics_file("alignment"), metrics)
    return load(cfg, paths)


def _main(cfg: Config, paths: Paths, table: pd.DataFrame) -> pd.DataFrame:
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    log = log[log["arm"] == "unblocked"][["history", "seed", "step", "refusal_rate",
                                          "harmful_compliance", "weight_cosine"]]
    main = analysed_cell(table[table["arm"] == "unblocked"], cfg)
    main = main.merge(log, on=["history", "seed", "step"], how="left")
    main["non_refusal"] = 100 - main["refusal_rate"]
    return main


def _models(main: pd.DataFrame) -> dict[str, dict]:
    """alignment ~ log(step) per history (random intercept per run), and pooled ('all') as a
    t interval over the histories' slopes: runs of one history share its theta_S."""
    data = main.assign(run=main["history"] + "/" + main["seed"].astype(str))
    out = {h: trajectory_model(g) for h, g in data.groupby("history", sort=False)}
    out["all"] = history_trend(out)
    return out


def alignment_metrics(cfg: Config, paths: Paths, table: pd.DataFrame, dirs: dict) -> dict:
    main = _main(cfg, paths, table)
    early = analysed_cell(table[table["arm"] == "early"], cfg)
    d = dirs[cfg.histories[0]][("checkpoint_diff", "last")].shape[1]

    def steps_of(df: pd.DataFrame) -> dict:
        out = {}
        for h, g in [*df.groupby("history", sort=False), ("all", df)]:
            out[h] = {int(s): (summarize(x["alignment"].to_numpy()) if h != "all" else
                               grouped_summary(x["alignment"].to_numpy(), x["history"].to_numpy()))
                      for s, x in g.groupby("step")}
        return out

    return {
        "preset": cfg.preset,
        "layer": cfg.layer,
        "position": cfg.analysis.position,
        "probe_set": cfg.analysis.probe_set,
        "method": cfg.analysis.vrev_method,
        "histories": list(cfg.histories),
        "steps": sorted(int(s) for s in main["step"].unique()),
        "per_run": {f"{h}/{s}": g.sort_values("step")["alignment"].tolist()
                    for (h, s), g in main.groupby(["history", "seed"], sort=False)},
        "early_per_run": {f"{h}/{s}": g.sort_values("step")["alignment"].tolist()
                          for (h, s), g in early.groupby(["history", "seed"], sort=False)},
        "early_steps": sorted(int(s) for s in early["step"].unique()),
        "by_step": steps_of(main),
        "early_by_step": steps_of(early),
        "trajectory_model": _models(main),
        "isotropic_p99": isotropic_quantile(d, cfg.analysis.null_quantile),
        "alignment_harm": alignment_harm(main).to_json(),
    }


def _between(cfg: Config, paths: Paths) -> pd.DataFrame:
    rows = []
    for h in cfg.histories:
        for g in cfg.histories:
            a, b = load_v_rev(cfg, paths, h)[cfg.layer], load_v_rev(cfg, paths, g)[cfg.layer]
            rows.append({"history": h, "other": g, "cosine": cosine(a, b)})
    return pd.DataFrame(rows)


def _methods(cfg: Config, paths: Paths) -> pd.DataFrame:
    saved = read_npz(paths.v_rev)
    rows = []
    for h in cfg.histories:
        for pos in POSITIONS:
            a = saved.get(Paths.v_rev_key(h, "checkpoint_diff", pos))
            b = saved.get(Paths.v_rev_key(h, "trajectory_pca", pos))
            if a is None or b is None:
                continue
            for layer in range(a.shape[0]):
                rows.append({"history": h, "position": pos, "layer": layer,
                             "cosine": cosine(a[layer], b[layer])})
    return pd.DataFrame(rows)


def _with_settings(cfg: Config, runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's arm setting as columns (optimizer, lr, batch_size): read, never parsed."""
    cols = ["optimizer", "lr", "batch_size"]
    arms = list(dict.fromkeys(runs["arm"]))
    if not arms:
        return runs.reindex(columns=[*runs.columns, *cols])
    return runs.join(arms_table(cfg, arms).set_index("arm")[cols], on="arm")


def load(cfg: Config, paths: Paths) -> VrevResult:
    """Read stage 03's outputs back."""
    metrics = read_json(paths.metrics_file("alignment"))
    table = pd.read_csv(paths.stage("vrev") / "alignment.csv")
    main = _main(cfg, paths, table)
    cell = analysed_cell(table, cfg)
    early = cell[cell["arm"].isin(["early", "large_batch"])]
    sens = _with_settings(cfg, cell[cell["arm"].str.startswith("sens_")])
    return VrevResult(
        table, main, early, sens, pooled(main), pooled(cell[cell["arm"] == "early"]),
        metrics["trajectory_model"], _between(cfg, paths), _methods(cfg, paths), metrics,
        AlignmentHarm.from_json(metrics["alignment_harm"]),
    )
