"""Stage 02, finetune, in words: what chapter 02 says, computed from the logs."""

from __future__ import annotations

import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.finetune.metrics import FinetuneResult
from gravrev.stages.finetune.regime import RegimeSearch, choose


def regime_sentence(cfg: Config, r: FinetuneResult) -> str:
    """The regime's rule against the main runs, part by part, with the numbers that decide it."""
    t, m = r.regime, r.metrics.regime
    low, high = cfg.regime.nonrefusal_band
    nr = t["nonrefusal_at_T"].mean()
    shock = (f"benign accuracy's worst drop below θ_S is {t['benign_drop'].max():.1f} points "
             f"(limit {cfg.regime.max_benign_drop:g}; within it in "
             f"{int(t['no_shock'].sum())} of {len(t)} runs)")
    room = (f"pooled non-refusal at T is {nr:.0f}%, "
            + (f"inside the band {low:g}-{high:g}%" if m.room else
               f"{'above' if nr >= high else 'below'} the band {low:g}-{high:g}%, so a verdict "
               f"on non-refusal at T has no room {'upward' if nr >= high else 'downward'}"))
    if r.new_task is None:
        return (f"The regime's rule in the main runs: {shock}; {room}. The new-task part is not "
                f"checked: this setting has no new task (its logs have no "
                f"{cfg.finetune.new_task}_accuracy).")
    learned = (f"the new task reaches >= {cfg.finetune.min_new_task_accuracy:g}% by T in "
               f"{int(t['learned'].sum())} of {len(t)} runs (worst "
               f"{t['new_task_accuracy'].min():.0f}%)")
    verdict = ("The regime meets the whole rule." if m.holds and m.room else
               "The regime meets the rule's first two parts but not the third." if m.holds else
               "The regime does not meet its own rule, and the book says so.")
    return f"The regime's rule in the main runs: {shock}; {learned}; {room}. {verdict}"


def _at_least(values: pd.Series) -> str:
    """'100% in every one' at the ceiling, else 'x% or more'."""
    low = values.min()
    return "100% in every one" if low >= 100 else f"{low:.0f}% or more"


def search_findings(cfg: Config, r: FinetuneResult) -> list[str]:
    """The search and the choice, in words computed from the judged candidates."""
    s = r.metrics.search
    if not s.candidates:
        return [f"No regime was searched ({s.branch})."]
    t = r.search_candidates
    n_cells = len(t.groupby(["lr", "warmup", "share"]))
    out = [f"The search judged {s.candidates} candidates ({n_cells}"
           f" cells × {t['T'].nunique()} horizons) on {len(s.searched_histories)} histories "
           f"({', '.join(s.searched_histories)}). {int(t['no_shock'].sum())} are without shock, "
           f"{int(t['learned'].sum())} learn the new task by T, "
           f"{s.without_shock_and_learned} do both, and {s.meeting_rule} meet the whole rule."]
    if s.meeting_rule == 0:
        nr, learned = t["nonrefusal"], t[t["learned"]]
        room = (f"{int(t['room'].sum())} candidates leave room at T, none of them with the "
                "new task learned" if t["room"].any() else "no candidate leaves room at T")
        out.append(f"No candidate meets the whole rule: {room}. Pooled non-refusal at T ranges "
                   f"from {nr.min():.0f}% to {nr.max():.0f}% over the grid"
                   + (f"; where the new task is learned it is {_at_least(learned['nonrefusal'])}."
                      if len(learned) else
                      "; no candidate learns the new task."))
    if s.confirmed_histories:
        out.append(confirmation_sentence(s, r.search_confirmed))
    if s.choice is None:
        over = (" (among the confirmed candidates, over all histories)"
                if s.confirmed_histories else "")
        out.append(f"Nothing was chosen: {s.branch}{over}.")
        if s.confirmed_histories:
            out += unchosen_sentences(cfg, r)
    else:
        c = s.choice
        over = (f", judged over all {len(s.searched_histories) + len(s.confirmed_histories)} "
                "histories" if s.confirmed_histories else "")
        out.append(f"The rule chose lr {c['lr']:g}, warmup {c['warmup']}, new-task share "
                   f"{c['share']:g}, T = {c['T']} ({s.branch}{over}).")
        out.append("The main regime in force is that choice." if s.in_force_is_choice else
                   "The main regime in force is NOT the rule's choice: its results below do not "
                   "follow the registered procedure.")
    if s.in_force_is_choice:
        k = len(s.searched_histories) + len(s.confirmed_histories)
        which = ("All" if k == len(cfg.histories) else f"{k} of the") + \
            f" {len(cfg.histories)} histories judged below"
        out.append(f"{which} ran the chosen cell in the search, at the same fine-tuning seed "
                   f"({cfg.finetune.seeds[0]}): that search run follows each one's main "
                   "unblocked run step for step up to T (the same θ_S, seed, batches and "
                   "learning rate; it only runs on past T), and the main run is computed again. "
                   "The regime was chosen on unblocked runs only, never on a blocking arm's "
                   "outcome.")
    return out


