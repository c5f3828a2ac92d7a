"""docs/records.md documents exactly the keys a record and its provenance hold."""

from __future__ import annotations

import re

import torch

from larsbench.core.environment import ClusterEnvironment
from larsbench.core.results import REQUIRED_KEYS
from larsbench.core.spec import RunSpec
from larsbench.loop import provenance
from larsbench.loop.metrics import RunMetrics
from larsbench.loop.record import build_record
from tests.conftest import REPO


def documented(section: str) -> set[str]:
    text = (REPO / "docs" / "records.md").read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for row in re.findall(r"^\| ([^|]+) \|", text, flags=re.M):
        keys.update(re.findall(r"`([a-z0-9_]+)`", row))
    return keys


def test_every_record_key_is_documented_and_no_other():
    env = ClusterEnvironment("single", 0, 1, 0, 1, 0, "127.0.0.1", 29500)
    info = provenance.collect(RunSpec().to_dict(), env, {"torch": torch.__version__})
    record = build_record(RunSpec(), "r", "e", info, RunMetrics())
    assert set(record) == documented("Top-level keys")
    assert set(REQUIRED_KEYS) <= set(record)
    assert set(record["provenance"]) == documented("`provenance`")
