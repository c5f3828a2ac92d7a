"""Preemption for real: SIGUSR1 to a running `larsbench run`, a checkpoint, a resume with the
same run id, and the same final parameters as a run that was never interrupted; also with the
optimizer state sharded (DeepSpeed ZeRO-1: each rank saves and restores its own shard)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from larsbench.core.layout import RunFiles
from larsbench.core.results import read_records
from larsbench.loop.progress import read_status
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.multiprocess

RUN = ["--model", "tiny_cnn", "--dataset", "generated", "--image-size", "32", "--world-size", "2",
       "--micro-batch", "4", "--steps", "160", "--train-images-per-class", "16", "--val-images-per-class", "5",
       "--num-classes", "4", "--data-workers", "1", "--eval-every-epochs", "10", "--log-every-steps", "5",
       "--device", "cpu", "--no-report"]  # fmt: skip


def start(out, backend, run_id, extra=()):
    return subprocess.Popen(
        [sys.executable, "-m", "larsbench", "run", *RUN, *extra, "--backend", backend, "--output", str(out), "--run-id", run_id],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("backend", "sharding"), [("ddp", "none"), ("deepspeed", "none"), ("horovod", "none"), ("deepspeed", "zero1")]
)
def test_preempted_run_resumes_to_the_same_parameters(tmp_path, backend, sharding):
    extra = ("--optimizer-sharding", sharding)
    out = tmp_path / "preempted"
    launcher = start(out, backend, "job-1", extra)
    progress = RunFiles.of(out / "results.jsonl", "job-1").progress
    deadline = time.time() + 120
    while time.time() < deadline and (read_status(progress) or {}).get("step", 0) < 10:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGUSR1)  # some steps into training, many before its end
    output, _ = launcher.communicate(timeout=180)
    assert launcher.returncode == 1, output[-3000:]
    first = read_records(out)
    assert [r["status"] for r in first] == ["preempted"], output[-3000:]
    assert "--run-id job-1" in first[0]["error"]
    saved = sorted((out / "checkpoints" / "job-1").glob("step-*"))
    assert saved and 0 < int(saved[-1].name.split("-")[1]) < 160
    if sharding != "none":  # each rank's file holds its own shard of the optimizer state
        shards = [torch.load(saved[-1] / f"rank{r}.pt", weights_only=False)["parts"] for r in (0, 1)]
        assert all("optimizer" in shard for shard in shards)
        assert "optimizer" not in torch.load(saved[-1] / "main.pt", weights_only=False)

    resumed = run_cli("run", *RUN, *extra, "--backend", backend, "--output", str(out), "--run-id", "job-1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = read_records(out)[-1]
    assert (final["status"], final["steps"], final["restarts"]) == ("ok", 160, 1)
    assert final["restart_overhead_sec"] > 0

    reference = run_cli("run", *RUN, *extra, "--backend", backend, "--output", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    uninterrupted = read_records(tmp_path / "reference")[0]
    assert final["param_checksum"] == pytest.approx(uninterrupted["param_checksum"], rel=1e-6), (
        f"resumed {final['param_checksum']!r} vs uninterrupted {uninterrupted['param_checksum']!r}; "
        f"first differing loss: {next(((a, b) for a, b in zip(final['loss_curve'], uninterrupted['loss_curve']) if a != b), None)}"
    )
    assert [s for s, _ in final["loss_curve"]] == list(range(1, 161))
    for (_, a), (_, b) in zip(final["loss_curve"], uninterrupted["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-5)
    assert final["final_top1"] == uninterrupted["final_top1"]
    # the event log tells one run: a single run_start, eval events, and a run_stop
    lines = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in (out / "mllog" / "job-1.log").read_text().splitlines()]
    keys = [line["key"] for line in lines]
    assert keys.count("run_start") == 1 and keys[-1] == "run_stop" and "eval_accuracy" in keys
