"""PNG plots of one workload (matplotlib, Agg). Each function returns the written path, or
``None`` when the records hold nothing to plot (the report then says why)."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import pickle
import select
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from larsbench.reports.load import distinguishing_settings  # noqa: E402
from larsbench.reports.scaling import KINDS, Series  # noqa: E402

COLORS = plt.get_cmap("tab10").colors
DPI = 110


def figure(panels: int, workload: str, height: float = 4.2):
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, height), squeeze=False)
    fig.suptitle(workload, fontsize=9, color="0.35", y=0.995)
    return fig, list(axes[0])


def save(fig, path: Path) -> Path:
    """Lay out ``fig`` and write it to ``path``; inside ``rendering_in_parallel`` a forked child
    does that while this process builds the next figure, and the path is returned at once."""
    if _renderers is not None:
        _renderers.render(fig, path)
        return path
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)  # also when the disk is full: a figure left open holds its memory


class _Renderers:
    """Forked children each laying out and writing one figure, at most ``workers`` at a time.
    Layout (every tick label's extent, twice: tight_layout and the tight bounding box) is most of
    a report's time, and one figure's layout cannot be split; different figures can.

    A child has only the forking thread: a lock another thread held at the fork stays held in it
    (a gloo process group's, when a test process forks; a stream's). So the child never collects
    what it inherited (``gc.freeze`` around the fork: nothing of the parent's is finalized in it),
    leaves by ``os._exit`` (no interpreter teardown), and one that has not answered within
    ``TIMEOUT_SEC`` is killed and its figure drawn here instead, so a report never hangs on one."""

    TIMEOUT_SEC = 120.0  # a figure takes 0.2-3 s here

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.running: list[tuple[int, int, object, Path]] = []  # pid, read end, figure, path
        self.error: BaseException | None = None

    def render(self, fig, path: Path) -> None:
        while len(self.running) >= self.workers:
            self._wait(self.running.pop(0))
        read, write = os.pipe()
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:  # no room for another process: draw it here
            gc.unfreeze()
            os.close(read), os.close(write)
            try:
                _save(fig, path)
            finally:
                plt.close(fig)
            return
        if pid == 0:  # the child
            os.close(read)
            _render_child(fig, path, write)
        gc.unfreeze()
        os.close(write)
        self.running.append((pid, read, fig, path))

    def finish(self, quiet: bool = False) -> None:
        while self.running:
            self._wait(self.running.pop(0))
        if self.error is not None and not quiet:
            raise self.error

    def _wait(self, running) -> None:
        pid, read, fig, path = running
        try:
            with os.fdopen(read, "rb") as answer:
                ready, _, _ = select.select([answer], [], [], self.TIMEOUT_SEC)
                data = answer.read() if ready else None
            if data is None:  # stuck on something it inherited: kill it, draw the figure here
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                _save(fig, path)
                return
            os.waitpid(pid, 0)
            outcome = pickle.loads(data) if data else RuntimeError(f"drawing {path.name} stopped without a word (the process was killed)")
            if outcome is not None and self.error is None:  # the first error is raised once every child is done
                self.error = outcome
        except Exception as exc:  # an answer that could not be read, or the figure drawn here failing
            if self.error is None:
                self.error = exc
        finally:
            plt.close(fig)


def _render_child(fig, path: Path, write: int) -> None:
    """Draw, answer None or the error, and leave without running anything of the parent's."""
    try:
        outcome: object = None
        try:
            _save(fig, path)
        except BaseException as exc:  # raised by the parent, as save() would have
            outcome = exc
        try:
            data = pickle.dumps(outcome)
        except Exception:  # not picklable: its words are enough
            data = pickle.dumps(RuntimeError(f"{type(outcome).__name__}: {outcome}"))
        with os.fdopen(write, "wb") as answer:
            answer.write(data)
    finally:
        os._exit(0)


_renderers: _Renderers | None = None


@contextlib.contextmanager
def rendering_in_parallel(workers: int | None = None) -> Iterator[None]:
    """Inside, ``save`` hands each figure to a forked child; leaving waits for every child and
    raises the first one's error, so every path ``save`` returned exists once this returns.
    ``workers``: children at a time (default: the cores this process may use); 1, or a platform
    without fork, draws in this process."""
    global _renderers
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers <= 1 or _renderers is not None or not hasattr(os, "fork"):
        yield
        return
    renderers = _renderers = _Renderers(workers)
    try:
        yield
    except BaseException:
        renderers.finish(quiet=True)  # no child outlives this; the error that ended the body is the one raised
        raise
    else:
        renderers.finish()
    finally:
        _renderers = None


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    legends = [(ax, ax.larsbench_legend) for ax in fig.axes if getattr(ax, "larsbench_legend", None)]
    if legends:  # a full draw costs a third of a figure's time: only a legend needs one here
        fig.canvas.draw()  # lay out tick labels, then hang each legend just below its x-axis label
    for ax, (handles, labels, ncol) in legends:
        label_box = ax.xaxis.label.get_window_extent().transformed(ax.transAxes.inverted())
        ax.legend(handles, labels, ncol=ncol, fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, label_box.y0 - 0.02), frameon=False)  # fmt: skip
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # "tight" grows the canvas to hold the legends
    return path


def log2_axis(ax, values, label: str) -> None:
    values = sorted({int(v) for v in values if v is not None and not math.isnan(v)})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(v) for v in values])
    if values:
        ax.set_xlim(values[0] / 1.4, values[-1] * 1.4)
    ax.set_xlabel(label)


