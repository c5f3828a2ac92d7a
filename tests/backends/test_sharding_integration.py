"""Sharded optimizer state trains exactly as unsharded (2 real gloo ranks, fp32, 12 steps,
tiny CNN at 16 px): every layer-wise optimizer through DDP (none, zero1: torch's
ZeroRedundancyOptimizer) and DeepSpeed (none, zero1, zero2) ends with the same parameters, logs
the same per-layer norms, holds half the optimizer state per rank under ZeRO, and has ZeRO's
collectives in its measured step split. All runs come from one start of the ranks
(sharding_ranks.py), shared by every assertion here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from larsbench.core.results import read_records
from tests.backends.sharding_ranks import LAYERWISE, SHARDINGS
from tests.conftest import REPO

pytestmark = pytest.mark.multiprocess

BASELINE = ("ddp", "none")
SHARDED = [case for case in SHARDINGS if case[1] != "none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    started = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=2",
         str(REPO / "tests" / "backends" / "sharding_ranks.py"), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-5000:]
    records = {r["run_id"]: r for r in read_records(out)}
    marks = {m["run_id"]: m["steps"] for m in map(json.loads, (out / "marks.jsonl").read_text().splitlines())}
    return out, records, marks


def rid(backend: str, sharding: str, optimizer: str) -> str:
    return f"{backend}-{sharding}-{optimizer}"


@pytest.mark.parametrize("optimizer", LAYERWISE)
@pytest.mark.parametrize(("backend", "sharding"), [case for case in SHARDINGS if case != BASELINE])
def test_every_setting_ends_with_the_unsharded_parameters(runs, optimizer, backend, sharding):
    _, records, _ = runs
    want, got = records[rid(*BASELINE, optimizer)], records[rid(backend, sharding, optimizer)]
    assert want["status"] == got["status"] == "ok", got["error"]
    assert (got["optimizer_sharding"], got["steps"]) == (sharding, 12)
    assert got["param_checksum"] == pytest.approx(want["param_checksum"], rel=1e-6)
    for (step, a), (_, b) in zip(want["loss_curve"], got["loss_curve"]):
        assert b == pytest.approx(a, rel=1e-6), f"step {step}"
    # and the run trained: the weights moved and the loss changed
    losses = [loss for _, loss in got["loss_curve"]]
    assert max(losses) - min(losses) > 1e-3


def telemetry(out, run_id):
    rows = [json.loads(line) for line in (out / "telemetry" / f"{run_id}.jsonl").read_text().splitlines()]
    return {(r["step"], r["layer"]): r for r in rows}


@pytest.mark.parametrize("optimizer", LAYERWISE)
@pytest.mark.parametrize(("backend", "sharding"), SHARDED)
def test_sharded_telemetry_holds_every_layers_norms(runs, optimizer, backend, sharding):
    out, _, _ = runs
    want, got = telemetry(out, rid(*BASELINE, optimizer)), telemetry(out, rid(backend, sharding, optimizer))
    assert sorted(got) == sorted(want) and {step for step, _ in want} == {1, 4, 8, 12}
    for key, row in want.items():
        for column, value in row.items():
            if isinstance(value, float):
                assert got[key][column] == pytest.approx(value, rel=1e-5), (key, column)


@pytest.mark.parametrize("optimizer", LAYERWISE)
def test_zero_holds_half_the_optimizer_state_per_rank(runs, optimizer):
    _, records, _ = runs
    whole = records[rid("deepspeed", "none", optimizer)]
    per_rank = [r["optimizer_state_bytes"] for r in whole["ranks"]]
    assert per_rank[0] == per_rank[1] == whole["optimizer_state_bytes"] > 0
    for sharding in ("zero1", "zero2"):
        record = records[rid("deepspeed", sharding, optimizer)]
        shards = [r["optimizer_state_bytes"] for r in record["ranks"]]
        # equal partitions of the flat groups, padded to a multiple of the ranks
        assert all(abs(s - whole["optimizer_state_bytes"] / 2) <= 64 for s in shards), (shards, whole["optimizer_state_bytes"])
    # ZeroRedundancyOptimizer deals out whole parameters: each one's state on exactly one rank
    ddp = records[rid("ddp", "zero1", optimizer)]
    shards = [r["optimizer_state_bytes"] for r in ddp["ranks"]]
    assert sum(shards) == records[rid("ddp", "none", optimizer)]["optimizer_state_bytes"] and max(shards) < sum(shards)
    for record in (whole, ddp):
        assert all(r["peak_host_rss_bytes"] > 0 and r["peak_cuda_bytes"] is None for r in record["ranks"])


@pytest.mark.parametrize("optimizer", LAYERWISE)
def test_zeros_collectives_land_in_the_measured_split(runs, optimizer):
    _, records, marks = runs
    for backend, sharding in SHARDINGS:
        steps = marks[rid(backend, sharding, optimizer)]
        assert len(steps) == 12 and all(step["launched"] >= 1 for step in steps)  # the gradient reduction
        # sharded: the parameter all-gather (DeepSpeed) or broadcast (ZeroRedundancyOptimizer)
        # after the optimizer step, and the layer-norm reduction, each waited on whole
        assert all(step["waited"] == (2 if sharding != "none" else 0) for step in steps), (backend, sharding, steps)
        record = records[rid(backend, sharding, optimizer)]
        assert record["comm_sec_per_step"] >= record["exposed_comm_sec_per_step"] > 0
