"""Experiments to scripts: the `slurm:` section, one job array per allocation shape, runs files."""

from __future__ import annotations

import json
import os

import pytest

from larsbench.slurm.job import read_runs
from larsbench.slurm.options import merge
from larsbench.slurm.sweep import load, plan, safe_name, write
from larsbench.core.errors import ConfigError

EXPERIMENT = """\
name: scaling
output: {output}
defaults: {{model: tiny_cnn, dataset: synthetic, steps: 2, device: cpu, micro_batch_size: 4}}
sweep:
  backend: [ddp, horovod]
  world_size: [2, 4, 8]
  optimizer: [lars, sgd]
slurm:
  partition: cpu
  ntasks_per_node: 4
  cpus_per_task: 2
  time: "00:30:00"
  array_throttle: 2
"""


@pytest.fixture
def experiment_file(tmp_path):
    path = tmp_path / "scaling.yaml"
    path.write_text(EXPERIMENT.format(output=tmp_path / "out"))
    return path


def test_load_reads_the_slurm_section(experiment_file):
    experiment, section = load(experiment_file, {"steps": 3})
    assert section == {"partition": "cpu", "ntasks_per_node": 4, "cpus_per_task": 2, "time": "00:30:00", "array_throttle": 2}
    assert len(experiment.runs) == 12 and all(spec.steps == 3 for spec in experiment.runs)


def test_other_unknown_keys_are_still_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("defaults: {model: tiny_cnn}\nslurmm: {partition: x}\n")
    with pytest.raises(ConfigError, match="unknown key 'slurmm'"):
        load(path, {})


def test_one_job_array_per_shape(experiment_file, tmp_path):
    experiment, section = load(experiment_file, {})
    scripts = plan(experiment, merge(section, {}), tmp_path / "out", "/work")
    assert [(s.shape.tag, s.job_name, len(s.runs)) for s in scripts] == [
        ("1n2t", "scaling-1n2t", 4), ("1n4t", "scaling-1n4t", 4), ("2n4t", "scaling-2n4t", 4),
    ]  # fmt: skip
    for script in scripts:
        assert {spec.world_size for spec in script.runs} == {script.shape.nodes * script.shape.ntasks_per_node}
        assert "#SBATCH --array=0-3%2" in script.text.splitlines()
        assert script.script.name == f"scaling-{script.shape.tag}.sbatch"
        assert script.runs_file == script.script.with_name(f"scaling-{script.shape.tag}.runs.jsonl")
        assert f"--output={tmp_path}/out/slurm/logs/scaling-{script.shape.tag}-%A_%a.out" in script.text
    labels = [spec.label for script in scripts for spec in script.runs]
    assert labels == sorted(set(labels), key=labels.index) and len(labels) == 12


def test_write_puts_the_runs_file_next_to_the_script(experiment_file, tmp_path):
    experiment, section = load(experiment_file, {})
    scripts = plan(experiment, merge(section, {}), tmp_path / "out", "/work")
    write(scripts)
    for script in scripts:
        assert os.access(script.script, os.X_OK)
        runs = read_runs(script.runs_file)
        assert [r["index"] for r in runs] == list(range(len(script.runs)))
        assert [r["label"] for r in runs] == [s.label for s in script.runs]
        assert [r["spec"] for r in runs] == [s.to_dict() for s in script.runs]
        assert (script.script.parent / "logs").is_dir()


def test_single_shape_keeps_the_job_name_and_a_plain_job(tmp_path):
    experiment, _ = load(None, {"model": "tiny_cnn", "world_size": 2, "steps": 1})
    (script,) = plan(experiment, merge({"job_name": "my job"}, {}), tmp_path / "o%x", "/work")
    assert script.job_name == "my job" and "#SBATCH --job-name='my job'" in script.text
    assert script.script.name == "my_job-1n2t.sbatch"
    assert "--array" not in script.text
    # '%' in a folder name is not a Slurm filename pattern
    assert f"#SBATCH --output={tmp_path}/o%%x/slurm/logs/my_job-1n2t-%j.out" in script.text.splitlines()


@pytest.mark.parametrize(("text", "safe"), [("lars", "lars"), ("my exp/1", "my_exp_1"), ("$(rm -rf ~)", "rm_-rf"), ("...", "larsbench")])
def test_safe_name(text, safe):
    assert safe_name(text) == safe


def test_allocation_is_exported_for_provenance(tmp_path):
    experiment, _ = load(None, {"model": "tiny_cnn", "world_size": 8})
    (script,) = plan(experiment, merge({"ntasks_per_node": 4, "gpus_per_node": 4, "partition": "gpu"}, {}), tmp_path, "/w")
    line = next(line for line in script.text.splitlines() if line.startswith("export LARSBENCH_ALLOCATION="))
    value = line.split("=", 1)[1].strip("'")
    assert json.loads(value) == {"nodes": 2, "ntasks_per_node": 4, "gpus_per_node": 4, "partition": "gpu"}
