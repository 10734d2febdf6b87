"""Chapter 02's own figures: the regime search against its rule."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from gravrev.report.figures import FIGURE_WIDTH, MAX_ASPECT, panel_grid


def regime_search(candidates: pd.DataFrame, max_drop: float, min_new_task: float,
                  band: tuple[float, float]) -> plt.Figure:
    """Each searched cell against the regime's rule at every horizon T, one line per cell."""
    if candidates.empty:  # a setting that searched nothing still gets its (empty) figure
        fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, FIGURE_WIDTH / MAX_ASPECT))
        ax.text(0.5, 0.5, "No regime was searched in this setting", ha="center", va="center")
        ax.set(title="The regime search", xticks=[], yticks=[])
        return fig
    t = candidates.assign(cell=[f"lr {a:g}, warmup {b:d}, share {c:g}" for a, b, c in
                                zip(candidates["lr"], candidates["warmup"], candidates["share"],
                                    strict=True)])
    panels = (("worst_benign_drop", "worst benign drop below θ_S (points)", max_drop),
              ("worst_new_task", "worst new-task accuracy at T (%)", min_new_task),
              ("nonrefusal", "pooled non-refusal at T (%)", None))
    fig, axes = panel_grid(len(panels), columns=len(panels), panel_aspect=0.8)
    for i, (ax, (col, label, line)) in enumerate(zip(axes, panels, strict=True)):
        sns.lineplot(t, x="T", y=col, hue="cell", style="cell", markers=True, dashes=False,
                     ax=ax, legend=i == len(panels) - 1)
        if line is not None:
            ax.axhline(line, color="black", ls="--", lw=1)
        else:
            ax.axhspan(*band, color="green", alpha=0.12)
        ax.set(title=label, xlabel="horizon T (steps)", ylabel=label.split(" (")[-1][:-1])
    axes[-1].legend(fontsize=7, title="cell", loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("The regime search: every cell against the rule (dashed: the rule's limit; "
                 "green: the band)", fontsize=11)
    fig.tight_layout()
    return fig
