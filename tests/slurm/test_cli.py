"""The `slurm` sub-command, its handler called in-process."""

from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from larsbench.slurm import cli, submit
from larsbench.slurm.job import read_runs
from larsbench.core.errors import ConfigError
from tests.conftest import larsbench


def parse(*argv):
    parser = argparse.ArgumentParser(prog="larsbench")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["slurm", *argv])


def run(*argv):
    out = io.StringIO()
    args = parse(*argv)
    status = args.handler(args, Console(file=out, width=300))
    return status, out.getvalue()


def test_writes_scripts_and_prints_their_paths(tmp_path):
    status, out = run("--model", "tiny_cnn", "--world-size", "2", "--steps", "3", "--partition", "debug",
                      "--cpus-per-task", "1", "--output", str(tmp_path))  # fmt: skip
    assert status == 0
    script = tmp_path / "slurm" / "cli-1n2t.sbatch"
    assert out.splitlines()[0].startswith(f"{script}  (1 run, 1 node(s) x 2 rank(s))")
    text = script.read_text()
    assert "#SBATCH --partition=debug" in text and "#SBATCH --cpus-per-task=1" in text
    (entry,) = read_runs(tmp_path / "slurm" / "cli-1n2t.runs.jsonl")
    assert entry["spec"]["steps"] == 3 and entry["spec"]["model"] == "tiny_cnn"


def test_wait_submits_and_returns_the_combined_status(tmp_path, monkeypatch):
    submitted = []
    monkeypatch.setattr(submit, "sbatch", lambda path: submitted.append(path) or str(40 + len(submitted)))
    monkeypatch.setattr(submit, "wait", lambda ids, poll, **how: [submit.Task("41", "COMPLETED"), submit.Task("42", "FAILED")])
    monkeypatch.setattr(submit, "require", lambda *commands: None)  # no Slurm needed: sbatch and wait are stand-ins
    status, out = run("--model", "tiny_cnn", "--world-size", "2", "--optimizer", "sgd", "--output", str(tmp_path), "--wait")
    assert status == 1 and len(submitted) == 1
    assert "submitted cli-1n2t.sbatch: job 41" in out and "job 42: FAILED" in out


def test_bad_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ntasks_per_node"):
        run("--model", "tiny_cnn", "--world-size", "6", "--ntasks-per-node", "4", "--output", str(tmp_path))


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--nodes", "3", "--world-size", "4"], "larsbench: error: nodes: run ddp-tiny_cnn-32px-synthetic-gb128=4x32x1-lars: 4 ranks do not divide evenly over 3 nodes"),
        (["--time", "soon"], "larsbench: error: --time: 'soon' is not a Slurm time limit; use minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS"),
        (["--micro-batch", "0"], "larsbench: error: --micro-batch: Input should be greater than 0 (got 0)"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, args, line):
    done = larsbench("slurm", "--model", "tiny_cnn", "--output", str(tmp_path), *args)
    assert done.returncode == 2
    assert done.stderr.strip() == line
    assert not (tmp_path / "slurm").exists()
