import json
import re

import pytest

from larsbench.reports.history import build_history, provenance_changes
from larsbench.reports.history_store import load_store, night_date, parse_timestamp
from tests.conftest import larsbench
from tests.reports.history_records import night_stamp, nightly_record, write_history
from tests.reports.report_records import write


def history_json(out) -> dict:
    return json.loads((out / "history.json").read_text())


def steps(out) -> list[dict]:
    return [step for series in history_json(out)["series"] for step in series["steps"]]


def test_a_10_percent_drop_at_night_18_is_named_with_what_changed(tmp_path, cli):
    root = write_history(tmp_path / "nights", drop_at=18, repeats=2)
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step")
    assert code == 1, out
    (step,) = steps(tmp_path / "report")
    nights = [n["label"] for n in history_json(tmp_path / "report")["nights"]]
    assert len(nights) == 30 and nights[0] == "2026-01-01"
    assert step["metric"] == "throughput" and step["regression"]
    assert abs(nights.index(step["first_bad"]) - 18) <= 1
    assert re.fullmatch(r"-(9\.\d|10\.\d|11\.\d)%", step["size"]), step["size"]
    assert {"what": "NCCL", "before": "2.27.3", "after": "2.28.1"} in step["changes"]
    assert "throughput fell" in out and "NCCL 2.27.3 → 2.28.1" in out and "gate failed" in out
    gate = history_json(tmp_path / "report")["gate"]
    assert gate["fails"] and gate["regressions"][0]["first_bad"] == step["first_bad"]


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_flags_nothing(tmp_path, cli, seed):
    root = write_history(tmp_path / "nights", seed=seed, repeats=2)
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step", "--metric", "throughput")
    assert code == 0, out
    assert steps(tmp_path / "report") == []
    assert "0 step(s)" in out and "gate passed" in out


@pytest.mark.parametrize("seed", range(3))
def test_a_single_outlier_night_is_not_a_step(tmp_path, cli, seed):
    root = write_history(tmp_path / "nights", seed=seed, outliers={12: 0.7, 28: 0.75})
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step", "--metric", "throughput")
    assert code == 0, out
    assert steps(tmp_path / "report") == []


def test_a_drop_on_the_newest_night_is_inconclusive_until_it_is_a_step_or_gone(tmp_path, cli):
    """One night 25% down is no level yet, and no reason to pass either: the gate says
    inconclusive (exit 3) and what would settle it; two more such nights make it a step."""
    root = write_history(tmp_path / "nights", outliers={29: 0.75})
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step", "--metric", "throughput")
    assert code == 3, out
    assert steps(tmp_path / "report") == []
    assert "gate inconclusive: " in out and "throughput: the newest 1 night(s) (2026-01-30) sit 2" in out
    assert "below the level of the 29 night(s) before them" in out and "not yet a step (it needs 3 nights" in out
    gate = history_json(tmp_path / "report")["gate"]
    assert gate["result"] == "inconclusive" and not gate["fails"] and len(gate["inconclusive"]) == 1
    assert "Gate (`--fail-on-step`): inconclusive" in (tmp_path / "report" / "history.md").read_text()
    write_history(tmp_path / "later", nights=32, drop_at=29, drop=0.25)  # the drop held for three nights: a step
    code, out = cli("history", "--no-plots", tmp_path / "later", "-o", tmp_path / "r2", "--fail-on-step", "--metric", "throughput")
    assert code == 1 and "gate failed" in out


def test_the_gate_looks_at_the_latest_points_only(tmp_path, cli):
    # A regression at night 10 that night 20 repaired: two steps, the last one good.
    root = tmp_path / "nights"
    for night in range(30):
        level = 90.0 if 10 <= night < 20 else 100.0
        write(root / f"n{night:02d}" / "results.jsonl", [nightly_record(night, level * (1 + 0.01 * (-1) ** night))])
    assert cli("history", "--no-plots", root, "-o", tmp_path / "report")[0] == 0  # no gate asked: 0 whatever it finds
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step")
    assert code == 0, out
    found = steps(tmp_path / "report")
    assert [(s["first_bad"], s["regression"]) for s in found] == [("2026-01-11", True), ("2026-01-21", False)]
    # The same drop, still there on the newest night: the gate fails.
    write_history(tmp_path / "late", drop_at=24)
    assert cli("history", "--no-plots", tmp_path / "late", "-o", tmp_path / "r2", "--fail-on-step")[0] == 1
    # ... but only from its min-nights-th night on: before that it is beyond the tolerance, not yet a step
    write_history(tmp_path / "new", drop_at=28)
    assert cli("history", "--no-plots", tmp_path / "new", "-o", tmp_path / "r3", "--fail-on-step")[0] == 3
    assert cli("history", "--no-plots", tmp_path / "new", "-o", tmp_path / "r3", "--fail-on-step", "--min-nights", "2")[0] == 1


