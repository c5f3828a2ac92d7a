"""The table `larsbench run` prints at the end: one row per run, measured values only."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from larsbench.core.spec import recipe_label


def _fmt(value: Any, pattern: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, pattern)


def summary_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in [
        ("backend", "left"), ("model", "left"), ("px", "right"), ("ranks", "right"),
        ("global batch", "right"), ("recipe", "left"), ("peak lr", "right"),
        ("images/s", "right"), ("step p50 ms", "right"), ("step p95 ms", "right"),
        ("top-1", "right"), ("time to target s", "right"), ("status", "left"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)
    for r in records:
        recipe = recipe_label(r["optimizer"], r.get("scaling_rule"), r.get("warmup_epochs"))
        target = r.get("target_top1")
        tta = _fmt(r["time_to_accuracy_sec"], ".1f") if target is not None else "no target"
        if target is not None and r["time_to_accuracy_sec"] is None and r["status"] == "ok":
            tta = f"not reached ({target:.2f})"
        # escaped: error texts quote file:line in brackets, which rich would read as markup
        status = escape(r["status"] if not r.get("error") else f"{r['status']}: {r['error']}")
        table.add_row(
            r["backend"], r["model"], str(r["image_size"]), str(r["world_size"]),
            f"{r['global_batch_size']} = {r['world_size']}×{r['micro_batch_size']}×{r['accumulation_steps']}",
            recipe, _fmt(r["lr"], ".3g"), _fmt(r["throughput_images_per_sec"], ".1f"),
            _fmt(r["step_time_p50_sec"], ".0f", 1000), _fmt(r["step_time_p95_sec"], ".0f", 1000),
            _fmt(r["final_top1"], ".3f"), tta, status,
        )  # fmt: skip
    return table
