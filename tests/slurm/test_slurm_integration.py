"""Real jobs on a real (single-node, local) Slurm: every backend under srun, a job array, a
failed run's record, quoting end to end, and preemption with requeue and resume.

Keep them small: the cluster has the machine's 2 CPUs, so 2-rank jobs run one at a time.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest

from larsbench.core.layout import RunFiles
from larsbench.loop.progress import read_status
from larsbench.slurm import submit
from larsbench.slurm.job import read_runs
from tests.conftest import run_cli
from tests.slurm.conftest import job_field, job_ids, larsbench_slurm, logs, records, wait_for

pytestmark = pytest.mark.multiprocess

TINY = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "32", "--micro-batch", "4",
        "--steps", "3", "--synthetic-samples", "64", "--device", "cpu", "--cpus-per-task", "1",
        "--poll-seconds", "0.3"]  # fmt: skip


def check_ok(record: dict, job_id: str, array_task: str | None = None) -> None:
    assert record["status"] == "ok", record["error"]
    p = record["provenance"]
    assert p["launcher"] == "slurm"
    assert p["slurm_array_task_id"] == array_task
    assert p["node_list"] == "localhost" and p["num_nodes"] == 1
    if array_task is None:
        assert p["slurm_job_id"] == job_id and record["run_id"] == f"larsbench-{job_id}"
    else:
        assert record["run_id"] == f"larsbench-{job_id}_{array_task}"


def test_ddp_resnet50_through_the_main_cli(slurm_cluster, tmp_path):
    """The documented example, through `larsbench slurm`."""
    out = tmp_path / "ddp"
    done = larsbench_slurm(
        "--backend", "ddp", "--world-size", "2", "--model", "resnet50", "--dataset", "synthetic",
        "--image-size", "32", "--micro-batch", "4", "--steps", "10", "--output", str(out), "--submit", "--wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    (job_id,) = job_ids(done.stdout)
    (record,) = records(out)
    check_ok(record, job_id)
    assert (record["backend"], record["model"], record["world_size"], record["steps"]) == ("ddp", "resnet50", 2, 10)
    # queue time is Slurm's, kept apart from the training time
    assert record["queue_time_sec"] is not None and 0 <= record["queue_time_sec"] < 600
    assert record["provenance"]["allocation"]["ntasks_per_node"] == 2


def test_job_array_over_two_backends(slurm_cluster, tmp_path):
    experiment = tmp_path / "sweep.yaml"
    experiment.write_text(
        "name: array\n"
        "defaults: {model: tiny_cnn, dataset: synthetic, image_size: 32, micro_batch_size: 4, steps: 3,\n"
        "           synthetic_samples: 64, world_size: 2, device: cpu}\n"
        "sweep: {backend: [ddp, deepspeed]}\n"
        "slurm: {cpus_per_task: 1, array_throttle: 1, time: 10}\n"
    )
    out = tmp_path / "array"
    done = larsbench_slurm(str(experiment), "--output", str(out), "--wait", "--poll-seconds", "0.3")
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    (job_id,) = job_ids(done.stdout)
    script = (out / "slurm" / "array-1n2t.sbatch").read_text()
    assert "#SBATCH --array=0-1%1" in script.splitlines()
    runs = {r["index"]: r["spec"]["backend"] for r in read_runs(out / "slurm" / "array-1n2t.runs.jsonl")}
    by_task = {r["provenance"]["slurm_array_task_id"]: r for r in records(out)}
    assert sorted(by_task) == ["0", "1"]
    for task, record in by_task.items():
        check_ok(record, job_id, task)
        assert record["backend"] == runs[int(task)]
        # LARSBENCH_ALLOCATION, once larsbench.loop.provenance records it
        allocation = record["provenance"].get("allocation", {})
        assert allocation in ({}, {"nodes": 1, "ntasks_per_node": 2, "cpus_per_task": 1, "time": 10})


def test_horovod_under_srun(slurm_cluster, tmp_path):
    out = tmp_path / "horovod"
    done = larsbench_slurm("--backend", "horovod", "--world-size", "2", *TINY, "--output", str(out), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    (record,) = records(out)
    check_ok(record, job_ids(done.stdout)[0])
    assert record["provenance"]["versions"]["horovod"]


def test_a_failed_run_gets_a_failed_record(slurm_cluster, tmp_path):
    out = tmp_path / "failed"
    done = larsbench_slurm("--world-size", "1", *TINY, "--device", "cuda", "--output", str(out), "--wait")
    assert done.returncode == 1, done.stdout + done.stderr + logs(out)
    (job_id,) = job_ids(done.stdout)
    assert f"job {job_id}: FAILED" in done.stdout
    (record,) = records(out)
    assert record["status"] == "failed" and record["run_id"] == f"larsbench-{job_id}"
    assert record["error"].startswith("rank0: device: cuda was requested but no CUDA device is visible")
    assert record["provenance"]["slurm_job_id"] == job_id


def test_config_values_run_nothing_in_a_real_job(slurm_cluster, tmp_path):
    pwned = tmp_path / "pwned"
    bad = f"$(touch {pwned}) `touch {pwned}`"
    out = tmp_path / f"out {bad}"
    experiment = tmp_path / "evil.yaml"
    experiment.write_text(json.dumps({"name": f"exp {bad}", "defaults": {"data_dir": f"/data/{bad}"}}))
    done = larsbench_slurm(str(experiment), "--world-size", "1", *TINY, "--job-name", f"job {bad}",
                           "--extra-sbatch", f"--comment={bad}", "--output", str(out), "--wait")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    (record,) = records(out)
    assert record["status"] == "ok" and record["experiment"] == f"exp {bad}"
    assert record["provenance"]["config"]["data_dir"] == f"/data/{bad}"
    assert job_field(job_ids(done.stdout)[0], "JobName") == "job"  # scontrol splits on the space
    # sbatch reads the quoted header value as one literal partition name
    script = next((out / "slurm").glob("*.sbatch"))
    evil = script.with_name("partition.sbatch")
    evil.write_text(script.read_text().replace("#SBATCH --chdir=", f"#SBATCH --partition='p {bad}'\n#SBATCH --chdir=", 1))
    refused = subprocess.run(["sbatch", "--test-only", str(evil)], capture_output=True, text=True)
    assert refused.returncode != 0 and f"invalid partition specified: p {bad}" in refused.stderr
    assert not pwned.exists()


def test_preemption_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    """USR1 to the batch shell (as --signal=B:USR1@N does near the time limit): the ranks
    checkpoint and exit 75, the script requeues the job, the same run id resumes and finishes."""
    out = tmp_path / "preempt"
    run = ["--backend", "ddp", "--world-size", "2", "--model", "tiny_cnn", "--dataset", "generated",
           "--image-size", "32", "--micro-batch", "4", "--steps", "160", "--train-images-per-class", "16",
           "--val-images-per-class", "5", "--num-classes", "4", "--data-workers", "1", "--eval-every-epochs", "10",
           "--log-every-steps", "5", "--device", "cpu"]  # fmt: skip
    done = larsbench_slurm(*run, "--cpus-per-task", "1", "--output", str(out), "--submit")
    assert done.returncode == 0, done.stdout + done.stderr
    (job_id,) = job_ids(done.stdout)
    progress = RunFiles.of(out / "results.jsonl", f"larsbench-{job_id}").progress
    wait_for(lambda: (read_status(progress) or {}).get("step", 0) >= 10, 90, "training to reach step 10")
    subprocess.run(["scancel", "--batch", f"--signal={signal.SIGUSR1.name.removeprefix('SIG')}", job_id], check=True)
    final = submit.wait([job_id], poll_seconds=0.3)
    assert submit.exit_status(final) == 0, logs(out)
    assert job_field(job_id, "Restarts") == "1"
    text = logs(out)
    # srun may report 143 rather than 75: --kill-on-bad-exit stops a rank that exits a moment later.
    assert re.search(rf"larsbench: run larsbench-{job_id} preempted \(status (75|143)\); requeueing job {job_id}", text), text
    assert "resumed at step" in text
    (record,) = records(out)
    check_ok(record, job_id)
    assert (record["steps"], record.get("restarts")) == (160, 1)
    # The same seed never interrupted (a local run: same ranks, same one thread per rank) ends
    # with the same parameters.
    reference = run_cli("run", *run, "--output", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    (uninterrupted,) = records(tmp_path / "reference")
    assert record["param_checksum"] == pytest.approx(uninterrupted["param_checksum"], rel=1e-6)
    assert record["final_top1"] == uninterrupted["final_top1"]