def test_a_setting_no_longer_run_does_not_hold_the_gate(tmp_path, cli):
    old = write_history(tmp_path / "old", nights=20, drop_at=12, world_size=2)  # stopped after night 19
    new = write_history(tmp_path / "new", nights=30)
    code, out = cli("history", "--no-plots", old, new, "-o", tmp_path / "report", "--fail-on-step")
    assert code == 0, out
    assert len(steps(tmp_path / "report")) == 1 and "1 regression(s)" in out


def test_clusters_and_node_counts_never_share_a_series(tmp_path):
    root = tmp_path / "nights"
    for night in range(12):
        runs = [
            nightly_record(night, 100.0, cpu_model="Xeon"),
            nightly_record(night, 50.0, cpu_model="EPYC"),
            nightly_record(night, 180.0, cpu_model="Xeon"),
        ]
        runs[2]["provenance"]["num_nodes"] = 2
        write(root / f"n{night:02d}" / "results.jsonl", runs)
    history = build_history(load_store([root]), ["throughput"])
    levels = sorted({p.mean for s in history.series for p in s.points})
    assert levels == [50.0, 100.0, 180.0] and len(history.series) == 3
    assert history.findings == []


def test_nights_end_at_noon_utc_and_sources_of_one_night_stay_apart(tmp_path):
    assert night_date(parse_timestamp({"provenance": {"timestamp_utc": "2026-01-01T23:00:00+00:00"}})) == "2026-01-02"
    assert night_date(parse_timestamp({"provenance": {"timestamp_utc": "2026-01-02T03:00:00+02:00"}})) == "2026-01-02"
    assert night_date(parse_timestamp({"provenance": {"timestamp_utc": "2026-01-02T12:00:00"}})) == "2026-01-03"
    assert night_date(parse_timestamp({"provenance": {"timestamp_utc": "2026-01-02T23:00:00Z"}}), night_ends=0) == "2026-01-02"
    # one growing file: one point per night, a grid crossing midnight is one night
    grid = [nightly_record(1, 100.0), nightly_record(1, 101.0)]
    grid[0]["provenance"]["timestamp_utc"] = "2026-01-01T23:30:00+00:00"  # night 1 started before midnight
    growing = write(tmp_path / "growing.jsonl", [nightly_record(0, 99.0), *grid, nightly_record(2, 98.0)])
    assert [n.label for n in load_store([growing]).nights] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [len(r) for r in load_store([growing]).settings[0].by_night.values()] == [1, 2, 1]
    # two grids the same night (before and after an upgrade): two points, named by their folders
    before = write(tmp_path / "before" / "results.jsonl", [nightly_record(0, 100.0)])
    after = write(tmp_path / "after" / "results.jsonl", [nightly_record(0, 90.0, nccl="2.28.1", repeat=30)])
    nights = load_store([after, before]).nights
    assert [n.label for n in nights] == ["2026-01-01 before", "2026-01-01 after"]


def test_provenance_differences_name_versions_nodes_and_config():
    a, b = nightly_record(3, 100.0), nightly_record(4, 100.0, nccl="2.28.1")
    b["provenance"].update(node_list="gpu[01-04]", host="gpu01", torch_threads=8)
    b["provenance"]["versions"].update(torch="2.14.1", deepspeed="0.19.8")
    b["provenance"]["config"].update(checkpoint_every_steps=50, seed=9)  # the seed tells repeats apart: not a change
    text = {str(c) for c in provenance_changes([a], [b])}
    host = a["provenance"]["host"]
    assert {"torch 2.13.0 → 2.14.1", "NCCL 2.27.3 → 2.28.1", "DeepSpeed none → 0.19.8", "nodes none → gpu[01-04]",
            f"host {host} → gpu01", "config checkpoint_every_steps none → 50"} <= text  # fmt: skip
    assert any(t.startswith("git commit ") for t in text)
    assert not any("seed" in t for t in text)
    # repeats that disagree within a night show every value
    c = nightly_record(4, 100.0)
    c["provenance"]["host"] = "gpu02"
    assert f"host {host} → gpu01, gpu02" in {str(x) for x in provenance_changes([a], [b, c])}


