"""Smoke test of benchmarks/gpu_throughput.py on the CPU (a tiny model, a few steps): it runs as
a script and prints the figures it exists for. Its real numbers come from a GPU."""

import subprocess

import pytest
import sys

from tests.conftest import REPO


@pytest.mark.multiprocess  # a benchmark script in a fresh interpreter
def test_gpu_throughput_script_runs_on_the_cpu():
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_throughput.py", "--model", "tiny_cnn", "--batch", "8", "--image-size", "16",
         "--steps", "2", "--warmup", "1", "--optimizer-rounds", "2", "--precision", "bf16", "--channels-last",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "images/s over 2 steps" in out and "bf16, channels_last, lars" in out
    assert "optimizer step on tiny_cnn's" in out and "LARS / SGD step time:" in out