def legend_below(ax, handles=None, labels=None, ncol: int = 1) -> None:
    """Legends go under the plot: series labels are long and must never hide a point."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.larsbench_legend = (handles, labels, ncol)  # placed by save, once the axis label has its size


def proxy(color, marker: str, label: str, hollow: bool = False) -> Line2D:
    face = "none" if hollow else color
    return Line2D([], [], color=color, marker=marker, markerfacecolor=face, linestyle="none", label=label)


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _spread(points, attr_lo: str, attr_hi: str, mean: str):
    lo = [max(0.0, getattr(p, mean) - getattr(p, attr_lo)) if _finite(getattr(p, attr_lo)) else 0.0 for p in points]
    hi = [max(0.0, getattr(p, attr_hi) - getattr(p, mean)) if _finite(getattr(p, attr_hi)) else 0.0 for p in points]
    return [lo, hi]


def plot_throughput(series: list[Series], workload: str, path: Path) -> Path | None:
    """Throughput vs workers, one panel per scaling kind, each series with its ideal line."""
    def measured(s: Series) -> bool:
        return s.scales and any(_finite(p.throughput_mean) for p in s.points)

    kinds = [k for k in KINDS if any(s.kind == k and measured(s) for s in series)]
    if not kinds:
        return None
    fig, axes = figure(len(kinds), workload)
    for ax, kind in zip(axes, kinds):
        shown = [s for s in series if s.kind == kind and measured(s)]
        for i, s in enumerate(shown):
            color = COLORS[i % len(COLORS)]
            pts = [p for p in s.points if _finite(p.throughput_mean)]
            ax.errorbar([p.world_size for p in pts], [p.throughput_mean for p in pts],
                        yerr=_spread(pts, "throughput_min", "throughput_max", "throughput_mean"),
                        color=color, marker="o", capsize=3, label=s.label)  # fmt: skip
            ideal = [p for p in s.points if p.ideal is not None]
            if ideal:
                ax.plot([p.world_size for p in ideal], [p.ideal for p in ideal], color=color, linestyle="--", alpha=0.7)
        log2_axis(ax, [p.world_size for s in shown for p in s.points], "workers (world size)")
        ax.set_ylabel("throughput (images/s)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Throughput, {KINDS[kind].title}", fontsize=10)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="0.4", linestyle="--"))
        labels.append("ideal: N/N₀ × throughput(N₀)")
        legend_below(ax, handles, labels)
    return save(fig, path)


def plot_efficiency(series: list[Series], workload: str, path: Path) -> Path | None:
    """Scaling efficiency vs workers, one panel per kind; series without a baseline are left out."""
    kinds = [k for k in KINDS if any(s.kind == k and s.scales and s.note is None for s in series)]
    if not kinds:
        return None
    fig, axes = figure(len(kinds), workload)
    for ax, kind in zip(axes, kinds):
        shown = [s for s in series if s.kind == kind and s.scales and s.note is None]
        top = 1.0
        labelled: list[tuple[int, float]] = []  # (N, efficiency) already annotated
        for i, s in enumerate(shown):
            pts = [p for p in s.points if p.efficiency is not None]
            top = max([top, *(p.efficiency for p in pts)])
            ax.plot([p.world_size for p in pts], [p.efficiency for p in pts], color=COLORS[i % len(COLORS)],
                    marker="o", label=f"{s.label} (N₀={s.baseline_world_size})")  # fmt: skip
            for p in pts:
                crowded = any(n == p.world_size and abs(e - p.efficiency) < 0.045 * top for n, e in labelled)
                if p.world_size == s.baseline_world_size or crowded:
                    continue  # 1.00 by definition; or the label would overprint another (the table has it)
                labelled.append((p.world_size, p.efficiency))
                ax.annotate(f"{p.efficiency:.2f}", (p.world_size, p.efficiency), textcoords="offset points",
                            xytext=(7, 0), ha="left", va="center", fontsize=7.5, color=COLORS[i % len(COLORS)])  # fmt: skip
        ax.axhline(1.0, color="0.4", linestyle="--", label="ideal (1.0)")
        log2_axis(ax, [p.world_size for s in shown for p in s.points], "workers (world size)")
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel("efficiency = T(N) / (N/N₀ · T(N₀))")
        ax.set_title(f"Efficiency, {KINDS[kind].title}", fontsize=10)
        ax.grid(alpha=0.3)
        legend_below(ax)
    return save(fig, path)


def _accuracy_series(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    multi_backend = summary["backend"].nunique() > 1
    out = []
    for _, part in summary.groupby(["backend", "recipe", "base_lr"], sort=True, dropna=False):
        first = part.iloc[0]
        label = f"{first['recipe']}, base lr {first['base_lr']:g}"
        out.append((f"{first['backend']} · {label}" if multi_backend else label, part))
    return out


def plot_accuracy(summary: pd.DataFrame, workload: str, path: Path) -> Path | None:
    """Final top-1 vs global batch per optimizer (and LR rule); failed/diverged runs as ✕ at 0."""
    if summary["final_top1"].notna().sum() == 0:
        return None
    return plot_top1_vs_batch(
        _accuracy_series(summary), workload, path,
        failed=lambda part: part["ok_runs"] < part["runs"], failed_label="diverged / failed run (at 0)",
        title="Final top-1 vs global batch, per optimizer and LR scaling rule",
    )  # fmt: skip


def plot_top1_vs_batch(
    series: list[tuple[str, pd.DataFrame]],
    workload: str,
    path: Path,
    *,
    failed: Callable[[pd.DataFrame], pd.Series],
    failed_label: str,
    title: str,
    gaps: bool = False,
) -> Path:
    """One line per series of final top-1 (mean, min–max bar over repeats) vs global batch; the
    groups ``failed`` selects drawn as ✕ at 0. ``gaps``: no line across a batch without a top-1."""
    fig, (ax,) = figure(1, workload)
    extra = []
    for i, (label, part) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        good = part[part["final_top1"].notna()]
        if len(good):
            means = good.groupby("global_batch_size")["final_top1"].mean() * 100
            if gaps:
                means = means.reindex(sorted(part["global_batch_size"].unique()))
            ax.plot(means.index, means.values, color=color, marker="o", label=label)
            ax.vlines(good["global_batch_size"], good["final_top1_min"] * 100, good["final_top1_max"] * 100, color=color)
        else:
            extra.append(proxy(color, "x", label))
        bad = part[failed(part)]
        if len(bad):
            ax.scatter(bad["global_batch_size"], [0] * len(bad), marker="x", s=60, color=color, zorder=3)
    if any(failed(part).any() for _, part in series):
        extra.append(proxy("0.35", "x", failed_label))
    rows = pd.concat([part for _, part in series])
    targets = rows["target_top1"].dropna().unique()
    if len(targets) == 1:
        ax.axhline(targets[0] * 100, color="0.5", linestyle=":", label=f"target {targets[0] * 100:g}%")
    log2_axis(ax, rows["global_batch_size"], "global batch size (images per optimizer step)")
    ax.set_ylabel("final top-1 (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    legend_below(ax, handles + extra, labels + [h.get_label() for h in extra])
    return save(fig, path)


def plot_time_to_accuracy(summary: pd.DataFrame, workload: str, path: Path) -> Path | None:
    """Time to the target top-1 vs global batch; ok runs that missed it marked ▲ at the top."""
    if summary["time_to_accuracy_sec"].notna().sum() == 0:
        return None
    fig, (ax,) = figure(1, workload)
    series = _accuracy_series(summary)
    extra = []
    for i, (label, part) in enumerate(series):
        good = part[part["time_to_accuracy_sec"].notna()]
        if len(good):
            means = good.groupby("global_batch_size")["time_to_accuracy_sec"].mean()
            ax.plot(means.index, means.values, color=COLORS[i % len(COLORS)], marker="o", label=label)
    top = ax.get_ylim()[1] * 1.1
    for i, (label, part) in enumerate(series):
        missed = part[(part["ok_runs"] > part["tta_reached"])]
        color = COLORS[i % len(COLORS)]
        if len(missed):
            ax.scatter(missed["global_batch_size"], [top] * len(missed), marker="^", s=50, facecolors="none", edgecolors=color)
            if part["time_to_accuracy_sec"].isna().all():
                extra.append(proxy(color, "^", label, hollow=True))
    if any(part["ok_runs"].gt(part["tta_reached"]).any() for _, part in series):
        extra.append(proxy("0.35", "^", "target not reached (at the top edge)", hollow=True))
    log2_axis(ax, summary["global_batch_size"], "global batch size (images per optimizer step)")
    ax.set_ylim(0, top * 1.08)
    ax.set_ylabel("time to target top-1 (s)")
    targets = summary["target_top1"].dropna().unique()
    target = f" {targets[0] * 100:g}%" if len(targets) == 1 else ""
    ax.set_title(f"Time to target top-1{target} vs global batch", fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    legend_below(ax, handles + extra, labels + [h.get_label() for h in extra])
    return save(fig, path)


SPLIT_PARTS = (
    ("data_split_fraction", "data wait", "#e07b39"),
    ("compute_fraction", "compute", "#4c72b0"),
    ("comm_fraction", "exposed communication", "#c44e52"),
)


def plot_attribution(attributions: list, workload: str, path: Path) -> Path | None:
    """Per scaling series and world size, the step time lost against the ideal, stacked by
    part (data wait, compute, exposed communication); negative bars are time given back."""
    from larsbench.reports.attribution import PARTS

    if not attributions:
        return None
    fig, (ax,) = figure(1, workload, height=1.8 + 0.4 * len(attributions))
    labels = [f"{a.series.label} · N={a.world_size}" for a in attributions]
    colors = {"data": SPLIT_PARTS[0][2], "compute": SPLIT_PARTS[1][2], "comm": SPLIT_PARTS[2][2]}
    positive = [0.0] * len(attributions)
    negative = [0.0] * len(attributions)
    for key, _, name in PARTS:
        values = [a.lost_sec[key] * 1e3 for a in attributions]
        lefts = [pos if v >= 0 else neg for v, pos, neg in zip(values, positive, negative)]
        ax.barh(labels, values, left=lefts, color=colors[key], label=name)
        positive = [pos + max(v, 0) for v, pos in zip(values, positive)]
        negative = [neg + min(v, 0) for v, neg in zip(values, negative)]
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("step time lost against ideal scaling (ms per step)")
    ax.set_title("Where scaling efficiency goes", fontsize=10)
    legend_below(ax, ncol=3)
    return save(fig, path)


def plot_step_split(summary: pd.DataFrame, workload: str, path: Path) -> Path | None:
    """Share of step time per setting: data wait, and compute / exposed communication where
    recorded; what no key accounts for is shown as one remainder bar."""
    rows = summary[summary["data_split_fraction"].notna()]
    if rows.empty:
        return None
    separated = rows["compute_fraction"].notna().any() or rows["comm_fraction"].notna().any()
    rest_label = "other" if separated else "compute + communication (not separated)"
    fig, (ax,) = figure(1, workload, height=1.6 + 0.38 * len(rows))
    others = distinguishing_settings(rows)
    labels = [f"{r.backend} · N={r.world_size} · B={r.global_batch_size} · {r.recipe}{others.get(r.settings_key, '')}"
              for r in rows.itertuples()]  # fmt: skip
    left = [0.0] * len(rows)
    for column, name, color in SPLIT_PARTS:
        if column != "data_split_fraction" and not separated:
            continue
        values = rows[column].fillna(0.0).clip(lower=0).tolist()
        ax.barh(labels, [v * 100 for v in values], left=[x * 100 for x in left], color=color, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.barh(labels, [max(0.0, 1 - x) * 100 for x in left], left=[x * 100 for x in left], color="#b8b8b8", label=rest_label)
    for y, frac in enumerate(rows["data_split_fraction"]):
        ax.annotate(f"{frac * 100:.1f}% data wait", (100, y), xytext=(-4, 0), textcoords="offset points",
                    ha="right", va="center", fontsize=7.5)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of step time (%)")
    ax.set_title("Step-time split per setting (mean over repeats)", fontsize=10)
    legend_below(ax, ncol=4)
    return save(fig, path)


def plot_roofline(runs: list, slower: float, workload: str, path: Path) -> Path | None:
    """Measured step against the network roofline, one point per multi-rank run; marked runs
    (more than ``slower`` above it) hollow and labelled."""
    if not runs:
        return None
    fig, (ax,) = figure(1, workload)
    backends = sorted({r.backend for r in runs})
    top = max(max(r.step_sec, r.roofline_sec) for r in runs) * 1e3 * 1.25
    low = min(min(r.step_sec, r.roofline_sec) for r in runs) * 1e3 / 1.25
    line = [low, top]
    ax.plot(line, line, color="0.3", linewidth=1, label="at the roofline")
    ax.plot(line, [v * (1 + slower) for v in line], color="0.3", linewidth=1, linestyle="--", label=f"{slower:.0%} above it")
    for i, backend in enumerate(backends):
        color = COLORS[i % len(COLORS)]
        mine = [r for r in runs if r.backend == backend]
        for r in mine:
            ax.plot(r.roofline_sec * 1e3, r.step_sec * 1e3, marker="o", color=color,
                    markerfacecolor="none" if r.marked else color, linestyle="none")  # fmt: skip
            ax.annotate(f"N={r.world_size}" + (" (marked)" if r.marked else ""), (r.roofline_sec * 1e3, r.step_sec * 1e3),
                        xytext=(4, 2), textcoords="offset points", fontsize=7)  # fmt: skip
        ax.plot([], [], marker="o", color=color, linestyle="none", label=backend)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain milliseconds, not powers of ten
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        narrow = top / low < 10  # within a decade every minor tick is labelled, else 2 and 5 only
        axis.set_minor_formatter(FuncFormatter(lambda v, _, every=narrow: f"{v:g}" if every or f"{v:g}"[0] in "25" else ""))
    ax.set_xlim(low, top)
    ax.set_ylim(low, top * (1 + slower))
    ax.set_xlabel("roofline step: max(compute, network) (ms)")
    ax.set_ylabel("measured step (ms)")
    ax.set_title("Step time against the network roofline (hollow: marked)", fontsize=10)
    legend_below(ax, ncol=3)
    return save(fig, path)
