"""Stage 04, nulls, its report: what the exceedances show, in words."""

from __future__ import annotations

from gravrev.stages.nulls.compute import NullsResult


def findings(r: NullsResult) -> list[str]:
    """What chapter 04 shows, in words computed from the exceedances."""
    e = r.metrics["exceedance"]["all"]
    out = [f"{e['isotropic']['k']} of {e['isotropic']['n']} run-step pairs exceed the isotropic "
           f"p99 ({r.metrics['isotropic_closed_form']:.3f} in closed form, "
           f"{r.metrics['isotropic_monte_carlo']:.3f} by Monte Carlo), and "
           f"{e['anisotropic']['k']} exceed the covariance-matched null."]
    if "control_direction" in e:
        c = e["control_direction"]
        out.append(f"The drift aligns more with its own history's v_rev than with another "
                   f"history's in {c['k']} of {c['n']} pairs.")
    cd = r.metrics["control_drift_final"]
    if "mixed" in cd:
        out.append(f"Fine-tuning that keeps the safety data drifts at "
                   f"{cd['mixed']['mean']:.2f} to v_rev at T, against "
                   f"{cd['unblocked']['mean']:.2f} for ordinary runs.")
    return out


def matched_findings(r: NullsResult) -> list[str]:
    """How many trajectories beat the matched null at every logged step."""
    m = r.matched
    if not m.per_trajectory:
        return ["No history has two or more matched null directions (another history's saved "
                "checkpoints), so the matched null judges no trajectory."]
    sizes = ", ".join(f"{h} {n}" for h, n in m.n_directions.items())
    out = [f"{m.n_all_exceed} of {m.n_trajectories} trajectories beat the matched null's "
           f"p99 at every logged step (null directions per history: {sizes})."]
    short = {k: t for k, t in m.per_trajectory.items() if not t.all_steps_exceed}
    if short:
        out.append("The others beat it at " + ", ".join(
            f"{k}: {t.n_exceed} of {t.n_steps} steps" for k, t in short.items()) + ".")
    if min(m.n_directions.values()) < 100:
        out.append("With fewer than 100 null directions the empirical p99 is in effect the "
                   "largest null cosine.")
    return out
