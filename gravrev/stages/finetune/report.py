"""Stage 02, finetune, in words: what chapter 02 says, computed from the logs."""

from __future__ import annotations

from gravrev.config.load import Config
from gravrev.stages.finetune.metrics import FinetuneResult


def regime_sentence(cfg: Config, r: FinetuneResult) -> str:
    """The regime's rule against the runs; where the setting has no new task, what stands in."""
    fc = cfg.finetune
    rule = ("The pre-registered regime's rule (the new task at >= "
            f"{fc.min_new_task_accuracy:g}% by T)")
    if r.new_task is None:
        fin = r.log[(r.log["arm"] == "unblocked") & (r.log["step"] == fc.steps)]
        return (f"{rule} is not checked: this setting has no new task (its logs have no "
                f"{fc.new_task}_accuracy). The benign task held out stands in for it: "
                f"{fin['benign_accuracy'].mean():.0f}% accuracy at T (mean over {len(fin)} runs).")
    learned = r.regime["learned"]
    return (f"{rule} holds in {int(learned.sum())} of {len(learned)} runs"
            + ("; the regime is as registered." if learned.all() else
               "; the regime does not fully meet its own rule, and the book says so."))


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
    if len(mixed):
        out.append(f"With the safety data kept in the mix, refusal at T is "
                   f"{mixed['refusal_rate'].mean():.0f}%: the control drift is not reversion.")
    if "prefilled_content" in log:
        late = log[log["step"] == cfg.finetune.steps]["prefilled_content"]
        out.append(f"The latent harmful content (prefilled) stays at {late.mean():.0f}% at T, so "
                   "lost refusal is not masked by forgetting.")
    return out


def at_T_caption(r: FinetuneResult) -> str:
    """The caption of the table of every run at T."""
    if r.new_task is None:
        return "Every run at step T (the new task is not measured in this setting: NaN)"
    return "Every run at step T"


def regime_caption(r: FinetuneResult) -> str:
    """The caption of the regime's table."""
    if r.new_task is None:
        return ("The regime's rule is not checked: this setting has no new task "
                "(new_task_accuracy is NaN, learned is empty), per run")
    return "The new task at T against the pre-registered rule, per run"
