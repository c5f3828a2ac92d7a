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
