"""PNG plots of layer-wise telemetry (matplotlib, Agg): per run, layer × step heatmaps of the trust
ratio and the effective LR; per recipe, their spread over layers at each logged step, one
line per run (global batch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from larsbench.reports.plots import COLORS, figure, legend_below, save, plt
from larsbench.reports.telemetry import RunTelemetry, spread_over_layers

PANELS = (("trust_ratio", "trust ratio λ = η‖w‖ / (‖g‖ + β‖w‖)"), ("effective_lr", "effective LR = lr × λ"))
MAX_LAYER_LABELS = 24  # ResNet-50 has ~54 adapted tensors: label every k-th so names stay legible


def _edges(values: list[int]) -> np.ndarray:
    """Cell edges around each value, halfway to its neighbours: logged steps need not be evenly spaced."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def plot_heatmaps(run: RunTelemetry, workload: str, path: Path) -> Path:
    """Trust ratio and effective LR, layers (first layer on top) × logged steps, log colour scale;
    zero, negative or missing values (a diverged step) are grey."""
    layers, steps = run.layers, run.steps
    height = min(11.0, max(3.6, 1.6 + 0.13 * len(layers)))
    fig, axes = figure(2, workload, height=height)
    cmap = colormaps["viridis"].with_extremes(bad="0.82")
    for k, (ax, (column, title)) in enumerate(zip(axes, PANELS)):
        grid = run.rows.pivot_table(index="layer_index", columns="step", values=column, aggfunc="last")
        grid = grid.reindex(index=run.layer_indices, columns=steps)  # rows in layer order, whatever the numbering
        values = grid.to_numpy(dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        masked = np.ma.masked_where(~np.isfinite(values) | (values <= 0), values)
        if positive.size:
            lo, hi = float(positive.min()), float(positive.max())
            mesh = ax.pcolormesh(_edges(steps), _edges(list(range(len(layers)))), masked, cmap=cmap,
                                 norm=LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.01), shading="flat")  # fmt: skip
            fig.colorbar(mesh, ax=ax, pad=0.02).set_label(column.replace("_", " "), fontsize=8)
        else:
            ax.text(0.5, 0.5, "no positive values logged", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(len(layers) - 0.5, -0.5)  # layer 0 (the input side) on top
        stride = max(1, math.ceil(len(layers) / MAX_LAYER_LABELS))
        ticks = list(range(0, len(layers), stride))
        ax.set_yticks(ticks)
        ax.set_yticklabels([layers[i] for i in ticks] if k == 0 else [str(i) for i in ticks], fontsize=6.5)
        ax.set_xlabel("optimizer step")
        ax.set_title(title, fontsize=9.5)
    axes[0].set_ylabel("layer" + (f" (1 in {stride} labelled)" if stride > 1 else ""))
    axes[1].set_ylabel("layer index")
    fig.text(0.5, 1.03, f"{run.recipe} · B={run.global_batch} · run {run.run_id}", ha="center", fontsize=10)
    return save(fig, path)


def plot_spread(runs: list[RunTelemetry], recipe: str, workload: str, path: Path) -> Path | None:
    """Per logged step, the median over layers with its 10–90% and min–max bands, for the trust
    ratio and the effective LR: one row per run (global batch), shared axes per column, so runs
    compare without their bands overprinting. The x axis is epochs when every run recorded its
    epoch length, so runs at different global batches line up."""
    if not runs:
        return None
    by_epoch = all(r.steps_per_epoch for r in runs)
    seeds_differ = len({r.global_batch for r in runs}) < len(runs)
    fig, grid = plt.subplots(len(runs), 2, figsize=(12.4, 1.3 + 2.1 * len(runs)), sharex=True, sharey="col", squeeze=False)
    fig.suptitle(f"{workload}\nlayer-wise telemetry, {recipe}: spread over layers per logged step", fontsize=9, color="0.35")
    for i, (run, axes) in enumerate(zip(runs, grid)):
        color = COLORS[i % len(COLORS)]
        for ax, (column, title) in zip(axes, PANELS):
            spread = spread_over_layers(run.rows, column)
            spread = spread[spread["max"] > 0]
            if spread.empty:
                ax.text(0.5, 0.5, "no positive values logged", transform=ax.transAxes, ha="center", va="center")
                continue
            x = spread["step"] / run.steps_per_epoch if by_epoch else spread["step"]
            low = spread[["min", "p10"]].where(spread[["min", "p10"]] > 0)  # log axis: a zero has no place
            ax.fill_between(x, low["min"], spread["max"], color=color, alpha=0.15, linewidth=0)
            ax.fill_between(x, low["p10"], spread["p90"], color=color, alpha=0.35, linewidth=0)
            ax.plot(x, spread["median"], color=color, linewidth=1.4)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(title, fontsize=9.5)
        name = f"B={run.global_batch}" + (f", seed {run.seed}" if seeds_differ else "")
        axes[0].set_ylabel(f"{name}\ntrust ratio", fontsize=8.5)
        axes[1].set_ylabel("effective LR", fontsize=8.5)
    for ax in grid[-1]:
        ax.set_xlabel("epoch" if by_epoch else "optimizer step")
    handles = [Line2D([], [], color="0.3", linewidth=1.4), Patch(color="0.3", alpha=0.35), Patch(color="0.3", alpha=0.15)]
    legend_below(grid[-1][0], handles, ["median over layers", "10–90% of layers", "min–max over layers"], ncol=3)
    return save(fig, path)
