"""docs/records.md documents exactly the keys a record and its provenance hold, as the schema
declares them, and the record builder writes exactly those keys."""

from __future__ import annotations

import torch

from larsbench.core import schema
from larsbench.core.environment import ClusterEnvironment
from larsbench.loop import provenance
from larsbench.loop.metrics import RunMetrics
from larsbench.loop.record import build_record
from tests.conftest import REPO
from tests.records import make_record, make_spec


def test_the_docs_hold_the_schema_tables_verbatim():
    text = (REPO / "docs" / "records.md").read_text()
    assert schema.markdown(schema.RECORD) in text, "regenerate with: python -m larsbench.core.schema"
    assert schema.markdown(schema.PROVENANCE) in text, "regenerate with: python -m larsbench.core.schema"


def test_the_builder_writes_the_schema_for_finished_and_failed_runs():
    env = ClusterEnvironment("single", 0, 1, 0, 1, 0, "127.0.0.1", 29500)
    spec = make_spec()
    info = provenance.collect(spec.to_dict(), env, {"torch": torch.__version__})
    for record in (
        build_record(spec, "r", "e", info, RunMetrics()),
        build_record(spec, "r", "e", info, status="failed", error="rank0: boom"),
        make_record(throughput=100.0, world_size=2, ready_sec=0.05, compute_sec=0.04),
    ):
        assert schema.problems(record) == []
        assert set(record) == set(schema.RECORD_KEYS)
        assert set(record["provenance"]) == {k.name for k in schema.PROVENANCE}


def test_a_reader_naming_a_key_the_schema_lacks_fails_at_once():
    assert schema.key("throughput_images_per_sec") == "throughput_images_per_sec"
    try:
        schema.key("exposed_comm_sec")
    except KeyError as exc:
        assert "not a key of the result record" in str(exc)
    else:
        raise AssertionError("an unknown key was accepted")
