import json
import random
import re
import statistics

import pytest
from report_records import record, write

from larsbench.core.stats import repeats_for

from larsbench.reports.compare import METRICS, Sample, Tolerance, compare, parse_tolerances
from larsbench.core.errors import ConfigError


def pair(tmp_path, baseline, current):
    return write(tmp_path / "base.jsonl", baseline), write(tmp_path / "cur.jsonl", current)


def ranks(setting: str) -> str:
    """``N=4`` from a setting's label (``...-gb32=4x8x1-...``)."""
    return "N=" + re.search(r"-gb\d+=(\d+)x", setting).group(1)


def verdicts(result):
    return {(ranks(r.setting), r.metric): r.verdict for r in result.rows}  # (N=…, metric) → verdict


def test_results_against_themselves_pass(tmp_path, cli):
    runs = [record(world_size=n, throughput_images_per_sec=90.0 * n) for n in (1, 2)]
    base, _ = pair(tmp_path, runs, [])
    code, out = cli("compare", base, base)
    assert code == 0, out
    assert "0 regression(s), 0 inconclusive in 8 comparison(s)" in out


def test_a_20_percent_throughput_drop_is_a_regression(tmp_path, cli):
    base, cur = pair(tmp_path, [record()], [record(throughput_images_per_sec=80.0)])
    code, out = cli("compare", base, cur)
    assert code == 1
    assert "throughput fell by 20.0% (100 images/s → 80 images/s), beyond the throughput=5% tolerance" in out
    assert "no uncertainty: one run on a side, n=1 vs 1: judged on the observed change alone" in out


def test_a_3_percent_drop_is_inside_the_default_5_percent_tolerance(tmp_path, cli):
    base, cur = pair(tmp_path, [record()], [record(throughput_images_per_sec=97.0)])
    assert cli("compare", base, cur)[0] == 0
    assert cli("compare", base, cur, "--tolerance", "throughput=2%")[0] == 1
    assert cli("compare", base, cur, "--tolerance", "throughput:2%")[0] == 1  # asv/STYLE spelling


def test_a_large_drop_the_repeats_cannot_resolve_is_inconclusive_never_fine(tmp_path, cli, capsys):
    """Baseline [100, 120], current [80, 95]: a 20% drop that Welch's test cannot tell from the
    noise of two repeats (one-sided p = 0.11). Not a regression, and not passed either: inconclusive, with
    the repeats per side that would settle it."""
    base = [record(seed=0, throughput_images_per_sec=100.0), record(seed=1, throughput_images_per_sec=120.0)]
    cur = [record(seed=0, throughput_images_per_sec=80.0), record(seed=1, throughput_images_per_sec=95.0)]
    result = compare(base, cur)
    (row,) = [r for r in result.rows if r.metric == "throughput"]
    needed = repeats_for(87.5 - 110.0, statistics.stdev([100, 120]), statistics.stdev([80, 95]))
    assert (row.verdict, row.repeats_needed, needed) == ("inconclusive", needed, 6)
    assert row.p_value == pytest.approx(0.2234 / 2, abs=1e-3) and result.exit_code == 3
    code, out = cli("compare", *pair(tmp_path, base, cur))
    assert code == 3
    assert ("inconclusive: ddp-tiny_cnn-32px-synthetic-gb8=1x8x1-lars+warmup0.5" in out and "throughput fell by 20.5% (110 "
            "images/s → 87.5 images/s), beyond the throughput=5% tolerance, but the repeats cannot tell it from noise (Welch "
            "one-sided p=0.11, n=2 vs 2); about 6 repeats per side would settle it (80% power)" in out)  # fmt: skip
    assert "inconclusive (≈6 repeats/side)" in out and "0 regression(s), 1 inconclusive" in out
    code, _ = cli("compare", *pair(tmp_path, base, cur), "--json")
    data = json.loads(capsys.readouterr().out)
    (row,) = [c for c in data["comparisons"] if c["metric"] == "throughput"]
    assert (data["result"], data["exit_code"], row["verdict"], row["repeats_needed_per_side"]) == ("inconclusive", 3, "inconclusive", 6)
    # the same drop once per side has no noise estimate: the observed change decides, and says so
    single = compare([record(throughput_images_per_sec=110.0)], [record(throughput_images_per_sec=87.5)])
    (row,) = [r for r in single.rows if r.metric == "throughput"]
    assert row.verdict == "regression" and row.basis.startswith("no uncertainty: one run on a side")
    # a drop far beyond the repeats' spread is a supported regression
    tight = [record(seed=s, throughput_images_per_sec=t) for s, t in [(0, 100.0), (1, 102.0)]]
    apart = compare(tight, [record(seed=s, throughput_images_per_sec=t) for s, t in [(0, 80.0), (1, 82.0)]])
    assert verdicts(apart)[("N=1", "throughput")] == "regression" and apart.exit_code == 1


