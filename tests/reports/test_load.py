import pytest
from report_records import record, write

from larsbench.reports.load import load_records, records_frame, summarize_repeats
from larsbench.core.errors import ConfigError


def test_repeats_differ_only_in_seed_and_pool_their_statistics():
    runs = [record(seed=s, throughput_images_per_sec=t) for s, t in [(0, 90.0), (1, 100.0), (2, 110.0)]]
    runs.append(record(seed=0, base_lr=1.0, throughput_images_per_sec=50.0))  # another setting
    summary = summarize_repeats(records_frame(runs))
    assert len(summary) == 2
    row = summary[summary["base_lr"] == 2.0].iloc[0]
    assert (row["runs"], row["throughput_n"]) == (3, 3)
    assert row["throughput_mean"] == pytest.approx(100.0)
    assert row["throughput_std"] == pytest.approx(10.0)
    assert (row["throughput_min"], row["throughput_max"]) == (90.0, 110.0)
    assert row["seeds"] == [0, 1, 2]


def test_failed_and_diverged_repeats_are_counted_not_dropped():
    runs = [record(seed=0), record(seed=1, throughput_images_per_sec=120.0),
            record(seed=2, status="failed", error="rank1: NCCL timeout"),
            record(seed=3, status="diverged", diverged_at_step=7)]  # fmt: skip
    (row,) = summarize_repeats(records_frame(runs)).to_dict("records")
    assert (row["runs"], row["ok_runs"]) == (4, 2)
    assert row["status"] == "ok ×2, diverged ×1, failed ×1"
    assert row["errors"] == "rank1: NCCL timeout" and row["diverged_at"] == "7"
    assert row["throughput_mean"] == pytest.approx(110.0)  # the ok runs only


def test_a_failed_run_without_a_device_stays_in_its_workload():
    runs = [record(), record(status="failed", seed=1)]  # failed before choosing a device: none recorded
    assert records_frame(runs)["workload"].nunique() == 1


def test_bad_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such results file"):
        load_records([tmp_path / "missing.jsonl"])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="holds no result records"):
        load_records([tmp_path / "empty.jsonl"])
    write(tmp_path / "run" / "results.jsonl", [record()])
    assert len(load_records([tmp_path / "run"])) == 1  # a folder holding results.jsonl works
