"""PNG plots of a large-batch study (matplotlib, Agg): final top-1 per recipe vs global batch,
and the time-to-accuracy frontier. Each returns the written path, or ``None`` when there is
nothing to plot (the report then says why)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from larsbench.reports.plots import COLORS, figure, legend_below, log2_axis, proxy, save, plot_top1_vs_batch
from larsbench.reports.study import Frontier


def plot_study_accuracy(series: list[tuple[str, pd.DataFrame]], workload: str, path: Path) -> Path | None:
    """Final top-1 (mean, min–max over repeats) vs global batch, one line per recipe; a group
    whose runs diverged is an ✕ at 0, so a recipe that breaks down is visible where it does."""
    rows = pd.concat([part for _, part in series]) if series else pd.DataFrame()
    if rows.empty or rows["final_top1"].notna().sum() + rows["statuses"].map(lambda s: "diverged" in s).sum() == 0:
        return None
    return plot_top1_vs_batch(
        series, workload, path,
        failed=lambda part: part["statuses"].map(lambda s: "diverged" in s), failed_label="diverged (drawn at 0)",
        title="Final top-1 vs global batch, per recipe", gaps=True,  # a gap where a batch diverged
    )  # fmt: skip


def plot_frontier(frontiers: list[Frontier], workload: str, path: Path) -> Path | None:
    """Time to accuracy vs global batch: projected (lines: epochs to target × images per epoch
    / throughput at B) and measured (hollow markers), with the batch where doubling stops
    paying off marked per recipe."""
    if not any(p.projected_sec or p.measured_sec for f in frontiers for p in f.points):
        return None
    fig, (ax,) = figure(1, workload, height=4.6)
    batches = []
    for i, f in enumerate(frontiers):
        color = COLORS[i % len(COLORS)]
        proj = [p for p in f.points if p.projected_sec]
        meas = [p for p in f.points if p.measured_sec]
        batches += [p.global_batch for p in f.points]
        if not proj and not meas:
            continue
        if proj:
            ax.plot([p.global_batch for p in proj], [p.projected_sec for p in proj], color=color, marker=".", label=f.label)
        else:
            ax.plot([], [], color=color, label=f.label)
        guessed = [p for p in proj if p.predicted]
        if guessed:
            ax.scatter([p.global_batch for p in guessed], [p.projected_sec for p in guessed], marker="^", s=48,
                       facecolors="none", edgecolors=color, zorder=3)  # fmt: skip
        if meas:
            ax.scatter([p.global_batch for p in meas], [p.measured_sec for p in meas], marker="s", s=36,
                       facecolors="none", edgecolors=color, zorder=3)  # fmt: skip
        stop = next((p for p in proj if p.global_batch == f.stop_batch), None)
        if stop is not None:
            ax.scatter([stop.global_batch], [stop.projected_sec], marker="*", s=180, color=color, zorder=4)
            ax.annotate(f"stops paying off at B={stop.global_batch}", (stop.global_batch, stop.projected_sec),
                        textcoords="offset points", xytext=(8, 10 + 12 * i), fontsize=7.5, color=color,
                        arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6})  # fmt: skip
    log2_axis(ax, batches, "global batch size (images per optimizer step)")
    ax.set_yscale("log")
    ax.set_ylabel("time to target top-1 (s, log scale)")
    predicted = any(p.predicted for f in frontiers for p in f.points)
    source = "measured or predicted throughput" if predicted else "measured throughput"
    ax.set_title(f"Time-to-accuracy frontier: projected from measured epochs × {source}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.35", marker="."), proxy("0.35", "s", "", hollow=True), proxy("0.35", "*", "")]
    labels += ["projected TTA (line)", "measured TTA (this study's run)", "doubling the batch stops paying off"]
    if predicted:
        handles.append(proxy("0.35", "^", "", hollow=True))
        labels.append("throughput predicted (no run at B without accumulation)")
    legend_below(ax, handles, labels, ncol=2)
    return save(fig, path)
