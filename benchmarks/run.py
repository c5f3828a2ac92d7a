"""The ratio benchmarks, each printed against its target: ``python -m benchmarks.run``.

1. LARS step / foreach SGD step on ResNet-50's parameters (target <= 1.30x).
2. Plain per-parameter LARS loop / LARS step (target >= 3.00x); the in-place loop's ratio
   and LARS against fused SGD are printed for information.
3. The suite's DDP training step (2 CPU ranks, ResNet-50 at 32 px, synthetic data, LARS)
   against a bare hand-written DDP loop: throughput ratio (target >= 98%). ``--skip-lars
   --harness-device cuda --harness-ranks 1`` measures it alone on one GPU over NCCL
   (``benchmarks/gpu_check.sh`` does), ``--json FILE`` keeps the figures.
4. DeepSpeed's LARS training step with ZeRO-1 (sharded optimizer state, layer norms reduced
   across the partitions) against ZeRO-0 on the same 2 CPU ranks (target <= 1.30x), with each
   side's optimizer state per rank.

Every figure is measured in this run, both sides of a ratio interleaved in one process (one
torchrun launch each for 3 and 4). Each ratio is the median of per-round ratios; the spread printed with
it is their interquartile range. Interleaving spreads light load from other processes over
both sides, but on a busy machine OpenMP's threads stall unevenly: each measurement also
prints how many cores other processes used meanwhile, with a warning above 0.2.
Exit status 1 when a target is missed. About 100 s on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class OtherLoad:
    """How many cores other processes kept busy while the block ran (Linux: /proc/stat minus
    this process and its children); ``cores`` stays None where that cannot be read."""

    def __enter__(self) -> OtherLoad:
        self.cores: float | None = None
        self._start = (self._busy_seconds(), self._own_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy0, own0, wall0 = self._start
        busy1, wall = self._busy_seconds(), time.perf_counter() - wall0
        if busy0 is not None and busy1 is not None and wall > 0:
            self.cores = max(0.0, (busy1 - busy0 - (self._own_seconds() - own0)) / wall)

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            with open("/proc/stat") as stat:
                ticks = [int(x) for x in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait

    @staticmethod
    def _own_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def load_note(load: OtherLoad) -> str:
    if load.cores is None:
        return ""
    note = f"other processes used {load.cores:.2f} of {os.cpu_count()} cores meanwhile"
    if load.cores > 0.2:
        note += " - WARNING: contended machine, ratios unreliable (OpenMP threads stall); rerun when idle"
    return note


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def line(label: str, values: list[float], target: float, higher_is_better: bool, percent: bool = False) -> bool:
    q1, median, q3 = quartiles(values)
    ok = median >= target if higher_is_better else median <= target
    fmt = (lambda x: f"{x * 100:.1f}%") if percent else (lambda x: f"{x:.2f}x")
    sign = ">=" if higher_is_better else "<="
    print(
        f"{label}: {fmt(median)} (target {sign} {fmt(target)}) {'PASS' if ok else 'FAIL'}"
        f"   [IQR {fmt(q1)}-{fmt(q3)}, {len(values)} rounds]",
        flush=True,
    )
    return ok


def lars_ratios(rounds: int, copies: int) -> list[bool]:
    import torch

    from benchmarks.lars_step import interleaved_times, steppers

    start = time.perf_counter()
    steps = steppers(copies)
    with OtherLoad() as load:
        times = interleaved_times(steps, rounds)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(
        f"optimizer step on ResNet-50's parameters (CPU fp32, {torch.get_num_threads()} threads, "
        f"{copies} copies of each), median ms: "
        + ", ".join(f"{name} {value:.1f}" for name, value in ms.items())
        + f"   ({time.perf_counter() - start:.0f} s; {load_note(load)})",
        flush=True,
    )
    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(times[a], times[b])]

    ok = [
        line("LARS step / SGD foreach step", ratios("lars", "sgd_foreach"), 1.30, higher_is_better=False),
        line("per-parameter LARS loop / LARS step", ratios("lars_loop", "lars"), 3.00, higher_is_better=True),
    ]
    for label, a, b in (
        ("in-place per-parameter loop / LARS step", "lars_loop_in_place", "lars"),
        ("LARS step / SGD fused step", "lars", "sgd_fused"),
    ):
        q1, median, q3 = quartiles(ratios(a, b))
        print(f"  (info) {label}: {median:.2f}x   [IQR {q1:.2f}x-{q3:.2f}x]")
    return ok


def _torchrun(module: str, ranks: int, rounds: int, args: tuple[str, ...], tag: str, timeout: float) -> tuple[dict | None, OtherLoad]:
    """One torchrun launch of a benchmark module on this machine: the figures its last line
    starting with ``tag`` holds (None, with its output on stderr, when it failed), and the
    other processes' load while it ran."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={ranks}",
        "--module", module, "--rounds", str(rounds), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with OtherLoad() as load:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    results = [ln for ln in done.stdout.splitlines() if ln.startswith(tag + " ")]
    if done.returncode != 0 or not results:
        print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
        return None, load
    return json.loads(results[-1][len(tag) + 1:]), load


