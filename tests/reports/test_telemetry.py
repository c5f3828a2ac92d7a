import pandas as pd
import pytest
from report_records import write
from study_records import study, telemetry_rows, write_lines

from larsbench.reports.telemetry import RunTelemetry, load_telemetry, select, spread_over_layers, step_summary


def test_duplicate_step_layer_rows_keep_the_last_and_a_torn_line_is_skipped(tmp_path):
    rows = telemetry_rows([1, 5])
    restart = dict(rows[3], trust_ratio=0.5, effective_lr=0.5)  # step 5, conv1.weight, logged again after a restart
    path = write_lines(tmp_path / "t.jsonl", [*rows, restart], tail='{"step": 10, "lay')
    frame, warning = load_telemetry(path)
    assert len(frame) == 6 and frame["step"].tolist() == [1, 1, 1, 5, 5, 5]
    assert frame.loc[(frame["step"] == 5) & (frame["layer"] == "conv1.weight"), "trust_ratio"].tolist() == [0.5]
    assert "skipped 1 unreadable line" in warning
    assert step_summary(frame, 5) == pytest.approx((0.1, 0.15, 0.5))  # 0.5, 0.1, 0.15 → min, median, max


def test_missing_or_unusable_files_give_a_warning_not_an_exception(tmp_path):
    frame, warning = load_telemetry(tmp_path / "nope.jsonl")
    assert frame is None and "cannot read" in warning
    frame, warning = load_telemetry(write_lines(tmp_path / "bad.jsonl", [{"step": 1, "layer": "x"}]))
    assert frame is None and "lacks column(s) layer_index, trust_ratio" in warning


def test_spread_over_layers_per_step():
    frame = pd.DataFrame(telemetry_rows([2], layers=[f"l{i}" for i in range(11)]))
    (row,) = spread_over_layers(frame, "trust_ratio").to_dict("records")
    assert row["step"] == 2 and row["min"] == pytest.approx(0.02) and row["max"] == pytest.approx(0.22)
    assert row["median"] == pytest.approx(0.12) and row["p10"] == pytest.approx(0.04) and row["p90"] == pytest.approx(0.2)


def test_many_runs_plot_the_smallest_a_middle_and_the_largest_batch_per_recipe():
    runs = [RunTelemetry(f"r{b}-{s}", "", recipe, b, s, 10.0, pd.DataFrame())
            for recipe in ("lars", "lars+warmup") for b in (8, 16, 32, 64, 128) for s in (0, 1)]  # fmt: skip
    chosen, note = select(runs)
    assert [(t.recipe, t.global_batch, t.seed) for t in chosen] == [
        (r, b, 0) for r in ("lars", "lars+warmup") for b in (8, 32, 128)
    ]
    assert "20 layer-wise runs recorded telemetry" in note and "(6 runs)" in note
    assert select(runs[:8]) == (runs[:8], None)


def test_report_plots_lars_telemetry_and_warns_about_a_missing_file(tmp_path, cli):
    records = study()
    lars = [r for r in records if r["optimizer"] == "lars" and r["final_top1"] is not None]
    for r in lars:
        r["telemetry"] = f"telemetry/{r['run_id']}.jsonl"
        r["provenance"]["config"]["checkpoint_every_steps"] = 5 + r["seed"]  # bookkeeping: never splits repeats
    for r in lars[:-1]:  # the last one's file is missing
        write_lines(tmp_path / "res" / r["telemetry"], telemetry_rows([1, 5, 10], lr=r["global_batch_size"] / 8))
    code, out = cli("report", write(tmp_path / "res" / "results.jsonl", records), "-o", tmp_path / "out")
    assert code == 0, out
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("### Layer-wise telemetry")[1]
    assert f"Warning: run `{lars[-1]['run_id']}`: " in section and "cannot read" in section
    assert "3 layer-wise run(s) recorded no telemetry" in section  # the throughput sweep
    first = lars[0]["run_id"]
    assert f"| {first} | lars+warmup0.5 | 8 | 3 | 3 (1–10) | 0.01 / 0.02 / 0.03 | 0.1 / 0.2 / 0.3 |" in section
    pngs = [tmp_path / "out" / f"w1-tiny-cnn-telemetry-{r['run_id']}.png" for r in lars[:-1]]
    pngs.append(tmp_path / "out" / "w1-tiny-cnn-telemetry-spread-lars-warmup0-5.png")
    for png in pngs:
        assert png.stat().st_size > 1000 and png.read_bytes().startswith(b"\x89PNG")
        assert f"]({png.name})" in section
    assert md.count("| lars+warmup0.5 | 8 = 1×8×1 |") == 1  # seeds with different telemetry intervals stay repeats
