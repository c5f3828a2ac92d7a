import json
import random
import re

import pytest
from report_records import record, write

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
    assert "0 regression(s) in 8 comparison(s)" in out


def test_a_20_percent_throughput_drop_is_a_regression(tmp_path, cli):
    base, cur = pair(tmp_path, [record()], [record(throughput_images_per_sec=80.0)])
    code, out = cli("compare", base, cur)
    assert code == 1
    assert "throughput fell by 20.0% (100 images/s → 80 images/s), beyond the throughput=5% tolerance" in out


def test_a_3_percent_drop_is_inside_the_default_5_percent_tolerance(tmp_path, cli):
    base, cur = pair(tmp_path, [record()], [record(throughput_images_per_sec=97.0)])
    assert cli("compare", base, cur)[0] == 0
    assert cli("compare", base, cur, "--tolerance", "throughput=2%")[0] == 1
    assert cli("compare", base, cur, "--tolerance", "throughput:2%")[0] == 1  # asv/STYLE spelling


def test_a_difference_inside_the_repeats_spread_is_noise():
    base = [record(seed=0, throughput_images_per_sec=100.0), record(seed=1, throughput_images_per_sec=120.0)]
    cur = [record(seed=0, throughput_images_per_sec=95.0), record(seed=1, throughput_images_per_sec=105.0)]
    result = compare(base, cur)  # means 110 → 100: −9%, beyond 5%, but the ranges overlap
    assert verdicts(result)[("N=1", "throughput")] == "noise" and result.exit_code == 0
    single = compare([record(throughput_images_per_sec=110.0)], [record(throughput_images_per_sec=100.0)])
    assert verdicts(single)[("N=1", "throughput")] == "regression"  # no repeats: the threshold decides
    tight = [record(seed=s, throughput_images_per_sec=t) for s, t in [(0, 100.0), (1, 102.0)]]
    apart = compare(tight, [record(seed=s, throughput_images_per_sec=t) for s, t in [(0, 80.0), (1, 82.0)]])
    assert verdicts(apart)[("N=1", "throughput")] == "regression"  # far beyond the noise: a real drop


def repeats(mean: float, cv: float, seed: int, n: int = 5) -> list[dict]:
    rng = random.Random(seed)
    return [record(seed=i, throughput_images_per_sec=mean * (1 + rng.gauss(0, cv))) for i in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_a_real_10_percent_drop_in_2_percent_noise_is_caught_with_5_repeats(seed):
    result = compare(repeats(100.0, 0.02, seed), repeats(90.0, 0.02, seed + 1000))
    assert verdicts(result)[("N=1", "throughput")] == "regression" and result.exit_code == 1


def test_noise_alone_is_not_a_regression():
    """Same distribution on both sides, 2% CV, 5 repeats: over 200 pairs the gate fires on none
    (a false alarm needs a significant difference *and* one beyond the 5% tolerance)."""
    alarms = sum(compare(repeats(100.0, 0.02, s), repeats(100.0, 0.02, s + 1000)).exit_code for s in range(200))
    assert alarms == 0


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
    runs = [record(world_size=1), record(world_size=2, label="keep-me"), record(world_size=4, status="failed", error="x")]
    results = write(tmp_path / "run" / "results.jsonl", runs)
    target = tmp_path / "baselines" / "cpu.jsonl"
    code, out = cli("baseline", "save", tmp_path / "run", "-o", target)
    assert code == 0 and "saved 2 ok run(s)" in out and "1 not ok or not selected" in out
    saved = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["run_id"] for r in saved] == [runs[0]["run_id"], runs[1]["run_id"]]
    assert saved[0] == runs[0]  # stored verbatim
    code, out = cli("compare", target, results)  # N=1 and N=2 pass; the failed N=4 run has no baseline
    assert code == 0 and "unmatched (current only, not compared): ddp-tiny_cnn-32px-synthetic-gb32=4x8x1-lars+warmup0.5" in out
    code, _ = cli("baseline", "save", results, "-o", target, "--label", "keep-*")  # replaces the file
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
