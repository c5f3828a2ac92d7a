"""larsbench slurm --repeats auto without a cluster: the scripts, runs files and plan it writes, and
what the dependent job decides from the series' records."""

from __future__ import annotations

import json

from larsbench.slurm.repeats import next_round
from tests.conftest import larsbench
from tests.records import make_record, write_records

FLAGS = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16", "--micro-batch", "4", "--steps", "5",
         "--device", "cpu", "--job-name", "auto"]  # fmt: skip


def test_the_grid_runs_first_repeats_and_a_repeats_job_follows(tmp_path):
    out = tmp_path / "out"
    done = larsbench("slurm", *FLAGS, "--world-size", "1", "--repeats", "auto", "--repeats-target", "3%", "--repeats-max", "4", "--output", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "auto-repeats.sbatch  (submits each setting's next repeat until its throughput is known within ±3% or 4 runs" in done.stdout
    (entry,) = [json.loads(line) for line in (out / "slurm" / "auto-1n1t.runs.jsonl").read_text().splitlines()]
    assert entry["spec"]["repeat"] == 0 and entry["series"]["target"] == 0.03 and entry["series"]["max_runs"] == 4
    script = (out / "slurm" / "auto-1n1t.sbatch").read_text()
    assert 'series=$("$python" -m larsbench.slurm.job series --runs "$runs" --index "$index")' in script
    assert '--series-json "$series" &' in script
    plan = json.loads((out / "slurm" / "auto-repeats.json").read_text())
    assert plan["round"] == 1 and [s["series"] for s in plan["series"]] == [entry["series"]["series"]]
    assert plan["series"][0]["spec"] == entry["spec"]
    repeats = (out / "slurm" / "auto-repeats.sbatch").read_text()
    assert f"-m larsbench.slurm.repeats {out / 'slurm' / 'auto-repeats.json'}" in repeats and "#SBATCH --ntasks=1" in repeats
    spec = larsbench("slurm", *FLAGS, "--world-size", "1", "--output", tmp_path / "fixed")
    assert "--series-json" not in (tmp_path / "fixed" / "slurm" / "auto-1n1t.sbatch").read_text()  # only adaptive grids carry it
    assert spec.returncode == 0


def test_the_repeats_job_submits_nothing_once_every_series_has_stopped(tmp_path):
    out = tmp_path / "out"
    assert larsbench("slurm", *FLAGS, "--repeats", "auto", "--output", out).returncode == 0
    plan_file = out / "slurm" / "auto-repeats.json"
    series = json.loads(plan_file.read_text())["series"][0]
    decision = {"series": series["series"], "decision": "stop", "reason": "target reached: 95% CI ±1.5% of the mean over 3 clean run(s)",
                "runs": 3, "clean_runs": 3, "mean": 100.0, "half_width": 0.015, "target": 0.02, "max_runs": 10}  # fmt: skip
    write_records(out / "results.jsonl", [make_record(throughput=100.0, repeat=r, repeats_decision={**decision, "runs": r + 1}) for r in range(3)])
    said = []
    assert next_round(plan_file, said.append) == 0
    assert said[0].endswith("repeat 3: stop: target reached: 95% CI ±1.5% of the mean over 3 clean run(s)")
    assert said[-1].startswith("every series has stopped")
    assert json.loads(plan_file.read_text())["round"] == 1  # nothing submitted, nothing advanced


def test_adaptive_repeats_cannot_feed_a_nightly_history(tmp_path):
    done = larsbench("slurm", *FLAGS, "--repeats", "auto", "--nightly", tmp_path / "history")
    assert done.returncode == 2 and "--repeats: auto runs repeats after the grid" in done.stderr
