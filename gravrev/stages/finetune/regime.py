"""The regime search judged: each cell and horizon against the pre-registered rule; the choice.

The rule is judged on the unblocked arm only, per searched history, before any blocking arm
runs. The choice, written with the rule before the search ran: among the candidates meeting
all three parts, the one whose pooled non-refusal at T is nearest the band's middle; if none
does, among those without shock that learn the new task, the one nearest the band; ties go
to the shortest T, then to grid order. Without such a candidate nothing is chosen. With
`regime.confirm`, the screen's eligible candidates are judged again over every history and
the same rule chooses among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gravrev.config.load import Config

CANDIDATE_KEYS = ("lr", "warmup", "share", "T")


def candidates(cfg: Config, log: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, horizon and history: the rule's three quantities and harm at T."""
    col = f"{cfg.finetune.new_task}_accuracy"
    rows = []
    for (h, lr, warmup, share), g in log.groupby(["history", "lr", "warmup", "share"], sort=False):
        g = g.sort_values("step")
        start = g[g["step"] == 0].iloc[0]
        for T in cfg.regime.horizons:
            upto, at = g[g["step"] <= T], g[g["step"] == T].iloc[0]
            rows.append({
                "history": h, "lr": lr, "warmup": int(warmup), "share": share, "T": T,
                "benign_drop": float(start["benign_accuracy"] - upto["benign_accuracy"].min()),
                "new_task_at_T": float(at[col]) if col in at else float("nan"),
                "nonrefusal_at_T": float(100 - at["refusal_rate"]),
                "harmful_at_T": float(at["harmful_compliance"]),
            })
    return pd.DataFrame(rows)


def judged(cfg: Config, per_history: pd.DataFrame) -> pd.DataFrame:
    """Each candidate (cell and T) against the rule: every part, pooled over the histories."""
    rc, low_high = cfg.regime, cfg.regime.nonrefusal_band
    g = per_history.groupby(list(CANDIDATE_KEYS), sort=False)
    out = g.agg(histories=("history", "nunique"), worst_benign_drop=("benign_drop", "max"),
                worst_new_task=("new_task_at_T", "min"),
                nonrefusal=("nonrefusal_at_T", "mean"),
                harmful=("harmful_at_T", "mean")).reset_index()
    out["no_shock"] = out["worst_benign_drop"] <= rc.max_benign_drop
    out["learned"] = out["worst_new_task"] >= cfg.finetune.min_new_task_accuracy
    out["room"] = (out["nonrefusal"] > low_high[0]) & (out["nonrefusal"] < low_high[1])
    out["meets_rule"] = out["no_shock"] & out["learned"] & out["room"]
    return out


def eligible(table: pd.DataFrame) -> pd.DataFrame:
    """The candidates the choice looks at: those meeting the rule, else those without shock
    that learn the new task (none: nothing can be chosen)."""
    full = table[table["meets_rule"]]
    return full if len(full) else table[table["no_shock"] & table["learned"]]


def choose(cfg: Config, table: pd.DataFrame) -> tuple[dict | None, str]:
    """The rule's choice among the candidates and which branch of the rule made it."""
    low, high = cfg.regime.nonrefusal_band
    order = table.reset_index(drop=True).assign(grid=lambda t: np.arange(len(t)))
    full = order[order["meets_rule"]]
    if len(full):
        key = (full["nonrefusal"] - (low + high) / 2).abs()
        pick, branch = full.assign(key=key), "meets the whole rule"
    else:
        part = order[order["no_shock"] & order["learned"]]
        if not len(part):
            return None, "no candidate is without shock and learns the new task"
        key = np.maximum(low - part["nonrefusal"], part["nonrefusal"] - high).clip(lower=0)
        pick, branch = part.assign(key=key), ("closest: no candidate meets the whole rule; "
                                              "nearest the band among those without shock "
                                              "that learn the new task")
    best = pick.sort_values(["key", "T", "grid"], kind="stable").iloc[0]
    return {k: float(best[k]) if k in ("lr", "share") else int(best[k])
            for k in CANDIDATE_KEYS}, branch


@dataclass(frozen=True)
class RegimeSearch:
    """The search's verdicts, the rule's choice and the regime in force (finetune.json)."""

    searched_histories: list[str]  # the screen's
    candidates: int
    meeting_rule: int
    without_shock_and_learned: int
    confirmed_histories: list[str]  # the other histories the screen's eligible cells ran on
    confirmed: int  # the screen's eligible candidates, judged again over every history
    confirmed_meeting_rule: int
    choice: dict | None  # lr, warmup, share, T
    branch: str  # which part of the selection rule chose it
    in_force: dict  # lr, warmup, share, T of the main regime (finetune)
    in_force_is_choice: bool | None  # None when nothing was searched

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict) -> RegimeSearch:
        return cls(**d)


def in_force(cfg: Config) -> dict:
    """The main regime's values, in the candidates' keys."""
    fc = cfg.finetune
    return {"lr": fc.lr, "warmup": fc.warmup, "share": fc.new_task_fraction, "T": fc.steps}


def search_metrics(cfg: Config, log: pd.DataFrame) -> tuple[RegimeSearch, pd.DataFrame,
                                                            pd.DataFrame, pd.DataFrame]:
    """The search judged: its verdicts, the per-history table, the screen's judged candidates
    and the confirmed ones (judged over every history; empty without confirmation)."""
    if log.empty or f"{cfg.finetune.new_task}_accuracy" not in log:
        why = ("no search (regime.search_histories is 0)" if log.empty
               else "no search: the setting has no new task")
        return (RegimeSearch([], 0, 0, 0, [], 0, 0, None, why, in_force(cfg), None),
                pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    per_history = candidates(cfg, log)
    screened = list(cfg.histories[: cfg.regime.search_histories])
    screen = judged(cfg, per_history[per_history["history"].isin(screened)])
    others = [h for h in per_history["history"].unique().tolist() if h not in screened]
    confirmed = pd.DataFrame()
    if others:
        keys = eligible(screen)[list(CANDIDATE_KEYS)]
        confirmed = judged(cfg, per_history.merge(keys, on=list(CANDIDATE_KEYS)))
    choice, branch = choose(cfg, confirmed if others else screen)
    search = RegimeSearch(sorted(screened), len(screen), int(screen["meets_rule"].sum()),
                          int((screen["no_shock"] & screen["learned"]).sum()), sorted(others),
                          len(confirmed), int(confirmed["meets_rule"].sum()) if others else 0,
                          choice, branch, in_force(cfg),
                          None if choice is None else choice == in_force(cfg))
    return search, per_history, screen, confirmed
