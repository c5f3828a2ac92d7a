"""``larsbench comm``: sizes, nccl-tests' bandwidth formulas, and real collectives through
each backend's own API."""

from __future__ import annotations

import json

import pytest
import torch

from larsbench.core.errors import ConfigError
from larsbench.suite.comm import parse_size, size_sweep
from larsbench.suite.comm_worker import Buffers, bus_factor, time_operation
from tests.conftest import larsbench


def test_sizes_parse_and_sweep_in_powers_of_two():
    assert parse_size("4K", "--min-bytes") == 4096 and parse_size("256M", "--max-bytes") == 256 * 2**20
    assert parse_size("1GiB", "x") == 2**30 and parse_size("64", "x") == 64
    assert size_sweep(4096, 32768) == [4096, 8192, 16384, 32768]
    assert size_sweep(4096, 4096) == [4096] and size_sweep(4096, 10000) == [4096, 8192, 10000]
    for bad in ("lots", "4X", "2"):
        with pytest.raises(ConfigError) as info:
            parse_size(bad, "--max-bytes")
        assert info.value.key == "--max-bytes"


class RankOneOfTwo:
    """Rank 1's view: its own collectives are instant, and rank 0 says its first one took
    ``rank0_sec`` (the value a broadcast from rank 0 brings)."""

    def __init__(self, rank0_sec: float):
        self.rank0_sec, self.barriers, self.collectives = rank0_sec, 0, 0

    def barrier(self):
        self.barriers += 1

    def broadcast_(self, tensor, src=0):
        if tensor.dtype == torch.float64:
            tensor.fill_(self.rank0_sec)
        else:
            self.collectives += 1
        return tensor


@pytest.mark.parametrize(("rank0_sec", "count"), [(0.3, 1), (0.01, 20), (0.05, 6), (5.0, 1)])
def test_every_rank_times_the_count_rank_0_sets(rank0_sec, count):
    # Ranks that judged the 1 s budget each by their own clock disagreed (rank 1 here would
    # take 20 instant ones), and the one with more left waited in a barrier forever.
    backend = RankOneOfTwo(rank0_sec)
    buffers = Buffers.allocate("broadcast", 16, 2, torch.device("cpu"))
    timing = time_operation(backend, buffers, torch.device("cpu"), warmup=1, iterations=20, loops=3, budget_sec=1.0)
    assert timing.count == count and len(timing.seconds) == 3
    # one barrier before the first (sizing) collective and one before each timed loop
    assert backend.barriers == 1 + 3
    assert backend.collectives == 1 + 1 + 3 * count  # warm-up, sizing, the loops back to back


def test_the_all_gather_output_is_allocated_before_timing():
    buffers = Buffers.allocate("all_gather", 4096, 4, torch.device("cpu"))
    assert buffers.data.numel() == 256 and buffers.out.numel() == 1024 and buffers.message_bytes == 4096
    smallest = Buffers.allocate("all_reduce", 4, 8, torch.device("cpu"))
    assert smallest.out is None and smallest.message_bytes == 4


def test_bus_bandwidth_factors_are_nccl_tests():
    assert bus_factor("all_reduce", 8) == pytest.approx(1.75)
    assert bus_factor("all_gather", 8) == pytest.approx(0.875)
    assert bus_factor("broadcast", 8) == 1.0
    assert bus_factor("all_reduce", 1) == 0.0


@pytest.mark.parametrize(("args", "key"), [(["--world-size", "0"], "--world-size"), (["--iterations", "1"], "--iterations"),
                                           (["--min-bytes", "1M", "--max-bytes", "4K"], "--min-bytes"),
                                           (["--operations", "all_to_all"], "--operations"), (["--backend", "mpi"], "--backend")])  # fmt: skip
def test_bad_comm_flags_exit_2_with_one_line(tmp_path, args, key):
    done = larsbench("comm", *args, "--output", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.startswith(f"larsbench: error: {key}: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "comm.jsonl").exists()


@pytest.mark.multiprocess
@pytest.mark.parametrize("backend, wait", [("ddp", None), ("deepspeed", None), ("horovod", None), ("horovod", "sleep")])
def test_each_backend_measures_its_collectives(tmp_path, monkeypatch, backend, wait):
    if wait:  # Horovod polling its handles instead of spinning: every collective still completes
        monkeypatch.setenv("LARSBENCH_HOROVOD_WAIT", wait)
    out = tmp_path / "out"
    done = larsbench("comm", "--backend", backend, "--world-size", "2", "--min-bytes", "4K", "--max-bytes", "16K",
                     "--iterations", "3", "--device", "cpu", "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "comm.jsonl").read_text().splitlines()]
    assert sorted({(r["operation"], r["bytes"]) for r in records}) == sorted(
        (op, size) for op in ("all_reduce", "all_gather", "broadcast") for size in (4096, 8192, 16384)
    )
    for r in records:
        assert r["backend"] == backend and r["world_size"] == 2 and r["iterations"] <= 3 and r["loops"] == 3
        assert r["schema_version"] == 2 and r["timing"] == "loop" and r["ranks_per_node"] == 2 and r["num_nodes"] == 1
        assert 0 < r["latency_sec"] < 1
        # Horovod's allgather allocates its own output; the other libraries write into ours
        assert r["output_preallocated"] is (backend != "horovod" or r["operation"] != "all_gather")
        assert r["algbw_gbps"] == pytest.approx(r["bytes"] / r["time_sec"] / 1e9)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * bus_factor(r["operation"], 2))
        assert r["transport"]["collectives"] == "gloo" and len(r["hosts"]) == 2
        assert r["time_min_sec"] <= r["time_sec"] <= r["time_max_sec"]
        assert r["provenance"]["environment"].get("LARSBENCH_HOROVOD_WAIT") == wait
    report = larsbench("report", str(out), "-o", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Collectives (larsbench comm)" in md and (tmp_path / "report" / "comm-busbw.png").is_file()
    assert "latency µs" in done.stdout  # the console's first row