def confirmation_sentence(s: RegimeSearch, confirmed: pd.DataFrame) -> str:
    """The confirmation: the screen's eligible candidates judged again over every history."""
    n = len(s.searched_histories) + len(s.confirmed_histories)
    cells = len(confirmed.groupby(["lr", "warmup", "share"]))
    missed = confirmed[~confirmed["meets_rule"]]
    misses = (("no_shock", "a shock"), ("learned", "the new task missed"),
              ("room", "no room at T"))
    parts = [f"{word} in {int((~missed[k]).sum())}" for k, word in misses if (~missed[k]).any()]
    which = "the others" if s.confirmed_meeting_rule else "them"
    tail = f" (of {which}: {', '.join(parts)})" if parts else ""
    return (f"Confirmation: the screen's {_count(s.confirmed, 'eligible candidate')} "
            f"({_count(cells, 'cell')}) also ran on the other "
            f"{_count(len(s.confirmed_histories), 'history', 'histories')} "
            f"({', '.join(s.confirmed_histories)}). Judged over all {n} histories, "
            f"{s.confirmed_meeting_rule} of them "
            f"{'meets' if s.confirmed_meeting_rule == 1 else 'meet'} the whole rule{tail}.")


def _cell(c: dict) -> str:
    return (f"lr {c['lr']:g}, warmup {int(c['warmup'])}, new-task share {c['share']:g}, "
            f"T = {int(c['T'])}")


def unchosen_sentences(cfg: Config, r: FinetuneResult) -> list[str]:
    """After a confirmation that chose nothing: the closest candidate, and the regime in force
    against the rule history by history."""
    s, t = r.metrics.search, r.search_confirmed
    out = []
    learned = t[t["learned"]]
    if len(learned):
        c = learned.sort_values("worst_benign_drop", kind="stable").iloc[0]
        out.append(f"Closest, by the worst benign drop among the confirmed candidates that "
                   f"learn the new task: {_cell(c)} (worst drop {c['worst_benign_drop']:.1f} "
                   f"points against a limit of {cfg.regime.max_benign_drop:g}; pooled "
                   f"non-refusal at T {c['nonrefusal']:.0f}%).")
    screen_choice, _ = choose(cfg, r.search_candidates)  # the rule on the screen alone
    whose = ("the screen's choice" if screen_choice == s.in_force
             else "which is not the screen's choice either")
    runs = r.regime  # the main unblocked runs, the rule's parts per run (regime_table)
    shocked = runs[~runs["no_shock"].astype(bool)]
    where = ", ".join(f"{h} {d:.1f}" for h, d in zip(shocked["history"], shocked["benign_drop"],
                                                     strict=True))
    out.append(f"The main regime stays the one in force ({_cell(s.in_force)}), {whose}. In its "
               f"main runs ({runs['history'].nunique()} histories) it shows a shock in "
               f"{len(shocked)}" + (f" (worst benign drop in points: {where})" if len(shocked)
                                    else "")
               + ", so every verdict in it is read with that caveat. The regime was not moved "
               "after this run's outcome: no rule written before it would pick another.")
    return out


