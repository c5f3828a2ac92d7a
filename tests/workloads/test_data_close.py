"""A rank's data-loader workers stop at once when the run ends (``RankData.close``), rather than
each waiting out the DataLoader's 5 s status check and being killed: that cost every run that
evaluated 10 s after its record."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from larsbench.workloads.data import build_rank_data

pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]  # forks data-loader workers; times their stop

CPU = torch.device("cpu")


def test_closing_stops_persistent_workers_cleanly_and_at_once(generated_root, make_spec):
    spec = make_spec(dataset="imagefolder", data_dir=str(generated_root), data_workers=1, micro_batch_size=2, seed=1)
    data = build_rank_data(spec, 0, 1, CPU)
    data.train.set_epoch(0)
    batches = iter(data.train)
    next(batches)  # mid-epoch, as a run that stops at its last step leaves it
    for _ in data.val:
        pass
    workers = [w for loader in (data.train.loader, data.val) for w in loader._iterator._workers]
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    started = time.perf_counter()
    data.close()
    took = time.perf_counter() - started
    assert [w.exitcode for w in workers] == [0, 0]  # they stopped on being told, not killed
    assert took < 2.0, f"closing took {took:.1f} s"
    data.close()  # again: nothing left to stop
    del batches, data
    gc.collect()
