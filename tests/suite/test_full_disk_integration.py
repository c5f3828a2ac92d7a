"""A disk that fills while a run trains, for real: the results folder on a small tmpfs, and
/dev/shm (where DataLoader workers hand batches over) shrunk to a few pages for one run. The run
ends ``failed`` with the full disk named, its record written, earlier records intact, and no
traceback from larsbench itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_input import can_mount, tiny_disk
from tests.conftest import REPO
from tests.reports.report_records import record

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root (CI runs as root)"),
]

TINY = ["--model", "tiny_cnn", "--micro-batch", "4", "--device", "cpu", "--no-report"]


def seed_results(folder: Path) -> bytes:
    """Two earlier records, as an earlier night left them."""
    data = "".join(json.dumps(r) + "\n" for r in (record(run_id="earlier-1"), record(run_id="earlier-2"))).encode()
    (folder / "results.jsonl").write_bytes(data)
    return data


def larsbench(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "larsbench", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "400"},
    )  # fmt: skip


def check_failed_run(out: Path, earlier: bytes, done: subprocess.CompletedProcess, full: str) -> dict:
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "Traceback" not in done.stdout + done.stderr, text  # the ranks' own tracebacks go to the run's log
    data = (out / "results.jsonl").read_bytes()
    assert data.startswith(earlier), "earlier records changed"
    lines = data[len(earlier):].decode().splitlines()
    assert len(lines) == 1, lines
    failed = json.loads(lines[0])
    assert failed["status"] == "failed"
    assert "No space left on device" in failed["error"] and f"{full} is full (" in failed["error"], failed["error"]
    assert "run failed" in done.stdout and f"{full} is full" in " ".join(done.stdout.split())
    return failed


def test_the_results_disk_filling_mid_run(tmp_path):
    # Room for the earlier records, the reserve a run holds and about 40 KiB more: per-step
    # telemetry of 300 steps fills that part-way through.
    with tiny_disk(free_kib=12 + 128 + 40) as disk:
        earlier = seed_results(disk)
        done = larsbench("run", *TINY, "--steps", "300", "--synthetic-samples", "64", "--telemetry-every-steps", "1",
                         "--log-every-steps", "1", "--output", disk)  # fmt: skip
        failed = check_failed_run(disk, earlier, done, str(disk))
        assert not (disk / ".larsbench" / "reserve").exists()  # given back to write the record


def test_shared_memory_filling_mid_run(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    earlier = seed_results(out)
    # A private mount namespace: /dev/shm of 64 KiB for this run only, room for the DataLoader's
    # semaphores but not for a batch of 16 images.
    shrink = ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs /dev/shm && exec "$@"', "sh")
    done = larsbench("run", *TINY, "--steps", "3", "--micro-batch", "16", "--dataset", "generated", "--num-classes", "4",
                     "--train-images-per-class", "4", "--val-images-per-class", "2", "--data-workers", "1", "--output", out,
                     prefix=shrink)  # fmt: skip
    failed = check_failed_run(out, earlier, done, "/dev/shm")
    assert "shared memory" in failed["error"]
