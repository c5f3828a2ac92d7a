"""Result records → a pandas DataFrame, and runs with identical settings → repeat groups.

A run's *setting* is the run spec's ``measure`` fields (``larsbench.core.spec``: the one
declaration of which settings define a measurement), taken from the record's
``provenance.config`` and top-level keys, plus where it ran: device type, hardware signature
(GPU or CPU model) and node count. Runs with equal settings are *repeats* (they differ only in
seed, run id and bookkeeping), and ``larsbench compare`` matches runs on the same setting, so
runs on different machines, precisions or workloads never pool or match.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from larsbench.core.errors import ConfigError
from larsbench.core.files import not_a_file, warn_unreadable
from larsbench.core.results import latest_per_run, read_record_file
from larsbench.core.spec import RUN_FIELDS, measured_settings, recipe_label, run_label
from larsbench.core.stats import summarize

# The settings a table shows as columns (every other measure field is in the label).
SETTING_FIELDS = (
    "backend", "model", "dataset", "image_size", "num_classes", "device", "world_size",
    "micro_batch_size", "accumulation_steps", "global_batch_size", "optimizer", "scaling_rule",
    "base_lr", "warmup_epochs", "target_top1", "precision", "optimizer_sharding",
)  # fmt: skip
# The workload: records that differ here never share a table, plot or scaling group.
# Metrics summarised with a 95% confidence interval of their mean over a setting's ok runs.
CI_METRICS = ("final_top1", "best_top1", "epochs_to_accuracy", "time_to_accuracy_sec")
WORKLOAD_FIELDS = ("model", "dataset", "image_size", "num_classes", "device", "hardware")

METRICS = (
    "throughput_images_per_sec", "step_time_p50_sec", "step_time_p95_sec", "step_time_mean_sec",
    "data_wait_fraction", "compute_fraction", "comm_fraction", "data_wait_sec_per_step",
    "compute_sec_per_step", "exposed_comm_sec_per_step", "achieved_tflops_per_device", "mfu_table",
    "mfu_measured", "final_top1", "final_top5", "time_to_accuracy_sec", "epochs_to_accuracy",
    "wall_time_sec", "optimizer_state_bytes", "peak_host_rss_bytes", "peak_cuda_bytes",
)  # fmt: skip


def load_records(paths: Iterable[str | Path], option: str = "RESULTS") -> list[dict[str, Any]]:
    """Records from files or folders; a missing, unreadable or empty input is a ``ConfigError``."""
    return load_records_with_folders(paths, option)[0]


def load_records_with_folders(
    paths: Iterable[str | Path], option: str = "RESULTS", missing_ok: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """``load_records``, plus run id → the folder of the results file its kept record came
    from: a record's side files (``telemetry``) are paths relative to that folder.
    ``missing_ok``: inputs that hold no run records are fine (a report of collectives only)."""
    records: list[dict[str, Any]] = []
    folder_of: dict[int, Path] = {}
    for path in map(Path, paths):
        target = path / "results.jsonl" if path.is_dir() else path
        if missing_ok and (target.name == "comm.jsonl" or not target.exists()):
            continue
        found, _ = read_results_file(target, option)
        records.extend(found)
        folder_of.update((id(r), target.parent) for r in found)
    if not records and not missing_ok:
        raise ConfigError(option, "no result files given; name a results.jsonl or the folder holding one")
    kept = latest_per_run(records)
    return kept, {str(r.get("run_id")): folder_of[id(r)] for r in kept}


FIX = "give a results.jsonl that larsbench run or slurm wrote, or the folder holding one"


def read_results_file(
    target: Path, option: str = "RESULTS", skip_arrays: Sequence[str] = (), fix: str = FIX
) -> tuple[list[dict[str, Any]], int]:
    """The records of one results file and how many of its lines were unreadable (said once, as
    a notice); a file that is missing, unreadable or holds no records is a ``ConfigError``
    naming ``option`` and ending in ``fix``. ``skip_arrays``: see ``core.files.scan_lines``."""
    why = not_a_file(target)
    if why is not None:
        raise ConfigError(option, f"{target}: {'no such results file' if why == 'no such file' else why}; {fix}")
    try:
        found, skipped = read_record_file(target, tuple(skip_arrays))
    except OSError as exc:
        raise ConfigError(option, f"{target}: cannot read it ({exc.strerror or exc}); {fix}") from None
    except ValueError as exc:  # a newer schema: the message names the file and the fix
        raise ConfigError(option, str(exc)) from None
    if not found:
        unreadable = f" ({skipped} unreadable line{'s' if skipped != 1 else ''})" if skipped else ""
        raise ConfigError(option, f"{target}: holds no result records{unreadable}; {fix}")
    warn_unreadable(target, skipped)
    return found, skipped


def run_device(record: dict[str, Any]) -> str | None:
    """The device type the run used (``cpu``, ``cuda``). A run that failed before choosing one
    records none: then its configured device, with ``auto`` resolved as the suite does (cuda
    when the host has a GPU)."""
    if record.get("device"):
        return str(record["device"]).split(":")[0]
    prov = record.get("provenance") or {}
    configured = (prov.get("config") or {}).get("device")
    if configured == "auto":
        return "cuda" if prov.get("gpu_count") else "cpu"
    return configured


def hardware_signature(record: dict[str, Any]) -> str:
    """The GPU model for GPU runs, else the CPU model: what makes throughputs comparable."""
    prov = record.get("provenance") or {}
    gpu = prov.get("gpu_model") if run_device(record) != "cpu" else None
    return gpu or prov.get("cpu_model") or "unknown hardware"


_RECORD_ONLY_MEANINGS = ("lr", "steps", "epochs")


def settings(record: dict[str, Any]) -> dict[str, Any]:
    """The run's setting: its ``measure`` fields and where it ran (see module docstring)."""
    prov = record.get("provenance") or {}
    config = dict(prov.get("config") or {})
    # A record's own keys win, except where a key means something else there: its "lr" is
    # the peak LR (the spec's base LR is "base_lr"), its "steps" and "epochs" what the run did.
    config.update({k: record[k] for k in RUN_FIELDS if k in record and k not in _RECORD_ONLY_MEANINGS})
    if "base_lr" in record:
        config["lr"] = record["base_lr"]
    merged = measured_settings(config)
    merged["device"] = run_device(record)
    merged["hardware"] = hardware_signature(record)
    merged["num_nodes"] = prov.get("num_nodes") or 1
    return merged


