"""Stage 06's measurements, from its saved tables: each history's summary, the re-run's check,
the vocabulary readout, cos(v_rev, r), and the control verdicts (gravrev.stages.mediation.verdicts).

A history's summary is its mediation and route tables (gravrev.interp.steering's and
gravrev.interp.patching's) in a few numbers at the analysed layer; the chapter words them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from gravrev.claims.thresholds import change_tolerance
from gravrev.config.load import Config
from gravrev.interp.labels import EVERY_LAYER, NONE
from gravrev.stages.mediation.tables import TABLES
from gravrev.stages.mediation.verdicts import Controls, history_controls, majority
from gravrev.stages.skipped import skip_reason, skipped_metrics
from gravrev.store.atomic import read_json, write_json
from gravrev.store.paths import Paths


@dataclass(frozen=True)
class PatchSummary:
    """One patching direction: the recipient unpatched, and the groups that move it most."""

    unpatched: float
    top_group: str
    top_refusal: float
    bottom_group: str
    bottom_refusal: float


@dataclass(frozen=True)
class HistorySummary:
    """One history's measurements at the analysed layer: refusal in percent, margins in nats."""

    n: int
    refusal_helpful: float
    refusal_safe: float
    refusal_finetuned: float
    ablated_at_layer: float  # theta_S with the analysed layer's row of v_rev removed everywhere
    ablated_all_layers: float  # theta_S with each block's own row removed after it
    add_safe: dict[float, float]  # scale -> refusal of theta_S with scale * v_rev added
    add_helpful: dict[float, float]
    t_to_s: PatchSummary  # theta_S given one group of theta_T
    s_to_t: PatchSummary  # theta_T given one group of theta_S
    decision_block: dict[str, int | None]  # first block from which refusal is favoured to the end
    final_margin: dict[str, float]

    @classmethod
    def from_json(cls, d: dict) -> HistorySummary:
        def by_scale(curve: dict) -> dict[float, float]:
            return {float(k): v for k, v in curve.items()}

        return cls(**{**d, "add_safe": by_scale(d["add_safe"]),
                      "add_helpful": by_scale(d["add_helpful"]),
                      "t_to_s": PatchSummary(**d["t_to_s"]),
                      "s_to_t": PatchSummary(**d["s_to_t"])})


@dataclass(frozen=True)
class RerunCheck:
    """Whether the re-run fine-tuning (theta_T) reproduced stage 02's run."""

    seed: int
    same_batches: bool
    identical_activations: bool


@dataclass(frozen=True)
class MediationMetrics:
    """data/metrics/mediation.json: per history, the summary and whether the re-run reproduced."""

    preset: str
    layer: int
    n_layer: int
    position: str
    method: str
    scales: list[float]
    histories: dict[str, HistorySummary]
    finetune_rerun: dict[str, RerunCheck]
    readout: dict[str, ReadoutSummary]  # per history
    cos_v_rev_r: dict[str, float]  # per history, r as Arditi et al. orient it (toward refusal)
    controls: Controls

    def to_json(self) -> dict:
        return {"preset": self.preset, "layer": self.layer, "n_layer": self.n_layer,
                "position": self.position, "method": self.method, "scales": list(self.scales),
                "histories": {h: asdict(s) for h, s in self.histories.items()},
                "finetune_rerun": {h: asdict(r) for h, r in self.finetune_rerun.items()},
                "readout": {"per_history": {h: asdict(x) for h, x in self.readout.items()}},
                "refusal_direction": {"cos_v_rev_r": dict(self.cos_v_rev_r)},
                "controls": self.controls.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> MediationMetrics:
        return cls(d["preset"], d["layer"], d["n_layer"], d["position"], d["method"],
                   d["scales"], {h: HistorySummary.from_json(s) for h, s in d["histories"].items()},
                   {h: RerunCheck(**r) for h, r in d["finetune_rerun"].items()},
                   {h: ReadoutSummary(**x) for h, x in d["readout"]["per_history"].items()},
                   d["refusal_direction"]["cos_v_rev_r"], Controls.from_json(d["controls"]))


@dataclass(frozen=True)
class ReadoutSummary:
    """v_rev read through the vocabulary at theta_S, each score against its random null."""

    lens_score: float
    lens_percentile: float  # percent of the null's scores strictly below
    change_score: float
    change_percentile: float
    n_null: int


@dataclass
class MediationStageResult:
    """What chapter 06 shows; tables carry a `history` column."""

    layer: int  # the analysed layer
    baseline: pd.DataFrame  # checkpoint, refusal_rate, harmful_compliance, n
    sweeps: pd.DataFrame  # checkpoint, mode, layer, scale, rates (EVERY_LAYER: each own row)
    patching: pd.DataFrame  # patch (T->S | S->T), group, rates
    lens: pd.DataFrame  # checkpoint, layer, logp_refuse, logp_comply, margin
    runs: pd.DataFrame  # the re-run fine-tuning runs against stage 02's
    metrics: MediationMetrics | None  # None while they are being measured
    # direction, kind, checkpoint, mode, layer, scale, rates: v_rev and every control
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)
    directions: pd.DataFrame = field(default_factory=pd.DataFrame)  # cos with v_rev and r
    readout: pd.DataFrame = field(default_factory=pd.DataFrame)  # scores, null ranks, eps
    readout_tokens: pd.DataFrame = field(default_factory=pd.DataFrame)  # lens, change per token


def patch_summary(df: pd.DataFrame) -> PatchSummary:
    """One direction of a patch_table: the unpatched rate and the highest and lowest group."""
    unpatched = float(df.loc[df["group"] == NONE, "refusal_rate"].iloc[0])
    groups = df[df["group"] != NONE].reset_index(drop=True)  # ties: the first in group order
    top = groups.loc[groups["refusal_rate"].idxmax()]
    bottom = groups.loc[groups["refusal_rate"].idxmin()]
    return PatchSummary(unpatched, str(top["group"]), float(top["refusal_rate"]),
                        str(bottom["group"]), float(bottom["refusal_rate"]))


