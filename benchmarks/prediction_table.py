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


def _weak_shape(family: dict | None, nodes: int, batch: int) -> dict | None:
    return next((s for s in (family or {}).get("shapes", []) if s["scaling"] == "weak" and s["nodes"] == nodes
                 and s["global_batch_size"] == batch), None)  # fmt: skip


def rows_for(folder: Path) -> list[dict]:
    rows = []
    for predictions in sorted(folder.glob("predictions-*.json")):
        rate = predictions.stem.removeprefix("predictions-")
        results = folder / f"heldout-{rate}" / "results.jsonl"
        if not results.exists():
            continue
        doc = json.loads(predictions.read_text())
        families = {f["backend"]: f for f in doc["predictions"]}
        # The campaign's own predictions, when they were later recomputed with a corrected model.
        earlier_path = folder / f"campaign-predictions-{rate}.json"
        earlier = {f["backend"]: f for f in json.loads(earlier_path.read_text())["predictions"]} if earlier_path.exists() else {}
        for run in load_records([results]):
            if run.get("status") != "ok":
                rows.append({"rate": rate, "backend": run["backend"], "nodes": (run["provenance"] or {}).get("num_nodes"),
                             "status": run["status"]})  # fmt: skip
                continue
            family = families.get(run["backend"])
            nodes = run["provenance"]["num_nodes"]
            shape = _weak_shape(family, nodes, run["global_batch_size"])
            if shape is None:
                continue
            first = _weak_shape(earlier.get(run["backend"]), nodes, run["global_batch_size"])
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
                "campaign_error": first["step_sec"] / measured - 1 if first else None,
                "steady": not run.get("unstable"), "cv": run.get("step_time_cv"),
            })  # fmt: skip
    return rows


def _ms(value) -> str:
    return "—" if value is None else f"{value * 1e3:.0f}"


def table(rows: list[dict]) -> str:
    campaign = any(r.get("campaign_error") is not None for r in rows)
    lines = [
        "| link | backend | nodes | predicted step ms [low–high] | measured step ms | error | in range | "
        "exposed comm ms (pred. / meas.) | compute ms (pred. / meas.) | weak eff. (pred. / meas.) | run steady (step CV) |"
        + (" campaign's prediction: error |" if campaign else ""),
        "|---|---|---:|---:|---:|---:|:---:|---:|---:|---:|---|" + ("---:|" if campaign else ""),
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['rate']} | {r['backend']} | {r['nodes']} | — | {r['status']} | — | — | — | — | — | — |" + (" — |" if campaign else ""))
            continue
        lines.append(
            f"| {r['rate']} | {r['backend']} | {r['nodes']} | {_ms(r['predicted'])} [{_ms(r['low'])}–{_ms(r['high'])}] | "
            f"{_ms(r['measured'])} | {r['error']:+.1%} | {'yes' if r['within'] else 'no'} | "
            f"{_ms(r['predicted_exposed'])} / {_ms(r['measured_exposed'])} | {_ms(r['predicted_compute'])} / {_ms(r['measured_compute'])} | "
            f"{r['predicted_efficiency']:.2f} / {r['measured_efficiency']:.2f} | {'yes' if r['steady'] else 'no'} ({r['cv']:.0%}) |"
            + (f" {r['campaign_error']:+.1%} |" if campaign and r.get("campaign_error") is not None else (" — |" if campaign else ""))
        )  # fmt: skip
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        errors = [abs(r["error"]) for r in ok]
        inside = sum(r["within"] for r in ok)
        lines += ["", f"{len(ok)} held-out runs: median absolute error of the step time {statistics.median(errors):.1%}, "
                      f"largest {max(errors):.1%}; the measured step inside the predicted range in {inside} of {len(ok)}."]  # fmt: skip
        steady = [r for r in ok if r["steady"]]
        if len(steady) < len(ok):
            errors = [abs(r["error"]) for r in steady]
            inside = sum(r["within"] for r in steady)
            lines.append(f"The {len(steady)} whose own step times the suite found steady (not `unstable`): median absolute error "
                         f"{statistics.median(errors):.1%}, largest {max(errors):.1%}; inside the range in {inside} of {len(steady)}.")  # fmt: skip
        earlier = [abs(r["campaign_error"]) for r in ok if r.get("campaign_error") is not None]
        if earlier:
            calm = [abs(r["campaign_error"]) for r in ok if r["steady"] and r.get("campaign_error") is not None]
            lines.append(f"The campaign's own predictions (written before the runs, with the model of that day): median "
                         f"absolute error {statistics.median(earlier):.1%}, largest {max(earlier):.1%}; over the steady runs "
                         f"{statistics.median(calm):.1%} and {max(calm):.1%}.")  # fmt: skip
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
