import pytest
from report_records import record, write
from study_records import TRAIN_IMAGES, study, study_run

from larsbench.core.spec import recipe_label
from larsbench.reports.load import records_frame, summarize_repeats
from larsbench.reports.study import FrontierPoint, frontiers, is_study, stops_paying_off, study_rows


def test_recipe_labels():
    assert recipe_label("lars", "none", 0) == "lars"
    assert recipe_label("lars", None, 5) == "lars+warmup5"
    assert recipe_label("sgd", "linear", 0.0) == "sgd-linear"
    assert recipe_label("sgd", "sqrt", None) == "sgd-sqrt"
    assert recipe_label("sgd", "linear", 0.5) == "sgd-linear+warmup0.5"
    assert recipe_label("sgd", "linear", 2) != recipe_label("sgd", "linear", 5)  # warm-up lengths never read alike


def summary_of(records):
    return summarize_repeats(records_frame(records))


def test_study_rows_keep_runs_that_measured_accuracy_and_need_two_recipes_or_batches():
    summary = summary_of(study())
    rows = study_rows(summary)
    # 4 LARS batches (seeds 0 and 1 at B=8 are one group) + 4 SGD batches; the sweep has no evaluation.
    assert len(rows) == 8 and set(rows["world_size"]) == {1}
    assert rows[rows["recipe"] == "sgd-linear"]["global_batch_size"].tolist() == [8, 16, 32, 64]
    assert is_study(rows)
    assert not is_study(study_rows(summary_of([record(seed=0), record(seed=1)])))  # one recipe, one batch


def frontier_of(records, label):
    summary = summary_of(records)
    (front,) = [f for f in frontiers(summary, study_rows(summary)) if f.label == label]
    return {p.global_batch: p for p in front.points}, front


def test_frontier_takes_throughput_from_the_run_with_most_workers_else_the_study_run():
    points, front = frontier_of(study(), "lars+warmup0.5")
    # B=8: no other run at B=8, so the study's own throughput (mean of its two seeds, 100).
    assert points[8].source.startswith("own runs (N=1") and points[8].throughput == 100.0
    assert points[8].projected_sec == pytest.approx(2.0 * TRAIN_IMAGES / 100.0)
    # B=16, 32, 64: the sweep's N=2, 4, 8 runs, not the study's 1-worker accumulation runs.
    for batch, n, tput, epochs in [(16, 2, 190.0, 2.0), (32, 4, 360.0, 2.2), (64, 8, 640.0, 3.6)]:
        p = points[batch]
        assert (p.source_world_size, p.throughput, p.train_images) == (n, tput, TRAIN_IMAGES)
        assert f"N={n} ({batch} = {n}×8×1" in p.source
        assert p.projected_sec == pytest.approx(epochs * TRAIN_IMAGES / tput)
    assert points[64].measured_sec == 24.0
    # 12.8 → 6.74 → 3.91 s, then 3.60 s at B=64: only 8% less, so B=32 is where it stops paying off.
    assert front.stop_batch == 32 and "B=64 cuts projected TTA by only 8%" in front.note


def test_frontier_stops_before_a_batch_that_diverged():
    points, front = frontier_of(study(), "sgd-linear")
    assert points[16].projected_sec == pytest.approx(2.5 * TRAIN_IMAGES / 190.0)  # a LARS sweep run is the only N=2 at B=16
    assert points[32].reached == "diverged" and points[32].projected_sec is None
    assert points[64].reached == "not reached"
    assert front.stop_batch == 16 and front.note == "B=32 diverged"


def point(batch, projected):
    return FrontierPoint(batch, str(batch), "all", epochs=1.0, projected_sec=projected)


def test_stops_paying_off_at_the_minimum_or_at_a_small_gain():
    assert stops_paying_off([point(8, 100), point(16, 60), point(32, 40), point(64, 45)])[0] == 32  # minimum
    assert stops_paying_off([point(8, 100), point(16, 95), point(32, 40)])[0] == 8  # 5% < 10%: first small gain
    # A gap: 8 → 32 is two doublings; 100 → 64 s is 20% per doubling, which still pays off.
    assert stops_paying_off([point(8, 100), point(32, 64)]) == (
        None, "still pays off at the largest batch measured (B=32)")  # fmt: skip
    assert stops_paying_off([point(8, 100)])[0] is None