def test_every_metric_has_its_series_and_direction(tmp_path, cli):
    root = tmp_path / "nights"
    for night in range(12):
        late = night >= 6
        r = nightly_record(night, 100.0, time_to_accuracy_sec=13.0 if late else 10.0, final_top1=0.5)
        write(root / f"n{night:02d}" / "results.jsonl", [r])
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step")
    assert code == 1, out
    data = history_json(tmp_path / "report")
    assert {s["metric"] for s in data["series"]} == {"throughput", "time_to_accuracy", "final_top1", "exposed_comm", "comm_fraction"}
    (step,) = steps(tmp_path / "report")
    assert (step["metric"], step["size"], step["regression"]) == ("time_to_accuracy", "+30.0%", True)
    # --metric narrows it; a tolerance above the step lets it through
    assert cli("history", "--no-plots", root, "-o", tmp_path / "r2", "--metric", "throughput", "--fail-on-step")[0] == 0
    assert cli("history", "--no-plots", root, "-o", tmp_path / "r3", "--tolerance", "time_to_accuracy=40%", "--fail-on-step")[0] == 0
    # a metric no ok run recorded has no series, and the report says so
    failed = tmp_path / "failed"
    for night in range(3):
        write(failed / f"n{night}" / "results.jsonl", [nightly_record(night, 100.0), nightly_record(night, 0.0, status="failed", world_size=2)])
    assert cli("history", "--no-plots", failed, "-o", tmp_path / "r4")[0] == 0
    assert "no run recorded" not in (tmp_path / "r4" / "history.md").read_text()  # every metric has a series of the 1-rank runs


def test_a_60_percent_step_in_exposed_communication_is_named(tmp_path, cli):
    """Two ranks whose exposed communication per step (``exposed_comm_sec_per_step``, measured on
    the backend's collectives) rises from 20 to 32 ms on night 8 of 16: the step is found on
    that night, as a regression of +60%, with what changed (NCCL 2.27.3 → 2.28.1)."""
    root = tmp_path / "nights"
    for night in range(16):
        late = night >= 8
        comm = (0.032 if late else 0.020) * (1 + 0.01 * (-1) ** night)
        runs = [nightly_record(night, 100.0, "2.28.1" if late else "2.27.3", repeat, world_size=2, exposed_comm_sec=comm,
                               compute_sec=0.05, step_sec=0.05 + comm + 0.005) for repeat in range(2)]  # fmt: skip
        write(root / f"n{night:02d}" / "results.jsonl", runs)
    assert runs[0]["exposed_comm_sec_per_step"] == pytest.approx(comm)
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step", "--metric", "exposed_comm")
    assert code == 1, out
    (step,) = steps(tmp_path / "report")
    assert (step["metric"], step["first_bad"], step["last_good"], step["regression"]) == ("exposed_comm", "2026-01-09", "2026-01-08", True)
    assert re.fullmatch(r"\+(59|60|61)\.\d%", step["size"]), step["size"]
    assert {"what": "NCCL", "before": "2.27.3", "after": "2.28.1"} in step["changes"]
    assert "exposed_comm rose 6" in out and "gate failed" in out


def test_unstable_runs_are_left_out_of_the_nightly_means(tmp_path, cli):
    """A disturbed run (its step times shifted) on a night does not pull that night's
    throughput down: left out and counted; a newest night of only disturbed runs is inconclusive."""
    root = tmp_path / "nights"
    for night in range(12):
        runs = [nightly_record(night, 100.0 * (1 + 0.01 * (-1) ** night))]
        if night in (4, 11):
            runs.append(nightly_record(night, 40.0, repeat=1, disturbed=True))
        write(root / f"n{night:02d}" / "results.jsonl", runs)
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "report", "--fail-on-step", "--metric", "throughput")
    assert code == 0, out
    (series,) = history_json(tmp_path / "report")["series"]
    assert [p["n"] for p in series["points"]] == [1] * 12 and sum(p["left_out_unstable"] for p in series["points"]) == 2
    assert min(p["mean"] for p in series["points"]) > 98
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "r2", "--fail-on-step", "--metric", "throughput", "--include-unstable")
    assert code == 3, out  # pooled, the newest night falls 30%: beyond the tolerance, not a step
    newest = root / "n12" / "results.jsonl"
    write(newest, [nightly_record(12, 40.0, disturbed=True)])
    code, out = cli("history", "--no-plots", root, "-o", tmp_path / "r3", "--fail-on-step", "--metric", "throughput")
    assert code == 3 and "every run of the newest night was disturbed (unstable)" in out
    assert history_json(tmp_path / "r3")["series"][0]["disturbed"] == ["2026-01-13"]


def test_failed_nights_and_resumed_runs(tmp_path):
    root = tmp_path / "nights"
    for night in range(8):
        runs = [nightly_record(night, 100.0)]
        if night == 5:
            runs[0].update(status="failed", throughput_images_per_sec=None, error="rank0: boom")
        if night == 6:  # preempted, then resumed under the same run id: counts once
            resumed = dict(runs[0], throughput_images_per_sec=101.0)
            runs[0].update(status="preempted", throughput_images_per_sec=None)
            runs.append(resumed)
        write(root / f"n{night:02d}" / "results.jsonl", runs)
    history = build_history(load_store([root]), ["throughput"])
    (series,) = history.series
    assert [n.label for n in series.missing] == ["2026-01-06"]
    assert [p.values for p in series.points if p.night.label == "2026-01-07"] == [(101.0,)]
    assert history.store.statuses == {"ok": 7, "failed": 1}