def decision_block(margins: np.ndarray) -> int | None:
    """The first block from which the refusal margin stays positive to the last; None if never."""
    margins = np.asarray(margins)
    if margins[-1] <= 0:
        return None
    below = np.flatnonzero(margins <= 0)
    return int(below[-1] + 1) if len(below) else 0


def history_summary(baseline: pd.DataFrame, sweeps: pd.DataFrame, patching: pd.DataFrame,
                    lens: pd.DataFrame, layer: int) -> HistorySummary:
    """Summarise one history's tables (run_mediation's, patch_table's, logit_lens's) at `layer`."""
    rate = baseline.set_index("checkpoint")["refusal_rate"]
    ablate = sweeps[sweeps["mode"] == "ablate"].set_index("layer")["refusal_rate"]
    add = sweeps[(sweeps["mode"] == "add") & (sweeps["layer"] == layer)]
    margins = {c: g.sort_values("layer")["margin"].to_numpy()
               for c, g in lens.groupby("checkpoint", sort=False)}
    s_to_t = patch_summary(patching[patching["patch"] == "S->T"])

    def curve(checkpoint: str) -> dict[float, float]:
        cur = add[add["checkpoint"] == checkpoint]
        return dict(zip(cur["scale"].astype(float), cur["refusal_rate"].astype(float),
                        strict=True))

    return HistorySummary(
        n=int(baseline["n"].iloc[0]),
        refusal_helpful=float(rate["θ_H"]),
        refusal_safe=float(rate["θ_S"]),
        refusal_finetuned=s_to_t.unpatched,
        ablated_at_layer=float(ablate[layer]),
        ablated_all_layers=float(ablate[EVERY_LAYER]),
        add_safe=curve("θ_S"),
        add_helpful=curve("θ_H"),
        t_to_s=patch_summary(patching[patching["patch"] == "T->S"]),
        s_to_t=s_to_t,
        decision_block={c: decision_block(m) for c, m in margins.items()},
        final_margin={c: float(m[-1]) for c, m in margins.items()},
    )


def summaries(result: MediationStageResult) -> dict[str, HistorySummary]:
    """Each history's summary, computed from the result's tables (unrounded)."""
    return {
        h: history_summary(*(df[df["history"] == h] for df in (
            result.baseline, result.sweeps, result.patching, result.lens)), result.layer)
        for h in dict.fromkeys(result.baseline["history"])
    }


def readouts(readout: pd.DataFrame) -> dict[str, ReadoutSummary]:
    """Each history's readout scores and their percentiles in the random-direction null."""
    return {r.history: ReadoutSummary(float(r.lens_score), float(r.lens_percentile),
                                      float(r.change_score), float(r.change_percentile),
                                      int(r.n_null))
            for r in readout.itertuples()}


def cos_v_rev_r(directions: pd.DataFrame) -> dict[str, float]:
    """Per history, cos(v_rev, r) at the analysed cell."""
    mine = directions[directions["direction"] == "v_rev"]
    return {r.history: float(r.cos_r) for r in mine.itertuples()}


def controls_metrics(result: MediationStageResult) -> Controls:
    """Each history's specificity ranks and ablation outcomes, and the verdicts over histories."""
    cos = cos_v_rev_r(result.directions)
    per = {}
    for h in dict.fromkeys(result.baseline["history"]):
        base = result.baseline[result.baseline["history"] == h]
        per[h] = history_controls(base, result.controls[result.controls["history"] == h],
                                  cos[h], change_tolerance(int(base["n"].min())))
    xs = list(per.values())
    return Controls(per, majority([x.distinct_from_r for x in xs]),
                    majority([x.ablation["v_rev"] for x in xs]),
                    majority([x.ablation["refusal"] for x in xs]))


def mediation_metrics(cfg: Config, result: MediationStageResult) -> MediationMetrics:
    """Per history, the summary, whether the re-run reproduced, the readout and the controls."""
    return MediationMetrics(
        cfg.preset, result.layer, cfg.model.n_layer, cfg.analysis.position,
        cfg.analysis.vrev_method, list(cfg.mediation.scales), summaries(result),
        {h: RerunCheck(int(r.seed), bool(r.same_batches), bool(r.acts_max_abs_diff == 0))
         for h, r in result.runs.set_index("history").iterrows()},
        readouts(result.readout), cos_v_rev_r(result.directions), controls_metrics(result),
    )


def _read(cfg: Config, paths: Paths, metrics: MediationMetrics | None) -> MediationStageResult:
    folder = paths.stage("mediation")
    t = {name: pd.read_csv(folder / f"{name}.csv") for name in TABLES}
    return MediationStageResult(cfg.layer, t["baseline"], t["sweeps"], t["patching"],
                                t["logit_lens"], pd.read_csv(folder / "runs.csv"), metrics,
                                t["controls"], t["directions"], t["readout"],
                                t["readout_tokens"])


def measure(cfg: Config, paths: Paths) -> None:
    """data/metrics/mediation.json from the saved tables."""
    if skip_reason(cfg, "mediation"):
        return skipped_metrics(cfg, paths, "mediation")
    write_json(paths.metrics_file("mediation"), mediation_metrics(cfg, _read(cfg, paths, None))
               .to_json())


def load(cfg: Config, paths: Paths) -> MediationStageResult:
    """Read stage 06's tables and metrics back."""
    return _read(cfg, paths, MediationMetrics.from_json(read_json(paths.metrics_file("mediation"))))