def test_the_test_is_one_sided_at_4_percent():
    """An 11% drop with two-sided p = 0.059 (one-sided 0.029) is a regression: the gate asks
    only whether it got worse. A 9% drop at one-sided p = 0.055 stays inconclusive, and an 11%
    gain at the same p is an improvement."""
    base = [100.0, 110.0, 90.0, 105.0, 95.0]

    def runs(values):
        return [record(seed=i, throughput_images_per_sec=v, window_steps=8) for i, v in enumerate(values)]

    def row(shift):
        (found,) = [r for r in compare(runs(base), runs([v + shift for v in reversed(base)])).rows if r.metric == "throughput"]
        return found

    drop = row(-11.0)
    assert (drop.verdict, round(drop.p_value, 4)) == ("regression", 0.0295) and "one-sided p=0.029" in drop.basis
    assert (row(-9.0).verdict, round(row(-9.0).p_value, 3)) == ("inconclusive", 0.055)
    assert row(+11.0).verdict == "improved"


def test_a_regression_wins_over_an_inconclusive_metric_and_a_small_change_is_ok():
    base = [record(seed=0, throughput_images_per_sec=100.0, final_top1=0.50), record(seed=1, throughput_images_per_sec=120.0, final_top1=0.52)]
    cur = [record(seed=0, throughput_images_per_sec=80.0, final_top1=0.40), record(seed=1, throughput_images_per_sec=95.0, final_top1=0.41)]
    result = compare(base, cur)
    assert verdicts(result)[("N=1", "throughput")] == "inconclusive"
    assert verdicts(result)[("N=1", "final_top1")] == "regression" and result.exit_code == 1
    within = compare(base, [record(seed=s, throughput_images_per_sec=t, final_top1=0.51) for s, t in [(0, 104.0), (1, 112.0)]])
    assert verdicts(within)[("N=1", "throughput")] == "ok" and within.exit_code == 0  # −2.7%: inside the 5%


def test_repeats_without_spread_give_no_noise_estimate():
    """Two identical repeats per side (one seed, a deterministic metric) are no evidence of zero
    noise: no test is made, and the observed change decides with "no uncertainty"."""
    same = compare([record(seed=0, final_top1=0.50), record(seed=0, final_top1=0.50)],
                   [record(seed=0, final_top1=0.45), record(seed=0, final_top1=0.45)])  # fmt: skip
    (row,) = [r for r in same.rows if r.metric == "final_top1"]
    assert row.verdict == "regression" and row.p_value is None and "the repeats show no spread" in row.basis


def repeats(mean: float, cv: float, seed: int, n: int = 5) -> list[dict]:
    """``n`` runs of normal throughput noise; 8 measured steps each (too few for the builder's
    stability check, which these tests do not need and which would cost most of their time)."""
    rng = random.Random(seed)
    return [record(seed=i, throughput_images_per_sec=mean * (1 + rng.gauss(0, cv)), window_steps=8) for i in range(n)]