def harness_ratio(rounds: int, timeout: float, ranks: int = 2, harness_args: tuple[str, ...] = (), figures: dict | None = None) -> list[bool]:
    """``harness_args`` go to ``benchmarks.harness_ddp`` (device, model, image size, micro-batch);
    ``figures``, when given, receives the measured figures."""
    start = time.perf_counter()
    result, load = _torchrun("benchmarks.harness_ddp", ranks, rounds, harness_args, "HARNESS", timeout)
    if result is None:
        print("suite DDP step / bare DDP loop: could not be measured (see above) FAIL")
        return [False]
    suite, bare = result["seconds"]["suite"], result["seconds"]["bare"]
    images = result["steps_per_block"] * result["global_batch"]
    where = "GPU" if "cuda" in harness_args else "CPU"
    print(
        f"DDP training step, {result['world_size']} {where} ranks, global batch {result['global_batch']}: "
        f"suite {images * len(suite) / sum(suite):.1f} img/s, bare loop {images * len(bare) / sum(bare):.1f} img/s, "
        f"suite data wait {result['data_wait_sec'] / result['suite_step_sec']:.2%} of step time"
        f"   ({time.perf_counter() - start:.0f} s; {load_note(load)})",
        flush=True,
    )
    # throughput ratio per round: the two suite blocks against the two bare blocks between them
    ratios = [
        (bare[i] + bare[i + 1]) / (suite[i] + suite[i + 1]) for i in range(0, len(suite) - 1, 2)
    ]
    if figures is not None:
        figures.update(result, ratios=ratios, ratio_median=statistics.median(ratios),
                       suite_images_per_sec=images * len(suite) / sum(suite), bare_images_per_sec=images * len(bare) / sum(bare))  # fmt: skip
    return [line("suite DDP step / bare DDP loop throughput", ratios, 0.98, higher_is_better=True, percent=True)]


def zero_ratio(rounds: int, timeout: float, zero_args: tuple[str, ...] = ()) -> list[bool]:
    start = time.perf_counter()
    result, load = _torchrun("benchmarks.zero_step", 2, rounds, zero_args, "ZERO", timeout)
    if result is None:
        print("DeepSpeed ZeRO-1 LARS step / ZeRO-0 LARS step: could not be measured (see above) FAIL")
        return [False]
    zero0, zero1 = result["seconds"]["none"], result["seconds"]["zero1"]
    block = result["steps_per_block"]
    state = {name: ", ".join(f"{b / 2**20:.1f}" for b in per_rank) for name, per_rank in result["optimizer_state_bytes"].items()}
    print(
        f"DeepSpeed LARS training step, {result['world_size']} CPU ranks, {result['model']} at {result['image_size']} px, "
        f"micro-batch {result['micro_batch']}: ZeRO-0 {sum(zero0) / len(zero0) / block * 1e3:.0f} ms, "
        f"ZeRO-1 {sum(zero1) / len(zero1) / block * 1e3:.0f} ms per step; optimizer state per rank (MiB): "
        f"ZeRO-0 {state['none']}, ZeRO-1 {state['zero1']}   ({time.perf_counter() - start:.0f} s; {load_note(load)})",
        flush=True,
    )
    # step-time ratio per round: the two ZeRO-1 blocks against the two ZeRO-0 blocks around them
    ratios = [(zero1[i] + zero1[i + 1]) / (zero0[i] + zero0[i + 1]) for i in range(0, len(zero1) - 1, 2)]
    return [line("DeepSpeed ZeRO-1 LARS step / ZeRO-0 LARS step", ratios, 1.30, higher_is_better=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--lars-rounds", type=int, default=40, help="interleaved optimizer steps of each kind")
    parser.add_argument("--copies", type=int, default=3, help="copies of the parameters per optimizer")
    parser.add_argument("--harness-rounds", type=int, default=6, help="A B B A rounds of 5-step blocks")
    parser.add_argument("--skip-harness", action="store_true", help="leave out the DDP harness ratio")
    parser.add_argument("--skip-lars", action="store_true", help="leave out the optimizer-step ratios")
    parser.add_argument("--harness-timeout", type=float, default=900.0)
    parser.add_argument("--harness-ranks", type=int, default=2, help="ranks of the harness run (default 2)")
    parser.add_argument("--harness-device", choices=("cpu", "cuda"), default="cpu", help="cuda: one GPU per rank, NCCL")
    parser.add_argument("--harness-model", default="resnet50")
    parser.add_argument("--harness-image-size", type=int, default=32)
    parser.add_argument("--harness-micro-batch", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the harness figures here")
    parser.add_argument("--skip-zero", action="store_true", help="leave out the DeepSpeed ZeRO-1 / ZeRO-0 ratio")
    parser.add_argument("--zero-rounds", type=int, default=4, help="A B B A rounds of 5-step blocks, ZeRO-0 against ZeRO-1")
    parser.add_argument("--zero-model", default="resnet50")
    parser.add_argument("--zero-image-size", type=int, default=32)
    parser.add_argument("--zero-micro-batch", type=int, default=32)
    args = parser.parse_args(argv)
    if args.copies < 1 or args.lars_rounds < 4 or args.harness_rounds < 2:
        parser.error("--copies must be at least 1, --lars-rounds at least 4 and --harness-rounds at least 2 (quartiles need several rounds)")
    start = time.perf_counter()
    ok = [] if args.skip_lars else lars_ratios(args.lars_rounds, args.copies)
    if not args.skip_harness:
        harness_args = ("--device", args.harness_device, "--model", args.harness_model,
                        "--image-size", str(args.harness_image_size), "--micro-batch", str(args.harness_micro_batch))  # fmt: skip
        figures: dict = {}
        ok += harness_ratio(args.harness_rounds, args.harness_timeout, args.harness_ranks, harness_args, figures)
        if args.json:
            args.json.write_text(json.dumps({"device": args.harness_device, **figures}, indent=1) + "\n")
    if not args.skip_zero and args.harness_device == "cpu":
        zero_args = ("--model", args.zero_model, "--image-size", str(args.zero_image_size),
                     "--micro-batch", str(args.zero_micro_batch))  # fmt: skip
        ok += zero_ratio(args.zero_rounds, args.harness_timeout, zero_args)
    print(f"{sum(ok)}/{len(ok)} targets met in {time.perf_counter() - start:.0f} s")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
