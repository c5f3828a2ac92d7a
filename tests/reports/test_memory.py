"""The report's memory table (reports/memory.py): optimizer state and memory peaks of the largest
rank beside throughput and exposed communication, from records the suite's builder makes."""

from __future__ import annotations

from tests.records import make_record, write_records

MIB = 2**20


def sharded_pair():
    common = dict(backend="deepspeed", world_size=2, micro_batch_size=8, throughput=100.0, ready_sec=0.05,
                  peak_host_rss_bytes=[900 * MIB, 910 * MIB])  # fmt: skip
    whole = make_record(**common, optimizer_state_bytes=[40 * MIB, 40 * MIB], exposed_comm_sec=0.010)
    sharded = make_record(**common, optimizer_sharding="zero1", optimizer_state_bytes=[20 * MIB, 21 * MIB],
                          exposed_comm_sec=0.014)  # fmt: skip
    return whole, sharded


def test_the_record_keeps_every_ranks_memory_and_the_largest(tmp_path):
    _, sharded = sharded_pair()
    assert [r["optimizer_state_bytes"] for r in sharded["ranks"]] == [20 * MIB, 21 * MIB]
    assert (sharded["optimizer_state_bytes"], sharded["peak_host_rss_bytes"], sharded["peak_cuda_bytes"]) == (
        21 * MIB, 910 * MIB, None
    )
    assert sharded["optimizer_sharding"] == "zero1"


def test_the_report_shows_shardings_saving_beside_its_cost(tmp_path, cli):
    code, out = cli("report", write_records(tmp_path / "res" / "results.jsonl", sharded_pair()), "-o", tmp_path / "out")
    assert code == 0, out
    md = (tmp_path / "out" / "report.md").read_text()
    table = md.split("### Memory per rank")[1]
    rows = [line for line in table.splitlines() if line.startswith("| deepspeed")]
    assert len(rows) == 2
    by_sharding = {row.split("|")[3].strip(): [cell.strip() for cell in row.split("|")[1:-1]] for row in rows}
    assert by_sharding["none"][5:8] == ["10.0", "40.0", "910.0"] and by_sharding["none"][8] == "—"
    assert by_sharding["zero1"][5:8] == ["14.0", "21.0", "910.0"]
    assert by_sharding["zero1"][4] == by_sharding["none"][4] == "100.0"


def test_no_table_for_records_without_memory(tmp_path, cli):
    old = make_record(throughput=100.0)  # a run that measured no memory (records before schema 5)
    code, out = cli("report", write_records(tmp_path / "res" / "results.jsonl", [old]), "-o", tmp_path / "out")
    assert code == 0, out
    assert "Memory per rank" not in (tmp_path / "out" / "report.md").read_text()