def test_a_real_10_percent_drop_in_2_percent_noise_is_caught_with_5_repeats():
    caught = [verdicts(compare(repeats(100.0, 0.02, s), repeats(90.0, 0.02, s + 1000)))[("N=1", "throughput")] for s in range(20)]
    assert caught == ["regression"] * 20


def test_noise_alone_is_not_a_regression():
    """Same distribution on both sides, 2% CV, 5 repeats: over 200 pairs the gate fires on none
    (a false alarm needs a significant difference *and* one beyond the 5% tolerance), and calls
    none inconclusive (a 5% difference of means is 4 standard errors away at this noise)."""
    codes = [compare(repeats(100.0, 0.02, s), repeats(100.0, 0.02, s + 1000)).exit_code for s in range(200)]
    assert codes.count(1) == 0 and codes.count(3) == 0


def test_unstable_runs_are_left_out_of_timed_metrics_and_listed(tmp_path, cli, capsys):
    """A disturbed run (its step times shifted mid-window) is not averaged with clean ones:
    left out of throughput and time to accuracy on either side and named; a side of only
    disturbed runs is inconclusive, and so is a change that is beyond the tolerance only with the
    disturbed runs counted; --include-unstable judges them all."""
    base = [record(seed=s, throughput_images_per_sec=t) for s, t in [(0, 100.0), (1, 102.0), (2, 98.0)]]
    mild = record(seed=3, throughput_images_per_sec=97.0, final_top1=0.53, disturbed=True)
    result = compare(base, [record(seed=0, throughput_images_per_sec=99.0), record(seed=1, throughput_images_per_sec=101.0), mild])
    (row,) = [r for r in result.rows if r.metric == "throughput"]
    assert (row.verdict, row.current.values, row.current.left_out) == ("ok", (99.0, 101.0), (mild["run_id"],))  # 99 with it too
    slow = record(seed=3, throughput_images_per_sec=50.0, final_top1=0.53, disturbed=True)
    cur = [record(seed=0, throughput_images_per_sec=99.0), record(seed=1, throughput_images_per_sec=101.0), slow]
    assert slow["unstable"] and slow["unstable_reasons"]
    result = compare(base, cur)
    (row,) = [r for r in result.rows if r.metric == "throughput"]
    # 100 without the disturbed run, 83.3 with it: the verdict hangs on that run
    assert (row.verdict, row.basis, row.current.values, row.current.left_out) == (
        "inconclusive", "hangs on disturbed runs", (99.0, 101.0), (slow["run_id"],))  # fmt: skip
    assert "throughput fell by 16.7% (100 images/s → 83.33 images/s), beyond the throughput=5% tolerance when the disturbed" in row.message
    top1 = [r for r in result.rows if r.metric == "final_top1"][0]
    assert top1.current.n == 3  # accuracy is not a timing: the disturbed run counts
    assert [(x.side, x.run_id) for x in result.left_out] == [("current", slow["run_id"])]
    code, out = cli("compare", *pair(tmp_path, base, cur))
    assert code == 3 and f"left out (unstable, current): ddp-tiny_cnn-32px-synthetic-gb8=1x8x1-lars+warmup0.5" in out
    assert f"run {slow['run_id']}: step time shifted" in out and "100 (n=2, 99–101) (+1 unstable left out)" in out
    code, out = cli("compare", *pair(tmp_path, base, cur), "--include-unstable")
    assert code == 3 and "unstable runs included" in out  # 83.3 ± 29: far below, and far from settled
    only = compare(base, [slow])
    (row,) = [r for r in only.rows if r.metric == "throughput"]
    assert row.verdict == "inconclusive" and only.exit_code == 3
    assert "every current run of this setting was disturbed (unstable) and is left out" in row.message
    code, _ = cli("compare", *pair(tmp_path, base, [slow]), "--json")
    data = json.loads(capsys.readouterr().out)
    (row,) = [c for c in data["comparisons"] if c["metric"] == "throughput"]
    assert code == 3 and row["current"]["n"] == 0 and row["current"]["left_out_unstable"] == [slow["run_id"]]
    # Repeats thinned to one clean run are not a single run judged without uncertainty
    thinned = compare(base, [record(seed=0, throughput_images_per_sec=90.0), slow,
                             record(seed=4, throughput_images_per_sec=50.0, disturbed=True)])  # fmt: skip
    (row,) = [r for r in thinned.rows if r.metric == "throughput"]
    assert (row.verdict, row.basis) == ("inconclusive", "one clean run left")
    assert "the current side keeps one clean run once its disturbed (unstable) runs are left out" in row.message


