import pytest
from report_records import record

from larsbench.reports.load import records_frame, summarize_repeats
from larsbench.reports.scaling import efficiency, efficiency_index, scaling_series


def series_of(records, kind, baseline=None):
    return [s for s in scaling_series(summarize_repeats(records_frame(records)), kind, baseline) if s.scales]


def test_efficiency_formula():
    assert efficiency(180, 2, 100, 1) == pytest.approx(0.9)
    assert efficiency(300, 8, 100, 2) == pytest.approx(0.75)  # against N0=2: 300 / (4 × 100)
    with pytest.raises(ValueError):
        efficiency(100, 2, 0, 1)


def test_weak_scaling_against_the_smallest_world_size():
    runs = [record(world_size=n, throughput_images_per_sec=t) for n, t in [(1, 100.0), (2, 180.0), (4, 320.0)]]
    (weak,) = series_of(runs, "weak")
    assert weak.kind == "weak" and weak.baseline_world_size == 1 and weak.note is None
    assert "per-worker batch 8" in weak.label
    assert [p.efficiency for p in weak.points] == pytest.approx([1.0, 0.9, 0.8])
    assert [p.ideal for p in weak.points] == pytest.approx([100.0, 200.0, 400.0])
    assert series_of(runs, "strong") == []  # every global batch differs: nothing held fixed


def test_strong_scaling_holds_the_global_batch_fixed():
    runs = [
        record(world_size=1, micro_batch_size=16, throughput_images_per_sec=100.0),
        record(world_size=2, micro_batch_size=8, throughput_images_per_sec=150.0),
        record(world_size=4, micro_batch_size=4, throughput_images_per_sec=200.0),
    ]
    (strong,) = series_of(runs, "strong")
    assert "global batch 16" in strong.label
    assert [p.efficiency for p in strong.points] == pytest.approx([1.0, 0.75, 0.5])
    assert series_of(runs, "weak") == []


def test_declared_baseline_world_size_and_a_missing_one():
    runs = [record(world_size=n, throughput_images_per_sec=t) for n, t in [(2, 200.0), (4, 360.0), (8, 600.0)]]
    (weak,) = series_of(runs, "weak", baseline=4)
    assert [p.efficiency for p in weak.points] == pytest.approx([200 / (0.5 * 360), 1.0, 600 / (2 * 360)])
    (missing,) = series_of(runs, "weak", baseline=1)
    assert all(p.efficiency is None and p.ideal is None for p in missing.points)
    assert "no run at the baseline world size N₀=1" in missing.note and "present: N=2, 4, 8" in missing.note


def test_a_failed_baseline_run_is_stated_not_replaced():
    runs = [record(world_size=1, status="failed", error="OOM"), record(world_size=2, throughput_images_per_sec=180.0),
            record(world_size=4, throughput_images_per_sec=320.0)]  # fmt: skip
    (weak,) = series_of(runs, "weak")
    assert weak.baseline_world_size == 1
    assert "no throughput (status: failed)" in weak.note
    assert all(p.efficiency is None for p in weak.points)


def test_one_point_per_world_size_when_accumulation_differs():
    runs = [
        record(world_size=1, micro_batch_size=8, throughput_images_per_sec=100.0),
        record(world_size=2, micro_batch_size=8, throughput_images_per_sec=180.0),
        record(world_size=2, micro_batch_size=4, accumulation_steps=2, throughput_images_per_sec=150.0),
    ]
    weak = scaling_series(summarize_repeats(records_frame(runs)), "weak")
    assert sorted(len(s.points) for s in weak) == [1, 2]
    assert {s.split for s in weak} == {"acc 1, 1 node", "acc 2, 1 node"}
    index = efficiency_index(weak)
    assert sorted(v for v, _ in index.values() if v is not None) == pytest.approx([0.9, 1.0])


def test_other_hardware_or_workload_never_joins_a_scaling_group():
    runs = [
        record(world_size=1, throughput_images_per_sec=100.0),
        record(world_size=2, throughput_images_per_sec=180.0, cpu_model="Other CPU"),
        record(world_size=4, throughput_images_per_sec=320.0, image_size=64),
    ]
    assert series_of(runs, "weak") == []


def test_series_that_differ_only_in_a_condition_say_which():
    runs = [record(world_size=n, throughput_images_per_sec=t, conditions={"link_rate": rate})
            for rate, t2 in (("unlimited", 180.0), ("1gbit", 90.0)) for n, t in ((1, 100.0), (2, t2))]  # fmt: skip
    series = sorted(series_of(runs, "weak"), key=lambda s: s.points[1].efficiency)
    assert [s.label.rsplit(" ", 1)[1] for s in series] == ["(link_rate=1gbit)", "(link_rate=unlimited)"]
    assert [s.points[1].efficiency for s in series] == pytest.approx([0.45, 0.9])
    (alone,) = series_of(runs[:2], "weak")
    assert alone.distinct == ""  # nothing to tell apart