def setting_label(s: dict[str, Any]) -> str:
    """A setting in words: its run label, the hardware and node count."""
    nodes = s.get("num_nodes") or 1
    return f"{run_label(s)} on {s.get('hardware')}" + (f" × {nodes} nodes" if nodes != 1 else "")


def setting_text(name: str, value: Any) -> str:
    """A setting in a label: ``precision=bf16``; a mapping by its entries (``link_rate=1gbit``)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return f"{name}={value}"


def telling_apart(settings: dict[str, dict[str, Any]], ignore: Iterable[str] = ()) -> dict[str, str]:
    """key → ``" (precision=bf16)"``: the settings (beyond ``ignore``) in which these differ,
    for things that would otherwise read alike; ``""`` when nothing sets them apart."""
    names = sorted({n for s in settings.values() for n in s} - set(ignore))
    varying = [n for n in names if len({json.dumps(s.get(n), sort_keys=True, default=str) for s in settings.values()}) > 1]
    return {
        key: f" ({', '.join(setting_text(n, s.get(n)) for n in varying)})" if varying else ""
        for key, s in settings.items()
    }  # fmt: skip


# Settings a table row shows in columns of their own (the rest tell rows apart only where needed).
SHOWN = ("backend", "optimizer", "scaling_rule", "warmup_epochs", "world_size", "micro_batch_size",
         "accumulation_steps", "global_batch_size")  # fmt: skip


def distinguishing_settings(summary: pd.DataFrame) -> dict[str, str]:
    """settings key → ``" (precision=bf16)"``: for rows whose columns would read alike, the
    settings without a column of their own that tell them apart (never two identical rows)."""
    out: dict[str, str] = {}
    settings = {key: json.loads(key) for key in summary["settings_key"]}
    alike: dict[str, list[str]] = {}
    for key, s in settings.items():
        alike.setdefault(json.dumps([s.get(n) for n in SHOWN] + [s.get("hardware")], default=str), []).append(key)
    for keys in alike.values():
        out.update(telling_apart({k: settings[k] for k in keys}, SHOWN))
    return out


def key_of(values: dict[str, Any], exclude: Iterable[str] = ()) -> str:
    """A hashable, order-independent key for a settings dict (JSON, sorted)."""
    skip = set(exclude)
    return json.dumps({k: v for k, v in values.items() if k not in skip}, sort_keys=True, default=str)


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: settings, metrics, a workload label and the repeat-group key."""
    rows = []
    for r in records:
        s = settings(r)
        prov = r.get("provenance") or {}
        row = {k: r.get(k) for k in ("run_id", "experiment", "label", "status", "error", "seed", "diverged_at_step")}
        row.update({k: s.get(k) for k in SETTING_FIELDS if k != "base_lr"})
        row.update(base_lr=s.get("lr"), hardware=s["hardware"], num_nodes=s["num_nodes"])
        row.update({k: r.get(k) for k in METRICS})
        row["per_worker_batch"] = _product(r.get("micro_batch_size"), r.get("accumulation_steps"))
        row["recipe"] = recipe_label(s["optimizer"], s["scaling_rule"], s["warmup_epochs"])
        row["setting"] = setting_label(s)
        row["peak_lr"] = r.get("lr")
        row["steps_per_epoch"] = r.get("steps_per_epoch")
        row["best_top1"] = best_top1(r.get("eval_history"))
        row["telemetry"] = r.get("telemetry")
        row["layer_telemetry"] = bool(r.get("layer_telemetry"))
        row["transport"] = r.get("transport") or ((prov.get("transport") or {}).get("collectives"))
        row["unstable"] = bool(r.get("unstable"))
        row["unstable_reasons"] = "; ".join(r.get("unstable_reasons") or [])
        straggler = r.get("straggler") or {}
        row["straggler"] = (
            f"rank {straggler['rank']} on {straggler.get('host')} ({straggler['slower_by']:.0%} slower on its own)"
            if straggler else ""
        )
        row["timestamp_utc"] = prov.get("timestamp_utc")
        row["settings_key"] = key_of(s)
        row["workload_key"] = key_of({k: s.get(k) for k in WORKLOAD_FIELDS})
        row["workload"] = workload_label(s)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in (*METRICS, "best_top1", "peak_lr", "steps_per_epoch"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    # The data-wait share that adds up with compute and exposed communication (the split's,
    # along the critical rank), where the record has the split; rank 0's share otherwise.
    split = frame["data_wait_sec_per_step"] / frame["step_time_mean_sec"]
    frame["data_split_fraction"] = split.where(split.notna(), frame["data_wait_fraction"])
    return frame


def best_top1(history: Any) -> float | None:
    """The highest top-1 of any evaluation in the run (None when it logged none)."""
    values = [e.get("top1") for e in history or [] if isinstance(e, dict)]
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def workload_label(s: dict[str, Any]) -> str:
    return f"{s.get('model')} · {s.get('dataset')} · {s.get('image_size')} px · {s.get('device')} ({s.get('hardware')})"


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _product(a: Any, b: Any) -> int | None:
    return a * b if isinstance(a, int) and isinstance(b, int) else None


def _status_text(statuses: pd.Series) -> str:
    counts = sorted(statuses.astype(str).value_counts().items(), key=lambda item: (-item[1], item[0] != "ok", item[0]))
    if len(counts) == 1:
        return counts[0][0]
    return ", ".join(f"{status} ×{n}" for status, n in counts)


# Metrics that time something: a run flagged unstable (disturbed step times) says little about
# them. The rest (accuracy) a disturbance does not change.
TIMED_METRICS = (
    "throughput_images_per_sec", "time_to_accuracy_sec", "data_wait_fraction", "data_split_fraction",
    "compute_fraction", "comm_fraction", "step_time_p50_sec", "step_time_mean_sec", "data_wait_sec_per_step",
    "compute_sec_per_step", "exposed_comm_sec_per_step", "achieved_tflops_per_device", "mfu_table", "mfu_measured",
)  # fmt: skip
# Memory per rank is summarized over all ok runs: a disturbance takes time, not memory.
SUMMARIZED = ("final_top1", "best_top1", "time_to_accuracy_sec", "epochs_to_accuracy", *TIMED_METRICS[2:],
              "optimizer_state_bytes", "peak_host_rss_bytes", "peak_cuda_bytes")  # fmt: skip


def seeds_text(n: int, seeds: int) -> str:
    """What the spread of ``n`` repeats over ``seeds`` distinct seeds measures, in a few words:
    seed-to-seed (every run its own seed) or run-to-run (one seed: nondeterminism only)."""
    if n <= 1:
        return ""
    if seeds == n:
        return "seed-to-seed"
    if seeds == 1:
        return "run-to-run, one seed"
    return f"{seeds} seeds over {n} runs"


def summarize_repeats(frame: pd.DataFrame, include_unstable: bool = False) -> pd.DataFrame:
    """One row per repeat group. Metric statistics use the group's ``ok`` runs only; the
    ``status`` column counts every run (``ok ×2, failed ×1``) and ``errors`` keeps their
    messages, so a failed or diverged run is never dropped silently. Runs flagged unstable are
    left out of the timed metrics (``TIMED_METRICS``) and counted (``unstable_left_out``),
    unless ``include_unstable`` or every ok run of the group is unstable (then their figures
    stand, marked ``timed_disturbed_only``). Accuracy statistics say over how many seeds they
    spread (``<metric>_seeds``)."""
    out = []
    for _, group in frame.groupby("settings_key", sort=False):
        first = group.iloc[0]
        ok = group[group["status"] == "ok"]
        clean = ok if include_unstable else ok[~ok["unstable"]]
        disturbed_only = clean.empty and not ok.empty
        timed = ok if disturbed_only else clean
        tput = timed["throughput_images_per_sec"].dropna()
        reached = ok["time_to_accuracy_sec"].dropna()
        stats = summarize(list(tput))
        row = {k: first[k] for k in (*SETTING_FIELDS, "hardware", "num_nodes", "per_worker_batch",
                                      "recipe", "setting", "settings_key", "workload_key", "workload")}  # fmt: skip
        row["transport"] = ", ".join(sorted({str(t) for t in group["transport"] if isinstance(t, str)})) or None
        # Peak LR and epoch length follow from the settings: any run that recorded them will do.
        for column in ("peak_lr", "steps_per_epoch"):
            known = group[column].dropna()
            row[column] = known.iloc[0] if len(known) else float("nan")
        row.update(
            runs=len(group),
            ok_runs=len(ok),
            status=_status_text(group["status"]),
            statuses=list(group["status"].astype(str)),
            errors="; ".join(sorted({str(e) for e in group["error"] if isinstance(e, str) and e})),
            diverged_at=", ".join(str(int(s)) for s in group["diverged_at_step"].dropna()),
            seeds=sorted(int(s) for s in group["seed"].dropna()),
            run_ids=list(group["run_id"]),
            throughput_n=len(tput),
            throughput_mean=tput.mean() if len(tput) else float("nan"),
            throughput_std=tput.std(ddof=1) if len(tput) > 1 else float("nan"),
            throughput_min=tput.min() if len(tput) else float("nan"),
            throughput_max=tput.max() if len(tput) else float("nan"),
            throughput_ci_low=_or_nan(stats and stats.ci_low),
            throughput_ci_high=_or_nan(stats and stats.ci_high),
            throughput_cv=_or_nan(stats and stats.cv),
            throughput_olympic=_or_nan(stats and stats.olympic_mean),
            tta_reached=len(reached),
            unstable_runs=int(group["unstable"].sum()),
            unstable_left_out=0 if include_unstable or disturbed_only else int(ok["unstable"].sum()),
            timed_disturbed_only=bool(disturbed_only and not include_unstable),
            unstable_reasons="; ".join(sorted({x for x in group["unstable_reasons"] if x})),
            stragglers="; ".join(sorted({x for x in group["straggler"] if x})),
        )
        for metric in SUMMARIZED:
            runs = timed if metric in TIMED_METRICS else ok
            values = runs[metric].dropna()
            row[metric + "_n"] = len(values)
            row[metric] = values.mean() if len(values) else float("nan")
            row[metric + "_min"] = values.min() if len(values) else float("nan")
            row[metric + "_max"] = values.max() if len(values) else float("nan")
            row[metric + "_seeds"] = runs.loc[values.index, "seed"].nunique()
        for metric in CI_METRICS:  # the study's question is accuracy: its repeats (seeds) get an interval too
            spread = summarize(list((timed if metric in TIMED_METRICS else ok)[metric].dropna()))
            row[metric + "_ci_low"] = _or_nan(spread and spread.ci_low)
            row[metric + "_ci_high"] = _or_nan(spread and spread.ci_high)
        out.append(row)
    summary = pd.DataFrame(out)
    if summary.empty:
        return summary
    return summary.sort_values(
        ["workload", "backend", "recipe", "global_batch_size", "world_size"], kind="stable", na_position="last"
    ).reset_index(drop=True)