def test_the_report_is_self_contained_with_one_plot_per_metric_and_setting(tmp_path, cli):
    root = write_history(tmp_path / "nights", nights=14, drop_at=7, repeats=2)
    write_history(tmp_path / "nights2", nights=14, level=50.0, cpu_model="Other CPU")
    report = tmp_path / "report"
    report.mkdir()
    (report / "s9-throughput.png").write_bytes(b"a plot of a setting gone since")  # last night's
    (report / "logo.png").write_bytes(b"not ours")
    code, _ = cli("history", root, tmp_path / "nights2", "-o", report)
    assert code == 0
    assert not (report / "s9-throughput.png").exists() and (report / "logo.png").exists()
    (report / "logo.png").unlink()
    pngs = sorted(p.name for p in report.glob("*.png"))
    metrics = ("comm_fraction", "exposed_comm", "final_top1", "throughput", "time_to_accuracy")
    assert pngs == [f"s{i}-{m}.png" for i in (1, 2) for m in metrics]
    html = (report / "history.html").read_text()
    assert html.count('src="data:image/png;base64,') == 10 and "http" not in html.replace("http-equiv", "")
    md = (report / "history.md").read_text()
    assert all(f"({name})" in md for name in pngs)
    assert "## Steps" in md and "NCCL 2.27.3 → 2.28.1" in md
    assert "What changed between nights" in md
    # without the plots: the same findings and gate, the text without its images, no PNG
    code, said = cli("history", root, tmp_path / "nights2", "-o", report, "--no-plots")
    assert code == 0 and "and 0 plot(s)" in said
    assert not list(report.glob("*.png")) and "data:image/png" not in (report / "history.html").read_text()
    assert "## Steps" in (report / "history.md").read_text() and ".png)" not in (report / "history.md").read_text()


def test_unreadable_lines_are_counted_once_per_file(tmp_path):
    root = write_history(tmp_path / "nights", nights=6)
    bad = root / "night-03" / "results.jsonl"
    with bad.open("ab") as handle:
        handle.write(b"\x00\x01garbage\n{torn\nnot json\n")
    done = larsbench("history", root, "-o", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if " unreadable line" in line]
    assert lines == [f"larsbench: 3 unreadable lines skipped in {bad}"]  # on stderr, as every reader says it


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.jsonl", "no such results file or folder"),
        (lambda d: write(d / "empty.jsonl", []), "holds no result records"),
        (lambda d: (d / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00") and d / "binary.jsonl",
         "holds no result records (3 unreadable lines)"),
        (lambda d: (d / "folder").mkdir() or d / "folder", "no results.jsonl in this folder or below it"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_status_2(tmp_path, make, message):
    good = write_history(tmp_path / "nights", nights=3)
    done = larsbench("history", good, make(tmp_path), "-o", tmp_path / "report")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("larsbench: error: RESULTS: ")
    assert message in done.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    "option, message",
    [(["--metric", "speed"], "--metric: 'speed' is not a metric; choose from throughput, "),
     (["--min-nights", "1"], "--min-nights: must be at least 2"),
     (["--night-ends", "24"], "--night-ends: must be an hour from 0 to 23"),
     (["--tolerance", "throughput=fast"], "--tolerance: 'throughput=fast': amount must be")],
)  # fmt: skip
def test_bad_options_are_one_line_and_status_2(tmp_path, option, message):
    root = write_history(tmp_path / "nights", nights=3)
    done = larsbench("history", root, "-o", tmp_path / "report", *option)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert message in done.stderr


def test_records_without_a_timestamp_are_left_out_and_said_so(tmp_path, cli):
    undated = nightly_record(0, 100.0)
    undated["provenance"]["timestamp_utc"] = None
    path = write(tmp_path / "r.jsonl", [undated, nightly_record(1, 100.0)])
    code, out = cli("history", "--no-plots", path, "-o", tmp_path / "report")
    assert code == 0 and "1 record(s) without a timestamp left out" in out
    only_undated = write(tmp_path / "u.jsonl", [undated])
    assert cli("history", "--no-plots", only_undated, "-o", tmp_path / "r2")[0] == 2


def test_help_lists_every_metric():
    from larsbench.reports.cli import HISTORY_METRICS
    from larsbench.reports.history import METRICS

    assert HISTORY_METRICS.split(", ") == list(METRICS)
    assert night_stamp(0) == "2026-01-01T02:00:00+00:00"
