"""Rendered sbatch scripts: golden files for 1, 2 (each backend), 8 and 64 nodes, and the
properties every script has (sorted quoted header, one srun line, preemption handling).

Regenerate the golden files after an intended change with:
    LARSBENCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/slurm/test_script.py
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path

import pytest

from larsbench.slurm.options import merge
from larsbench.slurm.script import SBATCH_OPTIONS, join_words, ShellVar, render_script
from larsbench.slurm.sweep import plan
from larsbench.suite.config import resolve_experiment

GOLDEN = Path(__file__).parent / "golden"
REGEN = "LARSBENCH_REGEN_GOLDEN"
OUTPUT = "/scratch/alice/lars-scaling"
WORKDIR = "/home/alice/larsbench"
PYTHON = "/home/alice/larsbench/.venv/bin/python"
GPU_NODE = {"partition": "gpu", "account": "proj42", "time": "02:00:00", "ntasks_per_node": 4,
            "gpus_per_node": 4, "cpus_per_task": 8, "mem": "256G", "python": PYTHON}  # fmt: skip
BASE = {"model": "resnet50", "dataset": "synthetic", "image_size": 224, "num_classes": 1000,
        "micro_batch_size": 32, "steps": 100, "device": "cuda", "synthetic_samples": 1_000_000}  # fmt: skip

CASES = {
    # one rank on one node: the smallest script, no job array
    "1-node": ({"name": "smoke", "defaults": {**BASE, "device": "cpu", "world_size": 1}},
               {"time": 30, "python": PYTHON}),
    # 2 nodes × 4 GPUs, one script per backend
    "2-node-ddp": ({"name": "two-nodes", "defaults": {**BASE, "backend": "ddp", "world_size": 8}}, GPU_NODE),
    "2-node-deepspeed": ({"name": "two-nodes", "defaults": {**BASE, "backend": "deepspeed", "world_size": 8}}, GPU_NODE),
    "2-node-horovod": ({"name": "two-nodes", "defaults": {**BASE, "backend": "horovod", "world_size": 8}}, GPU_NODE),
    # a sweep on 8 nodes: backends × optimizers × batch sizes, one throttled job array
    "8-node-sweep": (
        {"name": "lars-vs-sgd", "defaults": {**BASE, "world_size": 32},
         "sweep": {"backend": ["ddp", "deepspeed", "horovod"], "optimizer": ["lars", "sgd"], "micro_batch_size": [32, 64]}},
        {**GPU_NODE, "qos": "normal", "constraint": "a100&ib", "array_throttle": 4, "signal_seconds": 600,
         "max_requeues": 3, "extra_sbatch": ["--exclusive", "#SBATCH --mail-type=FAIL"],
         "setup": ["module load cuda/12.4 nccl", "source /home/alice/larsbench/.venv/bin/activate"]},
    ),
    # 64 nodes × 8 GPUs = 512 ranks
    "64-node": ({"name": "imagenet-32k", "defaults": {**BASE, "world_size": 512, "micro_batch_size": 64}},
                {**GPU_NODE, "ntasks_per_node": 8, "gpus_per_node": "h100:8", "time": "1-00:00:00"}),
}  # fmt: skip


def render_case(name: str):
    doc, options = CASES[name]
    experiment = resolve_experiment(doc, {}, f"{name}.yaml")
    (script,) = plan(experiment, merge(options, {}), OUTPUT, WORKDIR)
    return script


@pytest.mark.parametrize("name", sorted(CASES))
def test_script_matches_golden_file(name):
    text = render_case(name).text
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get(REGEN):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; create it with {REGEN}=1 .venv/bin/python -m pytest {__file__}"
    expected = golden.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(golden), "rendered"))
        pytest.fail(f"the rendered script differs from {golden}:\n{diff}\nIf the change is intended, regenerate "
                    f"the golden files: {REGEN}=1 .venv/bin/python -m pytest tests/slurm/test_script.py", pytrace=False)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "nodes", "per_node", "runs"),
    [("1-node", 1, 1, 1), ("2-node-ddp", 2, 4, 1), ("8-node-sweep", 8, 4, 12), ("64-node", 64, 8, 1)],
)
def test_allocation_lines(name, nodes, per_node, runs):
    script = render_case(name)
    lines = script.text.splitlines()
    assert f"#SBATCH --nodes={nodes}" in lines
    assert f"#SBATCH --ntasks-per-node={per_node}" in lines
    (srun,) = [line for line in lines if line.startswith("srun ")]
    assert f" --nodes={nodes} --ntasks={nodes * per_node} --ntasks-per-node={per_node} " in srun
    assert ' -m larsbench.suite.worker --spec-json "$spec" --run-id "$run_id" ' in srun and srun.endswith(" &")
    assert len(script.runs) == runs
    assert ("#SBATCH --array=0-11%4" in lines) == (runs > 1)
    assert all(spec.world_size == nodes * per_node for spec in script.runs)


def test_header_is_sorted_quoted_and_before_any_command():
    text = render_case("8-node-sweep").text
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#SBATCH")]
    # the derived lines are sorted; the extra lines follow them as given
    assert header[:-2] == sorted(header[:-2])
    assert header[-2:] == ["#SBATCH --exclusive", "#SBATCH --mail-type=FAIL"]
    assert "#SBATCH --constraint='a100&ib'" in lines  # a value with a shell character is quoted
    first_command = next(i for i, line in enumerate(lines[1:], 1) if line and not line.startswith("#"))
    assert first_command > max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    for flag in ("--requeue", "--signal=B:USR1@600", "--open-mode=append", f"--chdir={WORKDIR}"):
        assert f"#SBATCH {flag}" in lines


def test_every_sbatch_option_is_a_keyword_of_the_renderer():
    import inspect

    params = inspect.signature(render_script).parameters
    assert set(SBATCH_OPTIONS) <= set(params)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())


def test_join_words_quotes_literals_and_expands_variables():
    words = ["srun", "a b", "$(touch x)", ShellVar("spec")]
    assert join_words(words) == "srun 'a b' '$(touch x)' \"$spec\""
    assert join_words(["a b", "c"]) == "'a b' c"


@pytest.mark.parametrize("name", sorted(CASES))
def test_scripts_are_valid_bash(name, tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text(render_case(name).text)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_setup_lines_are_the_one_unquoted_part():
    text = render_case("8-node-sweep").text
    assert "\nmodule load cuda/12.4 nccl\nsource /home/alice/larsbench/.venv/bin/activate\n" in text
    assert re.search(r"# Environment setup .*run as written", text)
