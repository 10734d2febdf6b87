"""The shock regime measured: its runs over their logged steps, each arm at T and the
ordering (blocking.json's `shock`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stages.blocking.curves import run_curve
from gravrev.stages.blocking.ordering import Ordering, ordering
from gravrev.stages.blocking.shock.regime import shock_arm
from gravrev.stages.blocking.summaries import ArmMetrics
from gravrev.store.atomic import read_npz
from gravrev.store.paths import Paths


@dataclass(frozen=True)
class ShockMetrics:
    """The claim arms in the shock regime (shock.regime): each arm, the ordering."""

    lr: float
    warmup: int
    steps: int
    arms: dict[str, ArmMetrics]  # unblocked and the shock regime's arms
    ordering: dict[str, Ordering]

    def to_json(self) -> dict:
        return {"lr": self.lr, "warmup": self.warmup, "steps": self.steps,
                "arms": {a: m.to_json() for a, m in self.arms.items()},
                "ordering": {m: o.to_json() for m, o in self.ordering.items()}}

    @classmethod
    def from_json(cls, d: dict) -> ShockMetrics:
        return cls(d["lr"], d["warmup"], d["steps"],
                   {a: ArmMetrics.from_json(m) for a, m in d["arms"].items()},
                   {m: Ordering.from_json(o) for m, o in d["ordering"].items()})


def shock_curves(cfg: Config, paths: Paths, final: pd.DataFrame) -> pd.DataFrame:
    """Every shock-regime run over its logged steps (shock.regime)."""
    mask = probe_selection(cfg, paths)
    v = {h: load_v_rev(cfg, paths, h)[cfg.layer] for h in final["history"].unique()}
    folder = paths.stage("blocking")
    logs = pd.read_csv(folder / "shock_log.csv").set_index(["arm", "history", "seed"])
    rows = []
    for r in final[["arm", "history", "seed"]].itertuples(index=False):
        acts = read_npz(folder / "shock" / r.history / f"{shock_arm(r.arm)}_seed{r.seed}.npz")
        c = run_curve(cfg, acts, logs.loc[(r.arm, r.history, r.seed)], v[r.history], mask)
        rows.append(c.assign(arm=r.arm, history=r.history, seed=r.seed))
    return pd.concat(rows, ignore_index=True)


def shock_metrics(cfg: Config, arms: dict[str, ArmMetrics]) -> ShockMetrics:
    """The shock regime's arms (summarised from its final rows with their areas), ordered."""
    sc = cfg.regime.shock
    return ShockMetrics(sc.lr, sc.warmup, sc.steps, arms, ordering(arms, sc.steps))
