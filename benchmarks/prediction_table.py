"""Predicted against measured, for the study ``benchmarks.prediction`` wrote::

    python -m benchmarks.prediction_table docs/studies/prediction

Reads ``predictions-RATE.json`` (``larsbench predict --json``, made before the held-out runs) and
``heldout-RATE/results.jsonl`` (the runs), matches each run to the weak-scaling prediction of its
backend, node count and global batch, and writes ``validation.md`` (the table, the median and
largest absolute error of the step time) and ``validation-efficiency.png`` (predicted and
measured weak-scaling efficiency against nodes). Prints the table.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from larsbench.reports.load import load_records  # noqa: E402


def rows_for(folder: Path) -> list[dict]:
    rows = []
    for predictions in sorted(folder.glob("predictions-*.json")):
        rate = predictions.stem.removeprefix("predictions-")
        results = folder / f"heldout-{rate}" / "results.jsonl"
        if not results.exists():
            continue
        doc = json.loads(predictions.read_text())
        families = {f["backend"]: f for f in doc["predictions"]}
        for run in load_records([results]):
            if run.get("status") != "ok":
                rows.append({"rate": rate, "backend": run["backend"], "nodes": (run["provenance"] or {}).get("num_nodes"),
                             "status": run["status"]})  # fmt: skip
                continue
            family = families.get(run["backend"])
            nodes = run["provenance"]["num_nodes"]
            shape = next((s for s in (family or {}).get("shapes", []) if s["scaling"] == "weak" and s["nodes"] == nodes
                          and s["global_batch_size"] == run["global_batch_size"]), None)  # fmt: skip
            if shape is None:
                continue
            base = family["base"]
            measured = run["step_time_mean_sec"]
            rows.append({
                "rate": rate, "backend": run["backend"], "nodes": nodes, "status": "ok", "run_id": run["run_id"],
                "predicted": shape["step_sec"], "low": shape["step_sec_low"], "high": shape["step_sec_high"],
                "measured": measured, "error": shape["step_sec"] / measured - 1,
                "within": shape["step_sec_low"] <= measured <= shape["step_sec_high"],
                "predicted_exposed": shape["parts"]["exposed_comm_sec"], "measured_exposed": run.get("exposed_comm_sec_per_step"),
                "predicted_compute": shape["parts"]["compute_sec"], "measured_compute": run.get("compute_sec_per_step"),
                "predicted_efficiency": shape["efficiency"],
                "measured_efficiency": run["throughput_images_per_sec"] / (nodes / base["world_size"] * base["throughput_images_per_sec"]),
                "base_step": base["step_sec"],
            })  # fmt: skip
    return rows


def _ms(value) -> str:
    return "—" if value is None else f"{value * 1e3:.0f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| link | backend | nodes | predicted step ms [low–high] | measured step ms | error | in range | "
        "exposed comm ms (pred. / meas.) | compute ms (pred. / meas.) | weak eff. (pred. / meas.) |",
        "|---|---|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['rate']} | {r['backend']} | {r['nodes']} | — | {r['status']} | — | — | — | — | — |")
            continue
        lines.append(
            f"| {r['rate']} | {r['backend']} | {r['nodes']} | {_ms(r['predicted'])} [{_ms(r['low'])}–{_ms(r['high'])}] | "
            f"{_ms(r['measured'])} | {r['error']:+.1%} | {'yes' if r['within'] else 'no'} | "
            f"{_ms(r['predicted_exposed'])} / {_ms(r['measured_exposed'])} | {_ms(r['predicted_compute'])} / {_ms(r['measured_compute'])} | "
            f"{r['predicted_efficiency']:.2f} / {r['measured_efficiency']:.2f} |"
        )  # fmt: skip
    ok = [abs(r["error"]) for r in rows if r["status"] == "ok"]
    if ok:
        inside = sum(r["within"] for r in rows if r["status"] == "ok")
        lines += ["", f"{len(ok)} held-out runs: median absolute error of the step time {statistics.median(ok):.1%}, "
                      f"largest {max(ok):.1%}; the measured step inside the predicted range in {inside} of {len(ok)}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path | None:
    rates = sorted({r["rate"] for r in rows if r["status"] == "ok"}, key=lambda r: [x["rate"] for x in rows].index(r))
    if not rates:
        return None
    fig, axes = plt.subplots(1, len(rates), figsize=(5.6 * len(rates), 4.2), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, rate in zip(axes[0], rates):
        mine = [r for r in rows if r["rate"] == rate and r["status"] == "ok"]
        for i, backend in enumerate(sorted({r["backend"] for r in mine})):
            points = sorted((r for r in mine if r["backend"] == backend), key=lambda r: r["nodes"])
            nodes = [1] + [r["nodes"] for r in points]
            color = colors[i % len(colors)]
            ax.plot(nodes, [1.0] + [r["predicted_efficiency"] for r in points], color=color, linestyle="--", marker="s",
                    markerfacecolor="none", label=f"{backend} predicted")  # fmt: skip
            ax.plot(nodes, [1.0] + [r["measured_efficiency"] for r in points], color=color, marker="o", label=f"{backend} measured")
        ax.set_xticks([1, 2, 3, 4])
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("nodes (1 rank each)")
        ax.set_ylabel("weak-scaling efficiency")
        ax.set_title(f"links at {rate}", fontsize=10)
        ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle("ResNet-50, 32 px, micro-batch 16: predicted from 1-node runs + larsbench comm, and measured", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:])[0])
    rows = rows_for(folder)
    text = table(rows)
    (folder / "validation.md").write_text(text)
    plot(rows, folder / "validation-efficiency.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
