"""Fixtures for the pytest-benchmark benchmarks (``python -m pytest benchmarks -n 0``).

These files are kept out of the project's test run: ``python -m pytest`` collects only
``testpaths = ["tests"]``; name this folder to run them.
"""

from __future__ import annotations

import pytest

from larsbench.backends.base import free_port
from larsbench.core.environment import ClusterEnvironment


@pytest.fixture(autouse=True)
def _isolated_data_cache(tmp_path_factory, monkeypatch):
    # Generated data sets land in a per-session folder, never in the user's cache.
    monkeypatch.setenv("LARSBENCH_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))
    # FLOP counts and measured peaks too (``core.cache``): measured once per test session.
    monkeypatch.setenv("LARSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def single_rank(monkeypatch) -> ClusterEnvironment:
    """A one-rank world on this machine, with its own rendezvous port (gloo on CPU)."""
    port = free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    # what a launcher would set (DeepSpeed insists on LOCAL_RANK)
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "1")):
        monkeypatch.setenv(key, value)
    return ClusterEnvironment("single", 0, 1, 0, 1, 0, "127.0.0.1", port)
