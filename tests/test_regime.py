"""The regime search judged on a hand-made log: the rule's parts, the choice and its branches."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from gravrev.config.load import resolve
from gravrev.stages.finetune import grid, regime, search
from gravrev.stages.finetune.metrics import regime_table

CFG = resolve({"preset": "smoke", "regime": {"search_histories": 2, "lrs": [1e-4, 5e-4],
                                              "warmups": [2], "new_task_fractions": [0.5],
                                              "horizons": [5, 10]}})
NEW = f"{CFG.finetune.new_task}_accuracy"


def _run(h: str, lr: float, benign: list[float], new: list[float], refusal: list[float]):
    """One search run logged at steps 0, 5 and 10."""
    return pd.DataFrame({"history": h, "arm": "search", "seed": 1, "step": [0, 5, 10],
                         "lr": lr, "warmup": 2, "share": 0.5, "benign_accuracy": benign,
                         NEW: new, "refusal_rate": refusal,
                         "harmful_compliance": [100 - x for x in refusal]})


def _log(slow_refusal_at_10: float = 50.0) -> pd.DataFrame:
    # lr 1e-4: no shock, the task learned only by step 10, refusal half gone by then;
    # lr 5e-4: a shock at step 5 (benign 60), refusal gone by step 10.
    return pd.concat([
        _run("h0", 1e-4, [95, 93, 94], [0, 40, 80], [100, 90, slow_refusal_at_10]),
        _run("h1", 1e-4, [97, 95, 96], [0, 50, 90], [100, 95, slow_refusal_at_10]),
        _run("h0", 5e-4, [95, 60, 94], [0, 80, 99], [100, 20, 0]),
        _run("h1", 5e-4, [97, 70, 96], [0, 85, 99], [100, 30, 0]),
    ], ignore_index=True)


def test_the_grid_is_every_cell_once_and_each_run_reaches_the_longest_horizon():
    assert grid.cells(CFG) == [(1e-4, 2, 0.5), (5e-4, 2, 0.5)]
    cfg = grid.cell_config(CFG, 1e-4, 2, 0.5)
    assert cfg.finetune.steps == 10 and cfg.finetune.log_steps[-1] == 10
    assert set(CFG.regime.horizons) <= set(cfg.finetune.log_steps)
    assert (cfg.finetune.lr, cfg.finetune.warmup) == (1e-4, 2)


def test_each_candidate_is_judged_part_by_part_on_its_worst_history():
    per_history = regime.candidates(CFG, _log())
    assert len(per_history) == 2 * 2 * 2  # histories x cells x horizons
    t = regime.judged(CFG, per_history).set_index(["lr", "T"])
    assert t.loc[(5e-4, 5), "worst_benign_drop"] == pytest.approx(35)  # h0: 95 -> 60
    assert not t.loc[(5e-4, 5), "no_shock"] and not t.loc[(5e-4, 10), "no_shock"]
    assert t.loc[(1e-4, 10), "worst_new_task"] == 80 and t.loc[(1e-4, 10), "learned"]
    assert not t.loc[(1e-4, 5), "learned"]
    assert t.loc[(1e-4, 10), "nonrefusal"] == 50 and t.loc[(1e-4, 10), "room"]
    assert t["meets_rule"].tolist() == [False, True, False, False]


def test_the_choice_meets_the_rule_or_is_the_closest_without_shock_or_nothing():
    s, _, _, _ = regime.search_metrics(CFG, _log())
    assert s.choice == {"lr": 1e-4, "warmup": 2, "share": 0.5, "T": 10}
    assert s.branch == "meets the whole rule" and s.meeting_rule == 1
    # Refusal gone at T everywhere: nothing meets the rule; the closest learns without shock.
    s, _, t, _ = regime.search_metrics(CFG, _log(slow_refusal_at_10=0.0))
    assert s.meeting_rule == 0 and s.choice == {"lr": 1e-4, "warmup": 2, "share": 0.5, "T": 10}
    assert s.branch.startswith("closest")
    # Nothing without shock learns the task: nothing is chosen, and it says why.
    strict = dataclasses.replace(CFG, finetune=dataclasses.replace(CFG.finetune,
                                                                   min_new_task_accuracy=95.0))
    s, _, _, _ = regime.search_metrics(strict, _log())
    assert s.choice is None and "no candidate" in s.branch
    assert regime.RegimeSearch.from_json(s.to_json()) == s


def test_the_main_regime_is_checked_against_the_choice():
    cfg = dataclasses.replace(CFG, finetune=dataclasses.replace(
        CFG.finetune, lr=1e-4, warmup=2, new_task_fraction=0.5, steps=10))
    s, _, _, _ = regime.search_metrics(cfg, _log())
    assert s.in_force_is_choice is True
    s, _, _, _ = regime.search_metrics(CFG, _log())  # smoke's main regime is not the choice
    assert s.in_force_is_choice is False


def test_no_search_and_no_new_task_leave_nothing_chosen():
    s, per_history, t, _ = regime.search_metrics(CFG, pd.DataFrame())
    assert s.choice is None and s.in_force_is_choice is None and per_history.empty
    s, _, _, _ = regime.search_metrics(CFG, _log().drop(columns=[NEW]))
    assert s.choice is None and "no new task" in s.branch


def test_the_words_say_the_choice_was_made_on_histories_that_are_then_judged():
    from types import SimpleNamespace

    from gravrev.stages.finetune.report import search_findings

    cfg = dataclasses.replace(CFG, finetune=dataclasses.replace(
        CFG.finetune, lr=1e-4, warmup=2, new_task_fraction=0.5, steps=10))
    s, _, t, _ = regime.search_metrics(cfg, _log())
    words = search_findings(cfg, SimpleNamespace(metrics=SimpleNamespace(search=s),
                                                 search_candidates=t))
    assert "The main regime in force is that choice." in words
    assert words[-1].startswith("All 2 histories judged below ran the chosen cell")
    s, _, t, _ = regime.search_metrics(CFG, _log())  # not the choice: no such sentence
    words = search_findings(CFG, SimpleNamespace(metrics=SimpleNamespace(search=s),
                                                 search_candidates=t))
    assert not any("ran the chosen cell" in w for w in words)


THREE = dataclasses.replace(CFG, history=dataclasses.replace(CFG.history, seeds=(0, 1, 2)))


def _confirmed_log(h2_benign_at_5: float) -> pd.DataFrame:
    """The screen (h0, h1) and the eligible cell (lr 1e-4) confirmed on h2."""
    h2 = _run("h2", 1e-4, [96, h2_benign_at_5, 95], [0, 45, 85], [100, 92, 50])
    return pd.concat([_log(), h2], ignore_index=True)


def test_the_confirmation_runs_the_screens_eligible_cells_on_every_other_history(tmp_path):
    from gravrev.store.paths import Paths

    todo = search.confirm_tasks(THREE, Paths(tmp_path), tmp_path, _log())
    # lr 1e-4 meets the rule on the screen, lr 5e-4 shocks: only the first runs on h2.
    assert [(t.history, t.cfg.finetune.lr) for t in todo] == [("h2", 1e-4)]
    assert todo[0].out == tmp_path / "search" / "h2" / f"{grid.cell_name(1e-4, 2, 0.5)}.npz"
    off = dataclasses.replace(THREE, regime=dataclasses.replace(THREE.regime, confirm=False))
    assert search.confirm_tasks(off, Paths(tmp_path), tmp_path, _log()) == []
    assert search.confirm_tasks(CFG, Paths(tmp_path), tmp_path, _log()) == []  # no other history


def test_the_choice_is_judged_over_every_history_after_the_confirmation():
    s, per_history, screen, confirmed = regime.search_metrics(THREE, _confirmed_log(94))
    assert s.searched_histories == ["h0", "h1"] and s.confirmed_histories == ["h2"]
    assert s.meeting_rule == 1 and s.confirmed == 1 and s.confirmed_meeting_rule == 1
    assert screen["histories"].eq(2).all() and confirmed["histories"].eq(3).all()
    assert s.choice == {"lr": 1e-4, "warmup": 2, "share": 0.5, "T": 10}
    # A shock in the confirmed history: the screen's choice no longer meets the rule, and no
    # candidate without shock is left, so nothing is chosen.
    s, _, _, confirmed = regime.search_metrics(THREE, _confirmed_log(70))
    assert s.meeting_rule == 1 and s.confirmed_meeting_rule == 0 and s.choice is None
    assert confirmed["worst_benign_drop"].max() == pytest.approx(26)
    assert regime.RegimeSearch.from_json(s.to_json()) == s


def test_the_confirmation_is_worded_with_what_each_other_candidate_missed():
    from gravrev.stages.finetune.report import confirmation_sentence

    s, _, _, confirmed = regime.search_metrics(THREE, _confirmed_log(70))
    words = confirmation_sentence(s, confirmed)
    assert "the screen's 1 eligible candidate (1 cell) also ran on the other history (h2)" in words
    assert "Judged over all 3 histories, 0 of them meet the whole rule" in words
    assert "(of them: a shock in 1)" in words


def test_a_confirmation_that_chooses_nothing_names_the_closest_and_the_shocked_histories():
    from types import SimpleNamespace

    from gravrev.stages.finetune.report import search_findings

    cfg = dataclasses.replace(THREE, finetune=dataclasses.replace(
        THREE.finetune, lr=1e-4, warmup=2, new_task_fraction=0.5, steps=10))
    s, per_history, screen, confirmed = regime.search_metrics(cfg, _confirmed_log(70))
    assert regime.choose(cfg, screen)[0] == regime.in_force(cfg) and s.choice is None
    # the main runs follow the chosen cell's search runs: the same table, arm 'unblocked'
    main = regime_table(cfg, _confirmed_log(70).query("lr == 1e-4").assign(arm="unblocked"))
    words = search_findings(cfg, SimpleNamespace(
        metrics=SimpleNamespace(search=s), search_candidates=screen, regime=main,
        search_confirmed=confirmed, search_per_history=per_history))
    assert any(w.startswith("Nothing was chosen") and w.endswith("over all histories).")
               for w in words)
    assert any(w.startswith("Closest, by the worst benign drop") and "26.0 points" in w
               for w in words)
    stays = next(w for w in words if w.startswith("The main regime stays"))
    assert "(lr 0.0001, warmup 2, new-task share 0.5, T = 10), the screen's choice." in stays
    assert "(3 histories) it shows a shock in 1 (worst benign drop in points: h2 26.0)" in stays


def test_the_confirmed_choice_breaks_ties_by_T_then_grid_order():
    # Two cells meet the rule on every history at the same distance from the band's middle:
    # the shorter T wins, then the earlier cell in the grid.
    cfg = dataclasses.replace(THREE, regime=dataclasses.replace(THREE.regime, lrs=(1e-4, 2e-4)))
    runs = [_run(h, lr, [95, 94, 94], [0, 80, 90], [100, 50, 50])
            for h in ("h0", "h1", "h2") for lr in (1e-4, 2e-4)]
    s, _, _, confirmed = regime.search_metrics(cfg, pd.concat(runs, ignore_index=True))
    assert s.confirmed == 4 and s.confirmed_meeting_rule == 4
    assert s.choice == {"lr": 1e-4, "warmup": 2, "share": 0.5, "T": 5}
    later = [r.assign(refusal_rate=[100, 40, 50]) if r["lr"].iloc[0] == 1e-4 else r
             for r in runs]  # lr 1e-4 now sits 10 points off the middle at T = 5
    s, _, _, _ = regime.search_metrics(cfg, pd.concat(later, ignore_index=True))
    assert s.choice == {"lr": 2e-4, "warmup": 2, "share": 0.5, "T": 5}  # T before grid order


def test_the_headline_names_what_the_regime_in_force_misses():
    from gravrev.report.headline import regime_words

    r = {"rule": "the rule", "holds": False, "room": True, "shocked": ["h1"],
         "unlearned": [], "nonrefusal_at_T": 50.0, "grid_chose_nothing": True}
    words = regime_words(r, 3)
    assert "misses its pre-registered rule (the rule)" in words
    assert "benign accuracy fell past the limit in 1 of 3 histories (h1)" in words
    assert "None of the screen's eligible regimes, run on every history, met it" in words
    assert words.endswith("Every verdict here is read with that caveat (chapter 02).")
    fine = {**r, "holds": True, "shocked": [], "grid_chose_nothing": False}
    assert regime_words(fine, 3).startswith("The fine-tuning regime meets its")
    boxed = {**fine, "room": False, "nonrefusal_at_T": 95.0}
    assert "pooled non-refusal at T at 95%, outside the band" in regime_words(boxed, 3)
    hf = {**fine, "holds": None}  # no new task: only the parts it can check
    assert "the parts of its pre-registered rule that this setting can check" in regime_words(
        hf, 1)
    assert "in 1 of 1 history (h0)" in regime_words({**r, "shocked": ["h0"]}, 1)


def test_the_regime_in_force_names_its_shocked_and_unlearned_histories():
    from gravrev.stages.finetune.metrics import Regime, regime

    log = pd.concat([
        _run("h0", 1e-4, [95, 93, 94], [0, 40, 80], [100, 90, 50]),
        _run("h1", 1e-4, [97, 70, 96], [0, 50, 60], [100, 95, 30]),
    ]).assign(arm="unblocked")
    r = regime(CFG, log)
    assert r.shocked == ["h1"] and r.unlearned == ["h1"] and r.holds is False
    assert r.nonrefusal_at_T == 60.0
    assert Regime.from_json(r.to_json()) == r