def test_direction_awareness():
    base = [record()]
    faster = compare(base, [record(throughput_images_per_sec=120.0)])
    assert verdicts(faster)[("N=1", "throughput")] == "improved" and faster.exit_code == 0
    slower_to_target = compare(base, [record(time_to_accuracy_sec=12.0)])
    assert verdicts(slower_to_target)[("N=1", "time_to_accuracy")] == "regression"
    sooner = compare(base, [record(time_to_accuracy_sec=8.0)])
    assert verdicts(sooner)[("N=1", "time_to_accuracy")] == "improved" and sooner.exit_code == 0
    assert compare(base, [record(final_top1=0.48)]).exit_code == 1  # −2 pp against the 1 pp default
    assert compare(base, [record(final_top1=0.495)]).exit_code == 0  # −0.5 pp
    missed = compare(base, [record(time_to_accuracy_sec=None, epochs_to_accuracy=None)])
    assert verdicts(missed)[("N=1", "time_to_accuracy")] == "regression"  # the target was not reached
    failed = compare(base, [record(status="failed", error="boom")])
    assert verdicts(failed)[("N=1", "status")] == "regression"


def test_unmatched_runs_are_listed_not_compared(tmp_path, cli):
    base = [record(world_size=1), record(world_size=2)]
    cur = [record(world_size=1), record(world_size=4, throughput_images_per_sec=1.0)]
    result = compare(base, cur)
    assert {ranks(r.setting) for r in result.rows} == {"N=1"}
    assert len(result.current_only) == 1 and ranks(result.current_only[0]) == "N=4"
    assert len(result.baseline_only) == 1 and ranks(result.baseline_only[0]) == "N=2"
    code, out = cli("compare", *pair(tmp_path, base, cur))
    assert code == 0
    assert "unmatched (current only, not compared): ddp-tiny_cnn-32px-synthetic-gb32=4x8x1-lars+warmup0.5" in out
    assert "unmatched (baseline only, not compared): ddp-tiny_cnn-32px-synthetic-gb16=2x8x1-lars+warmup0.5" in out


def test_other_hardware_does_not_match_and_nothing_matched_is_bad_input(tmp_path, cli):
    result = compare([record()], [record(cpu_model="Other CPU", throughput_images_per_sec=10.0)])
    assert result.rows == [] and "differs in: hardware" in result.current_only[0]
    code, out = cli("compare", *pair(tmp_path, [record()], [record(gpu_model="H100", device="cuda")]))
    assert code == 2 and "no run in" in out


def test_tolerance_objects_parse_and_check():
    t = Tolerance.parse("throughput=5%")
    assert t.check(Sample((100.0,)), Sample((96.0,))) is None
    assert "beyond the throughput=5% tolerance" in t.check(Sample((100.0,)), Sample((90.0,)))
    assert t.verdict(Sample((100.0, 101.0)), Sample((90.0, 91.0))).verdict == "regression"
    assert str(Tolerance.parse("final_top1=0.5pp")) == "final_top1=0.5pp"
    assert Tolerance.parse("time_to_accuracy_sec=15").amount == 15  # record key as alias, bare number = %
    assert {name: str(t) for name, t in parse_tolerances([]).items()} == {n: f"{n}={m.default}" for n, m in METRICS.items()}


