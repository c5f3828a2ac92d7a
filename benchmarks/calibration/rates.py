"""Error rates of ``larsbench compare`` and ``larsbench history``, measured on the campaign's real runs
(``benchmarks.calibration.campaign``): how often each calls a regression where there is none,
how often it finds the planted 10% slowdown, and how often it can only say inconclusive.

    .venv/bin/python -m benchmarks.calibration.rates docs/calibration/runs [--resamples 2000]

1. Planting checked. A planted run counts only when its own per-step data show the slowdown
   landed in its measured window: the share of the window its slowest rank spent beyond its
   own median step time (``plant.excess_share``: the stops lengthen some steps, not the
   median) exceeds the idle runs' median share by at least half the planted 10%. The run's own
   median, not the idle runs', keeps the check free of the machine's drift between runs. Stops
   closer together than a step (``campaign --period 0.03``) slow every step alike and leave no
   such trace: there the planter's log is the check (``landed``).
2. compare A/A: ``k`` idle runs as baseline and ``k`` other idle runs as current, drawn at random
   (disjoint) many times per setting; the throughput verdict of ``reports.compare.compare``
   with its defaults (5% tolerance, unstable runs left out).
3. compare A/B: ``k`` idle runs against ``k`` verified planted runs of the same setting, drawn
   at random; and time-matched: ``k`` planted runs against the idle run nearest each in the
   campaign's order (each idle run matched once), so that drift of the machine between the
   runs adds noise but no bias to the difference.
4. history: 30-night series per setting, each night the mean of 2 runs drawn from the pool
   (without replacement within a night): idle throughout, or planted from night 18 on. Each
   goes through ``reports.history.build_history`` with its defaults; counted: any step found,
   the step found at night 18 ± 1 as a regression, and the gate's verdict on the newest night.

Nights drawn from one campaign's runs share that afternoon's machine: real nights also differ
by what changed between them, so the history figures are a floor for real false alarms.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibration.campaign import SLOWDOWN
from benchmarks.calibration.plant import excess_share, step_times
from larsbench.core.results import read_records
from larsbench.core.stats import stability
from larsbench.reports.compare import Tolerance, compare
from larsbench.reports.history import build_history
from larsbench.reports.history_store import Night, SettingRuns, Store
from larsbench.reports.load import key_of, setting_label, settings

REPEATS = (3, 5, 10)  # each where the pool has twice as many idle runs, for disjoint A/A sides
NIGHTS, DROP_AT, PER_NIGHT = 30, 18, 2


@dataclass
class Pool:
    setting: str
    idle: list[dict[str, Any]]
    planted: list[dict[str, Any]]  # verified
    unverified: list[str]
    excess: dict[str, float]
    pairs: list[tuple[dict[str, Any], dict[str, Any]]]  # (idle, planted): the idle run nearest each planted one


def run_number(record: dict[str, Any]) -> int:
    """Its place in the campaign's order (``cal-NNN-...``)."""
    return int(str(record["run_id"]).split("-")[1])


