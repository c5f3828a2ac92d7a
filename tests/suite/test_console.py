"""What the launcher prints when a run ends: a disturbed or straggling run says so beside its
figure, on the console, not only in the record."""

from rich.console import Console

from larsbench.suite.launch import _say_done


def said(record: dict) -> str:
    console = Console(record=True, width=200, color_system=None)
    _say_done(console, record, "log: x.log")
    return console.export_text()


def test_a_clean_run_is_one_line():
    text = said({"status": "ok", "throughput_images_per_sec": 412.5, "final_top1": 0.8, "unstable": False, "straggler": None})
    assert text.strip() == "ok, 412.5 images/s, top-1 0.800 (log: x.log)"


def test_an_unstable_run_and_its_straggler_say_so():
    text = said({
        "status": "ok", "throughput_images_per_sec": 412.5, "unstable": True,
        "unstable_reasons": ["step times vary: robust CV 36% (> 10%)", "step time shifted at step 40"],
        "straggler": {"rank": 1, "host": "node2", "slower_by": 0.22},
    })  # fmt: skip
    assert "unstable: step times vary: robust CV 36% (> 10%); step time shifted at step 40" in text
    assert "straggler: rank 1 on node2, 22% slower on its own" in text


def test_verbose_shows_where_the_time_went_around_the_clock():
    from larsbench.suite.launch import _say_phases
    from tests.records import make_record

    record = make_record(throughput=400.0, setup_sec=3.5, phases_sec={"launcher": 1.25, "imports": 1.5, "setup_other": 0.75, "record": 0.2})
    console = Console(record=True, width=200, color_system=None)
    started = record["timestamp_end"] - 3.5 - record["wall_time_sec"] - 0.2
    _say_phases(console, record, started, record["timestamp_end"] + 0.5)
    lines = console.export_text().strip().splitlines()
    assert lines[0].strip() == "setup 3.50 s (launcher 1.25, imports 1.50, setup other 0.75); record 0.20 s"
    assert lines[1].strip() == f"exit 0.50 s after the record; {4.2 + record['wall_time_sec']:.1f} s in all, 4.2 s of it outside the run's clock"