@pytest.mark.parametrize("text", ["throughput", "speed=5%", "throughput=abc", "throughput=-5%", "throughput=5pp", "=5%"])
def test_bad_tolerance_strings_are_config_errors(text, tmp_path, cli):
    with pytest.raises(ConfigError) as info:
        Tolerance.parse(text)
    assert info.value.key == "--tolerance" and "\n" not in str(info.value)
    base = write(tmp_path / "b.jsonl", [record()])
    code, out = cli("compare", base, base, "--tolerance", text)
    assert code == 2 and out.startswith("larsbench: error: --tolerance: ")


def test_json_output(tmp_path, cli, capsys):
    code, _ = cli("compare", *pair(tmp_path, [record()], [record(throughput_images_per_sec=80.0)]), "--json")
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["exit_code"] == 1 and data["result"] == "regression" and data["regressions"] == 1
    (row,) = [c for c in data["comparisons"] if c["metric"] == "throughput"]
    assert row["baseline"]["mean"] == 100.0 and row["current"]["mean"] == 80.0 and row["verdict"] == "regression"
    assert data["tolerances"]["throughput"] == "throughput=5%"


def test_missing_or_empty_inputs_exit_2(tmp_path, cli):
    base = write(tmp_path / "b.jsonl", [record()])
    code, out = cli("compare", tmp_path / "nope.jsonl", base)
    assert code == 2 and "BASELINE: " in out
    (tmp_path / "empty.jsonl").write_text("")
    code, out = cli("compare", base, tmp_path / "empty.jsonl")
    assert code == 2 and "CURRENT: " in out and "no result records" in out


def test_baseline_save_round_trip(tmp_path, cli):
    runs = [record(world_size=1), record(world_size=2), record(world_size=4, status="failed", error="x")]
    results = write(tmp_path / "run" / "results.jsonl", runs)
    target = tmp_path / "baselines" / "cpu.jsonl"
    code, out = cli("baseline", "save", tmp_path / "run", "-o", target)
    assert code == 0 and "saved 2 ok run(s)" in out and "1 not ok or not selected" in out
    saved = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["run_id"] for r in saved] == [runs[0]["run_id"], runs[1]["run_id"]]
    assert saved[0] == runs[0]  # stored verbatim
    code, out = cli("compare", target, results)  # N=1 and N=2 pass; the failed N=4 run has no baseline
    assert code == 0 and "unmatched (current only, not compared): ddp-tiny_cnn-32px-synthetic-gb32=4x8x1-lars+warmup0.5" in out
    code, _ = cli("baseline", "save", results, "-o", target, "--label", "*-gb16=2x8x1-*")  # replaces the file
    assert code == 0 and len(target.read_text().splitlines()) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["cpu.jsonl"]  # no temp file left behind
    code, out = cli("baseline", "save", results, "-o", target, "--experiment", "nope")
    assert code == 2 and "nothing to save" in out


def test_help_documents_the_default_tolerances(cli, capsys):
    with pytest.raises(SystemExit):
        cli("compare", "--help")
    text = capsys.readouterr().out
    assert "throughput          higher is better   5%" in text and "final_top1          higher is better   1pp" in text
    assert "2 bad input" in text


@pytest.mark.parametrize("change", [{"precision": "bf16"}, {"channels_last": True}, {"compile": True}])
def test_an_fp32_baseline_never_judges_a_bf16_run(tmp_path, cli, change):
    """precision, channels_last and compile define a setting: a bf16 run against an fp32
    baseline is unmatched, never a 'faster' or 'slower' verdict."""
    base = [record()]
    current = [record(throughput_images_per_sec=300.0, **change)]
    result = compare(base, current)
    assert result.rows == [] and len(result.current_only) == 1 and len(result.baseline_only) == 1
    (name,) = change
    assert name in result.current_only[0]  # the label says what differs, and the closest-match note too
    code, out = cli("compare", *pair(tmp_path, base, current))
    assert code == 2 and "no run in" in out and "matches a run in" in out
