"""How often ``larsbench history`` finds a step where there is none, and finds the real ones:
``python -m benchmarks.history_calibration [--trials 400]``.

Seeded synthetic nightly series (normal noise of 2% CV unless said otherwise), each run
through ``reports.changepoints.find_steps`` as ``history`` runs it (3 nights to a level), with
no tolerance (the statistics alone) and with the default throughput tolerance (5%). Prints the
share of series in which a step was found and, for planted steps, the share found at the
right night (±1).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from larsbench.reports.changepoints import find_steps


def noise(rng: np.random.Generator, n: int = 30) -> np.ndarray:
    return 100 * (1 + 0.02 * rng.standard_normal(n))


def step(at: int, size: float, n: int = 30):
    def make(rng: np.random.Generator) -> np.ndarray:
        y = noise(rng, n)
        y[at:] *= 1 + size
        return y

    return make


def outliers(rng: np.random.Generator) -> np.ndarray:
    y = noise(rng)
    y[rng.integers(0, 30)] *= 0.7  # one night 30% slow
    return y


def blip(rng: np.random.Generator) -> np.ndarray:
    y = noise(rng)
    first = rng.integers(0, 29)
    y[first : first + 2] *= 0.75  # two bad nights, then back
    return y


SCENARIOS = [  # name, generator, planted step index or None
    ("noise only, 30 nights", noise, None),
    ("noise only, 300 nights", lambda rng: noise(rng, 300), None),
    ("heavy-tailed noise (Student t, 3 dof), 30 nights", lambda rng: 100 + 2 * rng.standard_t(3, 30), None),
    ("one outlier night (-30%)", outliers, None),
    ("two bad nights (-25%), then good again", blip, None),
    ("10% drop at night 18", step(18, -0.10), 18),
    ("10% drop at night 27 (3 nights at the new level)", step(27, -0.10), 27),
    ("4% drop at night 18", step(18, -0.04), 18),
]


def rates(make, planted: int | None, trials: int, tolerance: float) -> tuple[float, float | None]:
    flagged = right = 0
    for seed in range(trials):
        found = find_steps(make(np.random.default_rng(seed)), smallest_change=lambda level: tolerance * abs(level))
        flagged += bool(found)
        right += planted is not None and any(abs(s.index - planted) <= 1 for s in found)
    return flagged / trials, (right / trials if planted is not None else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history_calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400, help="seeded series per scenario")
    args = parser.parse_args(argv)
    print(f"{args.trials} seeded series per scenario; share with a step found (share at the planted night ±1)")
    print(f"{'scenario':52} {'no tolerance':>22} {'5% tolerance':>22}")
    for name, make, planted in SCENARIOS:
        cells = []
        for tolerance in (0.0, 0.05):
            flagged, right = rates(make, planted, args.trials, tolerance)
            cells.append(f"{flagged:6.1%}" + (f" ({right:6.1%})" if right is not None else " " * 9))
        print(f"{name:52} {cells[0]:>22} {cells[1]:>22}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
