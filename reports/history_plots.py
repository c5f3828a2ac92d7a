"""The trend plot of one series: nightly mean with the repeats' min–max as a band, each step's
levels and boundary marked and annotated with its size and what changed there."""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.lines import Line2D

from larsbench.reports.history import Change, Series, changes_text
from larsbench.reports.plots import figure, legend_below, proxy, save

BAD, GOOD, LINE = "#c44e52", "#55a868", "#4c72b0"
NAMES = {"time_to_accuracy": "time to accuracy", "final_top1": "final top-1", "exposed_comm": "exposed communication",
         "comm_fraction": "communication share of step time"}  # fmt: skip
MAX_TICKS = 14


def plot_series(series: Series, changed: dict[int, list[Change]], path: Path) -> Path:
    """``changed``: night index → provenance changes since the setting's previous night; those
    nights get a grey tick on the top edge (the report's table lists them)."""
    metric, points = series.metric, series.points
    nights = sorted({p.night.index for p in points} | {n.index for n in series.missing} | {n.index for n in series.disturbed})
    x_of = {index: i for i, index in enumerate(nights)}
    scale = 100 if metric.accuracy or metric.name == "comm_fraction" else 1
    # a long label would widen the canvas ("tight" bbox) and shrink the plot to a strip
    fig, (ax,) = figure(1, "\n".join(textwrap.wrap(series.runs.label, 120)), height=4.4)
    fig.set_size_inches(min(12.0, 6.2 + len(nights) / 60), 4.4)  # hundreds of nights need room
    xs = [x_of[p.night.index] for p in points]
    dense = len(points) > 60
    ax.fill_between(xs, [p.low * scale for p in points], [p.high * scale for p in points], color=LINE, alpha=0.18,
                    linewidth=0, label="min–max of the night's repeats")  # fmt: skip
    ax.plot(xs, [p.mean * scale for p in points], color=LINE, marker="o", markersize=1.5 if dense else 3.5,
            linewidth=0.7 if dense else 1.2, label="nightly mean")  # fmt: skip
    if series.findings:  # headroom for the step notes at the top
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.22 * (high - low))
    handles, labels = ax.get_legend_handles_labels()
    bounds = [0, *(f.step.index for f in series.findings), len(points)]
    levels = [series.findings[0].step.before] + [f.step.after for f in series.findings] if series.findings else []
    for (start, end), level in zip(zip(bounds, bounds[1:]), levels):
        ax.hlines(level * scale, xs[start] - 0.3, xs[end - 1] + 0.3, color="0.3", linestyle="--", linewidth=1)
    for finding in series.findings:
        boundary = (x_of[finding.last_good.index] + x_of[finding.first_bad.index]) / 2
        color = BAD if finding.regression else GOOD
        ax.axvline(boundary, color=color, linewidth=1.6)
        note = f"{finding.size}\n" + "\n".join(textwrap.wrap(changes_text(finding.changes, 3), 34))
        ax.annotate(note, (boundary, 0.97), xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points",
                    ha="left", va="top", fontsize=7, color=color,
                    bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": color, "alpha": 0.85})  # fmt: skip
    if series.findings:
        handles.append(Line2D([], [], color="0.3", linestyle="--"))
        labels.append("level between steps (median)")
    if any(f.regression for f in series.findings):
        handles.append(Line2D([], [], color=BAD))
        labels.append("regression step (first bad night right of the line)")
    if any(not f.regression for f in series.findings):
        handles.append(Line2D([], [], color=GOOD))
        labels.append("improvement step")
    marks = [x_of[i] - 0.5 for i in changed if i in x_of and x_of[i] > 0]
    if marks:
        ax.scatter(marks, [1.0] * len(marks), marker="v", s=28, color="0.55", transform=ax.get_xaxis_transform(), clip_on=False, zorder=3)
        handles.append(proxy("0.55", "v", ""))
        labels.append("provenance changed since the previous night (see table)")
    if series.missing:
        ax.scatter([x_of[n.index] for n in series.missing], [0.02] * len(series.missing), marker="x", color=BAD,
                   transform=ax.get_xaxis_transform(), zorder=3)  # fmt: skip
        handles.append(proxy(BAD, "x", ""))
        labels.append("ran, no value (failed, or target not reached)")
    if series.disturbed:
        ax.scatter([x_of[n.index] for n in series.disturbed], [0.02] * len(series.disturbed), marker="D", s=16, color="#dd8452",
                   transform=ax.get_xaxis_transform(), zorder=3)  # fmt: skip
        handles.append(proxy("#dd8452", "D", ""))
        labels.append("every run disturbed (unstable): left out")
    _night_axis(ax, [series_night_label(series, i) for i in nights])
    unit = "%" if scale == 100 else metric.unit
    name = NAMES.get(metric.name, metric.name)
    ax.set_ylabel(f"{name} ({unit})")
    direction = "higher" if metric.higher_is_better else "lower"
    ax.set_title(f"{name[0].upper() + name[1:]} per night ({direction} is better)", fontsize=10, pad=12)
    ax.grid(alpha=0.3)
    legend_below(ax, handles, labels, ncol=2)
    return save(fig, path)


def series_night_label(series: Series, index: int) -> str:
    for p in series.points:
        if p.night.index == index:
            return p.night.label
    return next(n.label for n in [*series.missing, *series.disturbed] if n.index == index)


def _night_axis(ax, labels: list[str]) -> None:
    every = max(1, -(-len(labels) // MAX_TICKS))
    ticks = list(range(0, len(labels), every))
    ax.set_xticks(ticks)
    ax.set_xticklabels([labels[i] for i in ticks], rotation=35, ha="right", fontsize=7.5)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel("night (UTC date it ends on; oldest left)")