def _count(n: int, one: str, many: str | None = None) -> str:
    """'1 cell', '3 cells', and 'history' alone for one: counts read right at 1."""
    if n == 1:
        return "history" if one == "history" else f"1 {one}"
    return f"{n} {many or one + 's'}"


def confirmed_table(r: FinetuneResult) -> pd.DataFrame:
    """The confirmed candidates, judged over every history, for display."""
    return search_table(r, r.search_confirmed)


def search_table(r: FinetuneResult, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The judged candidates (the screen's by default), verdict columns first, for display."""
    t = r.search_candidates if table is None else table
    cols = ["meets_rule", "no_shock", "learned", "room", "lr", "warmup", "share", "T",
            "worst_benign_drop", "worst_new_task", "nonrefusal", "harmful"]
    out = t[cols].round({"worst_benign_drop": 1, "worst_new_task": 1, "nonrefusal": 1,
                         "harmful": 1})
    return out.assign(lr=out["lr"].map("{:g}".format)).rename(
        columns={"share": "new-task share", "T": "T (steps)"})


def findings(cfg: Config, r: FinetuneResult) -> list[str]:
    """What chapter 02 shows, in words computed from the logs."""
    log = r.log[r.log["arm"] == "unblocked"]
    start = log[log["step"] == 0]["refusal_rate"]
    end = log[log["step"] == cfg.finetune.steps]["refusal_rate"]
    spread = (f"every run at {end.min():.0f}%" if round(end.min()) == round(end.max())
              else f"range {end.min():.0f} to {end.max():.0f}%")
    out = [f"Benign fine-tuning on harmless data takes refusal from {start.mean():.0f}% at "
           f"θ_S to {end.mean():.0f}% at step {cfg.finetune.steps} (mean over "
           f"{len(end)} runs in {log['history'].nunique()} histories; {spread})."]
    half = start.mean() / 2
    means = log.groupby("step")["refusal_rate"].mean()
    below = means[means <= half]
    if len(below) and start.mean() > 0:
        out.append(f"Half of the refusal is gone, on average, by step {int(below.index[0])}.")
    out.append(regime_sentence(cfg, r))
    mixed = r.log[(r.log["arm"] == "mixed") & (r.log["step"] == cfg.finetune.steps)]
    at_t = log[log["step"] == cfg.finetune.steps]
    if len(mixed):
        kept, plain = mixed["refusal_rate"].mean(), at_t["refusal_rate"].mean()
        out.append(f"With the safety data kept in the mix, refusal at T is {kept:.0f}%, against "
                   f"{plain:.0f}% without it: "
                   + ("the drift of that control is not reversion." if kept > plain else
                      "keeping the safety data did not keep refusal here."))
    if "prefilled_content" in log:
        late, floor = at_t["prefilled_content"].mean(), cfg.history.checks.safe_latent
        out.append(f"The latent harmful content (the compliant answer's first word prefilled) is "
                   f"{late:.0f}% at T, against θ_S's pre-registered floor of {floor:g}%: "
                   + ("lost refusal is not masked by forgetting." if late >= floor else
                      "below it, part of the lost refusal may be forgetting, so harmful "
                      "compliance, not non-refusal alone, says what reverted."))
    return out


def at_T_caption(r: FinetuneResult) -> str:
    """The caption of the table of every run at T."""
    if r.new_task is None:
        return "Every run at step T (the new task is not measured in this setting: NaN)"
    return "Every run at step T"


def regime_caption(r: FinetuneResult) -> str:
    """The caption of the regime's table."""
    if r.new_task is None:
        return ("The regime's rule per main run (the new task is not measured in this setting: "
                "new_task_accuracy is NaN, learned is empty)")
    return ("The regime's rule per main run: benign accuracy's worst drop below θ_S (points), "
            "the new task at T, non-refusal and harmful compliance at T (%)")
