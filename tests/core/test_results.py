import json
import multiprocessing
import warnings

import pytest

from larsbench.core import schema
from larsbench.core.errors import ConfigError
from larsbench.core.schema import SCHEMA_VERSION
from larsbench.core.results import append_record, check_writable, read_record_file, read_records
from tests.records import make_record


def record(run_id, **extra):
    return {**make_record(run_id=run_id), **extra}


def test_append_and_read_back(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    append_record(path, record("b", error="x" * 100_000))
    assert [r["run_id"] for r in read_records(path)] == ["a", "b"]
    assert [r["run_id"] for r in read_records(tmp_path)] == ["a", "b"]  # a folder works too


def test_incomplete_or_bad_records_are_refused_before_writing(tmp_path):
    path = tmp_path / "results.jsonl"
    bad = record("a")
    del bad["param_checksum"]
    with pytest.raises(ValueError, match="missing key param_checksum"):
        append_record(path, bad)
    with pytest.raises(ValueError, match="unknown key payload"):
        append_record(path, record("a", payload="x"))
    with pytest.raises(ValueError, match="world_size must be integer"):
        append_record(path, record("a", world_size="2"))
    with pytest.raises(ValueError, match="status"):
        append_record(path, record("a", status="great"))
    with pytest.raises(ValueError):
        append_record(path, record("a", throughput_images_per_sec=float("nan")))
    assert not path.exists() or path.read_bytes() == b""


def test_torn_line_is_skipped_with_a_warning_and_never_merged(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    with path.open("ab") as handle:
        handle.write(b'{"run_id": "torn", "stat')  # a writer died mid-line
    append_record(path, record("b"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [r["run_id"] for r in read_records(path)]
    assert runs == ["a", "b"]
    assert any("torn" in str(w.message) for w in caught)


def _writer(path, index):
    append_record(path, record(f"w{index}", error="y" * (1000 + 37 * index)))


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "results.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, i)) for i in range(64)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    lines = path.read_bytes().splitlines()
    assert len(lines) == 64
    assert sorted(json.loads(line)["run_id"] for line in lines) == sorted(f"w{i}" for i in range(64))


def test_newer_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a", schema_version=99))
    with pytest.raises(ValueError, match="upgrade larsbench"):
        read_records(path)


def test_read_only_output_fails_up_front():
    # /proc refuses new files even to root, so this holds on CI machines that run as root.
    with pytest.raises(ConfigError, match="cannot write results"):
        check_writable("/proc/larsbench-results")


def test_output_under_a_file_fails_up_front(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        check_writable(blocker / "out")
    assert info.value.key == "--output"


def test_a_resumed_run_supersedes_its_preempted_record(tmp_path):
    from larsbench.core.results import latest_per_run

    path = tmp_path / "results.jsonl"
    append_record(path, record("a", status="preempted"))
    append_record(path, record("b"))
    append_record(path, record("a", steps=100))
    runs = latest_per_run(read_records(path))
    assert [(r["run_id"], r["status"]) for r in runs] == [("a", "ok"), ("b", "ok")]
    assert runs[0]["steps"] == 100


def test_one_file_reports_its_unreadable_lines_as_a_count(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    with path.open("ab") as handle:
        handle.write(b"\x00\xff binary\n[1, 2]\n{torn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the caller reports the count; nothing is warned
        found, skipped = read_record_file(path)
    assert [r["run_id"] for r in found] == ["a"] and skipped == 3


def test_skipped_arrays_are_left_undecoded_and_nothing_else_changes(tmp_path):
    path = tmp_path / "results.jsonl"
    curve = [[1, 2.5], [2, None], [3, 1e-3]]
    compact = record("compact", loss_curve=curve, error='said "loss_curve":[[1,2]] in a string', unreachable_nodes=[[7]])
    spaced = record("spaced", loss_curve=curve)
    nested = record("nested", loss_curve=[[1, [2]], [3]])
    append_record(path, compact)
    with path.open("a") as handle:
        handle.write(json.dumps(spaced) + "\n")  # another tool's layout: decoded whole
        handle.write('{"run_id": "torn", "loss_curve":[[1,2],[2,\n')
    append_record(path, nested)
    found, skipped = read_record_file(path, ("loss_curve",))
    assert skipped == 1
    by_id = {r["run_id"]: r for r in found}
    assert by_id["compact"]["loss_curve"] is None
    assert {k: v for k, v in by_id["compact"].items() if k != "loss_curve"} == {k: v for k, v in compact.items() if k != "loss_curve"}
    assert by_id["spaced"]["loss_curve"] == curve  # not the compact form: left whole
    assert by_id["nested"]["loss_curve"] == [[1, [2]], [3]]  # the cut would spoil it: decoded whole
    assert read_record_file(path)[0][0]["loss_curve"] == curve  # without skip_arrays, untouched


def test_a_record_before_the_measured_split_keeps_no_inferred_communication(tmp_path):
    old = record("a", schema_version=3, exposed_comm_sec_per_step=0.02, comm_fraction=0.3)
    for key in ("split_rank", "overhead_sec_per_step", "comm_sec_per_step", "overlapped_comm_sec_per_step",
                "overhead_fraction", "comm_messages_bytes"):  # fmt: skip
        del old[key]
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    (migrated,) = read_records(tmp_path)
    assert migrated["exposed_comm_sec_per_step"] is None and migrated["comm_fraction"] is None
    assert migrated["throughput_images_per_sec"] == old["throughput_images_per_sec"]
    assert schema.problems(migrated) == []


def test_a_one_rank_record_of_schema_5_reads_its_reduction_calls_as_overhead(tmp_path):
    old = record("a", schema_version=5, world_size=1, exposed_comm_sec_per_step=0.05, comm_sec_per_step=0.2,
                 overhead_sec_per_step=0.01, step_time_mean_sec=0.3)  # fmt: skip
    del old["reduction_wait_sec_per_step"], old["reduction_span_sec_per_step"]
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    (migrated,) = read_records(tmp_path)
    assert (migrated["reduction_wait_sec_per_step"], migrated["reduction_span_sec_per_step"]) == (0.05, 0.2)
    assert migrated["exposed_comm_sec_per_step"] == 0.0 and migrated["comm_sec_per_step"] == 0.0
    assert migrated["overhead_sec_per_step"] == pytest.approx(0.06) and migrated["overhead_fraction"] == pytest.approx(0.2)
    assert schema.problems(migrated) == []


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_record_reads_with_the_loader_it_ran_with(tmp_path, version):
    path = tmp_path / "results.jsonl"
    old = record("a", schema_version=version)
    for key in ("data_loader", "precision", "channels_last", "compile")[: 1 if version == 2 else None]:
        del old[key]  # what that version wrote
    path.write_text(json.dumps(old) + "\n" + json.dumps({**old, "run_id": "b", "provenance": {"config": {"data_loader": "gpu"}}}) + "\n")
    first, second = read_records(path)
    assert (first["data_loader"], second["data_loader"]) == ("cpu", "gpu")
    assert first["schema_version"] == second["schema_version"] == SCHEMA_VERSION
    if version == 1:
        assert first["precision"] == "fp32" and first["compile"] is False


def test_a_record_before_registered_optimizers_says_lars_kept_telemetry(tmp_path):
    lines = []
    for run_id, optimizer in (("a", "lars"), ("b", "sgd")):
        old = {**record(run_id), "schema_version": 4, "optimizer": optimizer}
        del old["layer_telemetry"]  # what version 4 wrote
        lines.append(json.dumps(old))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    lars, sgd = read_records(tmp_path)
    assert (lars["layer_telemetry"], sgd["layer_telemetry"]) == (True, False)
    assert schema.problems(lars) == schema.problems(sgd) == []