def nearest_pairs(idle: list[dict[str, Any]], planted: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    free = list(idle)
    pairs = []
    for run in sorted(planted, key=run_number):
        if not free:
            break
        match = min(free, key=lambda r: (abs(run_number(r) - run_number(run)), run_number(r)))
        free.remove(match)
        pairs.append((match, run))
    return pairs


def rejudged(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The record with its ``unstable`` flag judged again from its kept step times by the
    stability rule as it is now (``core.stats.stability``, along the rank the split follows, as
    the record builder judges it), so the rates follow the rule and not the one of the day the
    runs were made."""
    if record.get("status") != "ok" or not record.get("steps_file"):
        return record
    verdict = stability(step_times(folder / record["steps_file"], record.get("split_rank") or 0))
    return {**record, "unstable": verdict.unstable, "unstable_reasons": list(verdict.reasons)}


def landed(plant: dict[str, Any], excess_over_idle: float, times: list[float]) -> bool:
    """Whether a planted run's slowdown landed in its window. Stops longer apart than a step
    lengthen some steps and not the median: the run's own steps show them (``excess_over_idle``,
    its share beyond its median less the idle runs'). Stops closer together than a step slow
    every step alike, which its steps cannot tell from a slower machine: there the planter's own
    log must show it held its share over cycles that cover the window (it runs from the ranks'
    start to their end)."""
    period = plant["throttle"]["period_sec"]
    if period >= statistics.median(times):
        return excess_over_idle >= SLOWDOWN / 2
    cycles = plant["stops"] * period  # at least the time it ran: a late wake lengthens a cycle
    stopped = sum(plant["stopped_sec"].values()) / max(1, len(plant["stopped_sec"]))
    return cycles >= sum(times) and stopped >= SLOWDOWN / 2 * cycles


def pools(folder: Path) -> list[Pool]:
    records = {r["run_id"]: rejudged(r, folder) for r in read_records(folder / "results.jsonl")}
    plants = [json.loads(line) for line in (folder / "plant.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for setting in sorted({p["setting"] for p in plants}):
        mine = [p for p in plants if p["setting"] == setting and records.get(p["run_id"], {}).get("status") == "ok"]
        times = {p["run_id"]: step_times(folder / records[p["run_id"]]["steps_file"]) for p in mine}
        idle = [p["run_id"] for p in mine if not p["planted"]]
        excess = {r: excess_share(t, statistics.median(t)) for r, t in times.items()}
        floor = statistics.median(excess[r] for r in idle)
        planted = [p for p in mine if p["planted"]]
        verified = [p["run_id"] for p in planted if landed(p, excess[p["run_id"]] - floor, times[p["run_id"]])]
        planted = [p["run_id"] for p in planted]
        idle_runs, verified_runs = [records[r] for r in idle], [records[r] for r in verified]
        out.append(Pool(setting, idle_runs, verified_runs, [r for r in planted if r not in verified], excess,
                        nearest_pairs(idle_runs, verified_runs)))  # fmt: skip
    return out


def throughput_verdict(baseline: list[dict[str, Any]], current: list[dict[str, Any]], include_unstable: bool,
                       tolerance: Tolerance | None = None) -> str:  # fmt: skip
    tolerances = {"throughput": tolerance} if tolerance else None
    (row,) = [r for r in compare(baseline, current, tolerances, include_unstable).rows if r.metric == "throughput"]
    return row.verdict


def compare_rates(pool: Pool, k: int, resamples: int, rng: np.random.Generator, include_unstable: bool,
                  tolerance: Tolerance | None = None) -> dict[str, Any]:  # fmt: skip
    """``tolerance``: the throughput tolerance and test level (default: ``compare``'s)."""
    aa, ab, matched = Counter(), Counter(), Counter()
    for _ in range(resamples):
        chosen = rng.choice(len(pool.idle), 2 * k, replace=False)
        base = [pool.idle[i] for i in chosen[:k]]
        aa[throughput_verdict(base, [pool.idle[i] for i in chosen[k:]], include_unstable, tolerance)] += 1
        if len(pool.planted) >= k:
            slow = rng.choice(len(pool.planted), k, replace=False)
            ab[throughput_verdict(base, [pool.planted[i] for i in slow], include_unstable, tolerance)] += 1
        if len(pool.pairs) >= k:
            pairs = [pool.pairs[i] for i in rng.choice(len(pool.pairs), k, replace=False)]
            matched[throughput_verdict([a for a, _ in pairs], [b for _, b in pairs], include_unstable, tolerance)] += 1
    return {"k": k, "unstable": "included" if include_unstable else "left out", "aa": dict(aa), "ab": dict(ab),
            "ab_matched": dict(matched), "resamples": resamples}  # fmt: skip


def _store(nights: list[list[dict[str, Any]]]) -> Store:
    records = [r for night in nights for r in night]
    s = settings(records[0])
    runs = SettingRuns(key_of(s), s, setting_label(s), {i: night for i, night in enumerate(nights)})
    labels = [Night(i, f"night-{i:02d}", Path(f"night-{i:02d}/results.jsonl"), f"night-{i:02d}", "") for i in range(len(nights))]
    return Store([n.source for n in labels], labels, [runs], len(records), Counter(r["status"] for r in records), {}, 0)


def history_rates(pool: Pool, series: int, rng: np.random.Generator, include_unstable: bool) -> dict[str, Any]:
    counts: dict[str, Counter] = {"idle": Counter(), "drop": Counter()}
    for kind in counts:
        if kind == "drop" and len(pool.planted) < PER_NIGHT:
            continue
        for _ in range(series):
            nights = []
            for night in range(NIGHTS):
                source = pool.planted if kind == "drop" and night >= DROP_AT else pool.idle
                nights.append([source[i] for i in rng.choice(len(source), PER_NIGHT, replace=False)])
            history = build_history(_store(nights), ["throughput"], include_unstable=include_unstable)
            findings = history.findings
            counts[kind]["series"] += 1
            counts[kind]["any step"] += bool(findings)
            counts[kind]["regression step"] += any(f.regression for f in findings)
            counts[kind]["found at night 18 ± 1"] += any(f.regression and abs(f.step.index - DROP_AT) <= 1 for f in findings)
            counts[kind][f"gate {history.gate_result()}"] += 1
    return {"unstable": "included" if include_unstable else "left out", **{kind: dict(c) for kind, c in counts.items() if c}}


def summary(pool: Pool) -> dict[str, Any]:
    def values(rs):
        return [r["throughput_images_per_sec"] for r in rs]

    idle, slow = values(pool.idle), values(pool.planted)
    ratios = [b["throughput_images_per_sec"] / a["throughput_images_per_sec"] - 1 for a, b in pool.pairs]
    return {
        "matched_change_median": statistics.median(ratios) if ratios else None, "matched_pairs": len(ratios),
        "setting": pool.setting, "label": pool.idle[0]["label"], "cpu": pool.idle[0]["provenance"]["cpu_model"],
        "idle_runs": len(idle), "idle_mean": statistics.fmean(idle), "idle_cv": statistics.stdev(idle) / statistics.fmean(idle),
        "idle_unstable": sum(bool(r.get("unstable")) for r in pool.idle),
        "planted_verified": len(slow), "planted_unverified": pool.unverified,
        "planted_mean": statistics.fmean(slow) if slow else None,
        "planted_drop": statistics.fmean(slow) / statistics.fmean(idle) - 1 if slow else None,
        "planted_unstable": sum(bool(r.get("unstable")) for r in pool.planted),
    }  # fmt: skip


def _share(counter: dict[str, int], key: str) -> str:
    """``key``'s share of the draws (of ``series`` where the counter has that key)."""
    total = counter.get("series", sum(counter.values()))
    return f"{counter.get(key, 0) / total:.1%}" if total else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration.rates", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", type=Path, help="the campaign's output folder")
    parser.add_argument("--resamples", type=int, default=2000, help="compare draws per setting and repeat count (default 2000)")
    parser.add_argument("--series", type=int, default=300, help="history series per setting and scenario (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every count here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    results = []
    for pool in pools(args.folder):
        entry = summary(pool)
        entry["compare"] = [compare_rates(pool, k, args.resamples, rng, include) for include in (False, True)
                            for k in REPEATS if 2 * k <= len(pool.idle)]  # fmt: skip
        entry["history"] = [history_rates(pool, args.series, rng, include) for include in (False, True)]
        results.append(entry)
    print("| setting | idle runs: mean images/s (CV), unstable | planted runs verified: mean (change), unstable | planted vs nearest idle: median change (pairs) |")
    print("|---|---|---|---|")
    for e in results:
        planted = f"{e['planted_verified']}: {e['planted_mean']:.1f} ({e['planted_drop']:+.1%}), {e['planted_unstable']}" if e["planted_mean"] else "none"
        matched = f"{e['matched_change_median']:+.1%} ({e['matched_pairs']})" if e["matched_pairs"] else "—"
        print(f"| {e['setting']} | {e['idle_runs']}: {e['idle_mean']:.1f} ({e['idle_cv']:.1%}), {e['idle_unstable']} | {planted} | {matched} |")
    print("\n| setting | unstable runs | repeats per side | A/A regression | A/A inconclusive | A/B regression (detected) | A/B inconclusive | A/B ok "
          "| time-matched A/B regression | inconclusive | ok |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in results:
        for c in e["compare"]:
            m = c["ab_matched"]
            print(f"| {e['setting']} | {c['unstable']} | {c['k']} | {_share(c['aa'], 'regression')} | {_share(c['aa'], 'inconclusive')} | "
                  f"{_share(c['ab'], 'regression')} | {_share(c['ab'], 'inconclusive')} | {_share(c['ab'], 'ok')} | "
                  f"{_share(m, 'regression')} | {_share(m, 'inconclusive')} | {_share(m, 'ok')} |")  # fmt: skip
    print("\n| setting | unstable runs | series | idle: any step | idle: gate regression / inconclusive | drop at 18: found at 18 ± 1 | drop: gate regression / inconclusive |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for e in results:
        for h in e["history"]:
            idle, drop = h.get("idle", {}), h.get("drop", {})
            print(f"| {e['setting']} | {h['unstable']} | {idle.get('series', 0)} | {_share(idle, 'any step')} | "
                  f"{_share(idle, 'gate regression')} / {_share(idle, 'gate inconclusive')} | {_share(drop, 'found at night 18 ± 1')} | "
                  f"{_share(drop, 'gate regression')} / {_share(drop, 'gate inconclusive')} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