def test_study_section_in_the_report(tmp_path, cli):
    code, out = cli("report", write(tmp_path / "results.jsonl", study()), "-o", tmp_path / "out")
    assert code == 0, out
    md = (tmp_path / "out" / "report.md").read_text()
    study_md = md.split("### Large-batch study")[1].split("### Layer-wise telemetry")[0]
    # Repeats pool: the mean, its 95% CI (t with 1 degree of freedom: 12.7 × 0.0283 / √2 = 0.254
    # around 52%), n and min–max; best top-1 comes from the eval history.
    # The two LARS repeats at B=8 ran seeds 0 and 1: their spread is seed-to-seed.
    row = ("| lars+warmup0.5 | 8 = 1×8×1 | 2 | 52.0% [26.6, 77.4] (n=2, seed-to-seed; 50.0–54.0) | 55.0% [-8.5, 118.5] "
           "(n=2, seed-to-seed; 50.0–60.0) | 2 [2, 2] (n=2, seed-to-seed) | 13.0 [0.3, 25.7] (n=2, seed-to-seed; 12.0–14.0) "
           "| 100.0 ± 0.0 | ok |")  # fmt: skip
    assert row in study_md
    assert "| sgd-linear | 16 = 1×8×2 | 0.2 | 45.0% | 45.0% | 2.5 | 16.0 | 100.0 | ok |" in study_md
    assert "| sgd-linear | 32 = 1×8×4 | 0.4 | — | — | — | — | — | diverged at step 12 |" in study_md
    assert "| sgd-linear | 64 = 1×8×8 | 0.8 | 20.0% | 20.0% | — | — | 100.0 | not reached |" in study_md
    assert "| lars+warmup0.5 | 32 | 2.2 | ddp lars+warmup0.5 N=4 (32 = 4×8×1, 1 run) | 360.0 | 3.9 | 14.0 |" in study_md
    assert "- lars+warmup0.5: stops paying off at B=32: going to B=64 cuts projected TTA by only 8%." in study_md
    assert "- sgd-linear: stops paying off at B=16: B=32 diverged." in study_md
    for name in ("study-top1", "frontier"):
        png = tmp_path / "out" / f"w1-tiny-cnn-{name}.png"
        assert png.stat().st_size > 1000 and f"]({png.name})" in md
    assert not (tmp_path / "out" / "w1-tiny-cnn-top1.png").exists()  # the study's per-recipe plot stands in


def test_a_short_evaluated_throughput_run_does_not_hide_the_study_run_that_reached_the_target():
    short = record(world_size=2, throughput_images_per_sec=190.0, final_top1=0.2, time_to_accuracy_sec=None,
                   epochs_to_accuracy=None, steps_per_epoch=40)  # fmt: skip
    records = [r for r in study() if not (r["world_size"] == 2)] + [short]
    points, _ = frontier_of(records, "lars+warmup0.5")
    assert points[16].epochs == 2.0 and points[16].reached == "all"  # the 1-worker study run's
    assert points[16].source_world_size == 2 and points[16].throughput == 190.0  # the 2-worker run's


def test_accuracy_intervals_say_whether_they_spread_over_seeds_or_over_runs_of_one_seed(tmp_path, cli):
    one_seed = [study_run("lars", 8, seed=0, repeat=r, final_top1=v) for r, v in enumerate([0.50, 0.51])]
    two_seeds = [study_run("lars", 16, seed=s, final_top1=v) for s, v in enumerate([0.50, 0.54])]
    code, _ = cli("report", write(tmp_path / "r.jsonl", one_seed + two_seeds), "-o", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert code == 0 and "50.5% [44.1, 56.9] (n=2, run-to-run, one seed; 50.0–51.0)" in md
    assert "52.0% [26.6, 77.4] (n=2, seed-to-seed; 50.0–54.0)" in md
