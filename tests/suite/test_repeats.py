"""Repeats: each repeat's seed, and the adaptive series' decisions (no processes started)."""

from __future__ import annotations

import numpy as np
import pytest

from larsbench.core.errors import ConfigError
from larsbench.suite.config import load_experiment, resolve_experiment
from larsbench.suite.repeats import AutoRepeats, decide, repeat_seed
from tests.reports.report_records import record

FLAGS = {"model": "tiny_cnn", "device": "cpu"}


def test_repeats_vary_the_seed_by_a_documented_derivation_unless_held():
    runs = load_experiment(None, {**FLAGS, "seed": 7}, 3).runs
    assert [r.repeat for r in runs] == [0, 1, 2]
    assert runs[0].seed == 7  # repeat 0 keeps the seed it was given: --seed reruns any record
    expected = [int(np.random.SeedSequence([7, r]).generate_state(1)[0]) & 0x7FFFFFFF for r in (1, 2)]
    assert [r.seed for r in runs[1:]] == expected == [repeat_seed(7, 1), repeat_seed(7, 2)]
    assert len({r.seed for r in runs}) == 3
    other = load_experiment(None, {**FLAGS, "seed": 8}, 3).runs  # another cell's repeats share none of them
    assert not {r.seed for r in runs} & {r.seed for r in other}
    held = load_experiment(None, {**FLAGS, "seed": 7, "hold_seed": True}, 3).runs
    assert [(r.repeat, r.seed) for r in held] == [(0, 7), (1, 7), (2, 7)]


def test_repeats_auto_resolves_to_first_repeats_and_a_rule():
    experiment = resolve_experiment({"repeats": "auto", "repeats_target": "1.5%", "repeats_max": 6, "defaults": FLAGS}, {}, "x.yaml")
    assert [r.repeat for r in experiment.runs] == [0] and experiment.auto == AutoRepeats(0.015, 6)
    flags = load_experiment(None, FLAGS, "auto")
    assert flags.auto == AutoRepeats(0.02, 10)
    assert load_experiment(None, FLAGS, "auto", "3", 4).auto == AutoRepeats(0.03, 4)
    assert load_experiment(None, FLAGS, "4").auto is None  # a number given as text on the command line


@pytest.mark.parametrize(
    "doc, flags, message",
    [
        ({"repeats": "some"}, (), "repeats: must be 'auto' or a whole number of runs per setting from 1 to 1000"),
        ({}, ("0",), "--repeats: must be 'auto' or a whole number"),
        ({"repeats": 3, "repeats_target": "2%"}, (), "repeats_target: applies to adaptive repeats only; set repeats to auto"),
        ({}, ("auto", None, 2), "--repeats-max: must be a whole number of runs from 3"),
        ({}, ("auto", "0%"), "--repeats-target: must be a percentage of the mean between 0 and 100"),
        ({"repeats": "auto", "repeats_target": "two"}, (), "repeats_target: must be a percentage"),
        ({}, (None, "2%"), "--repeats-target: applies to adaptive repeats only"),
    ],
)  # fmt: skip
def test_bad_repeats_settings_are_one_line_errors(doc, flags, message):
    with pytest.raises(ConfigError) as info:
        resolve_experiment({**doc, "defaults": FLAGS}, {}, "x.yaml", *flags)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


SERIES = {"series": "s", "target": 0.02, "max_runs": 5}


def runs(*throughputs: float, **keys) -> list[dict]:
    return [record(seed=i, repeat=i, throughput_images_per_sec=t, **keys) for i, t in enumerate(throughputs)]


def test_a_series_continues_until_the_interval_is_narrow_enough():
    first, second, third, fourth = runs(100.0, 104.0, 101.0, 102.0)
    assert decide([], first, SERIES)["decision"] == "continue"
    two = decide([first], second, SERIES)
    assert (two["decision"], two["clean_runs"], two["runs"]) == ("continue", 2, 2)
    assert "an interval may end it from 3 clean runs" in two["reason"]
    three = decide([first, second], third, SERIES)  # 101.7 ± 4.3 (t=4.30, s=2.08): ±5.1%
    assert three["decision"] == "continue" and three["half_width"] == pytest.approx(0.0508, abs=1e-3)
    four = decide([first, second, third], fourth, SERIES)  # 101.75 ± 2.75: ±2.7%
    assert four["decision"] == "continue"
    fifth = record(seed=4, repeat=4, throughput_images_per_sec=108.0)
    capped = decide([first, second, third, fourth], fifth, SERIES)
    assert capped["decision"] == "stop" and capped["reason"].startswith("cap reached: 5 runs; 95% CI ±")


def test_a_series_stops_at_the_target_and_on_a_failure_and_counts_disturbed_runs_only_towards_the_cap():
    steady = runs(100.0, 100.5, 100.2)
    done = decide(steady[:2], steady[2], SERIES)
    assert done["decision"] == "stop" and done["reason"].startswith("target reached: 95% CI ±0.6") and done["half_width"] < 0.02
    failed = decide(steady[:2], record(status="failed", error="boom", repeat=2), SERIES)
    assert failed["decision"] == "stop" and "did not finish ok (failed)" in failed["reason"]
    disturbed = record(seed=2, repeat=2, throughput_images_per_sec=100.3, disturbed=True)
    still = decide(steady[:2], disturbed, SERIES)
    assert (still["decision"], still["runs"], still["clean_runs"]) == ("continue", 3, 2)
