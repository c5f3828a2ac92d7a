"""The regression gate's test level, chosen from the calibration campaigns' real runs: for each
one-sided level, how often ``compare`` calls an idle-against-idle difference a regression (A/A)
and how often it finds the planted slowdown (A/B), with the default policy for runs flagged
unstable (left out of the timings). The same draws as ``benchmarks.calibration.rates`` (the
same seed gives the same draws at every level, so the levels differ by the test alone).

    .venv/bin/python -m benchmarks.calibration.levels docs/calibration/runs docs/calibration/runs-1thread \\
        docs/calibration/runs-1thread-uniform [--levels 0.025,0.03,0.035,0.04,0.05] [--resamples 10000]

The level the gate uses is the largest whose false regressions stay within the 5% target, with
room for the estimate's own noise, in every campaign and repeat count; then its detection is
checked on a campaign that played no part in choosing it (docs/calibration.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from benchmarks.calibration.rates import REPEATS, _share, compare_rates, pools
from larsbench.reports.compare import default_tolerances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration.levels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folders", type=Path, nargs="+", help="campaign output folders")
    parser.add_argument("--levels", default="0.025,0.03,0.035,0.04,0.05", help="one-sided levels to try (0.025: the two-sided 5%% test of before)")
    # 10,000 draws: a false-regression rate near 5% then carries about ±0.2 points of draw noise (±0.5 at 2,000)
    parser.add_argument("--resamples", type=int, default=10000, help="compare draws per setting, repeat count and level (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every count here")
    args = parser.parse_args(argv)
    levels = [float(x) for x in args.levels.split(",")]
    throughput = default_tolerances()["throughput"]
    rows = []
    for folder in args.folders:
        for pool in pools(folder):
            for k in REPEATS:
                if 2 * k > len(pool.idle):
                    continue
                for level in levels:
                    rng = np.random.default_rng(args.seed)
                    rates = compare_rates(pool, k, args.resamples, rng, False, dataclasses.replace(throughput, alpha=level))
                    rows.append({"campaign": folder.name, "setting": pool.setting, "level": level, **rates})
    print("| campaign | setting | repeats per side | one-sided level | A/A regression | A/B regression (detected) | A/B inconclusive | time-matched A/B regression |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['campaign']} | {r['setting']} | {r['k']} | {r['level']:g} | {_share(r['aa'], 'regression')} | "
              f"{_share(r['ab'], 'regression')} | {_share(r['ab'], 'inconclusive')} | {_share(r['ab_matched'], 'regression')} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
