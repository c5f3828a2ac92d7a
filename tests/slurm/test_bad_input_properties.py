"""Generated bad input for ``larsbench slurm``, and a broken Slurm: random option values, outputs
that cannot be written, sbatch or squeue missing, a controller that stops answering while
``--wait`` follows the jobs. Every case ends in the whole set of scripts or in one line naming
the argument (status 2, no traceback, no output folder left behind); submitted job ids are
never lost, and a later ``--wait`` picks them up again.

sbatch and squeue are small stand-in scripts on PATH here (tests/slurm/test_reattach_integration.py
does the same against a real controller)."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from larsbench.slurm.job import read_runs
from larsbench.slurm.options import option_schema, option_types
from tests.bad_input import NAMES, OUTPUT_KINDS, can_mount, check_clean, check_refused, make_output, snapshot, tiny_disk
from tests.conftest import larsbench

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = ["--model", "tiny_cnn", "--dataset", "synthetic", "--steps", "2", "--micro-batch", "4"]
OPTION_FLAGS = {"--" + name.replace("_", "-") for name in option_types()}
OPTION_KEYS = OPTION_FLAGS | set(option_types()) | {f"slurm.{name}" for name in option_types()}
NUMBERS = st.one_of(st.integers(-3, 9), st.integers(), st.integers(-(2**70), 2**70))
TEXT = st.one_of(st.text(max_size=12).filter(lambda t: "\x00" not in t), st.sampled_from(["1:00:00", "2-12", "a100:4", "64G", "--exclusive", "--x=$(touch y)", "a\nb", ""]))


@st.composite
def option_value(draw):
    name = draw(st.sampled_from(sorted(option_types())))
    schema = option_schema(name)
    kinds = {s.get("type") for s in schema.get("anyOf", [schema])} - {"null"}
    flag = "--" + name.replace("_", "-")
    if kinds == {"integer"}:
        return name, [f"{flag}={draw(NUMBERS)}"]
    if kinds == {"array"}:
        return name, [f"{flag}={v}" for v in draw(st.lists(TEXT, min_size=1, max_size=2))]
    return name, [f"{flag}={draw(st.one_of(TEXT, NUMBERS.map(str)))}"]


def check_scripts(out: Path, setup: bool) -> None:
    """The output folder holds whole scripts: each parses as bash and has its runs file."""
    scripts = sorted((out / "slurm").glob("*.sbatch"))
    assert scripts, list(out.rglob("*"))
    for script in scripts:
        runs = script.with_name(script.name.removesuffix(".sbatch") + ".runs.jsonl")
        assert read_runs(runs), runs
        if not setup:  # setup lines are shell as written: they may be anything
            parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert parsed.returncode == 0, parsed.stderr + script.read_text()
    assert not [p for p in (out / "slurm").iterdir() if p.name.startswith(".")], "temporary files left behind"


@MANY
@given(options=st.lists(option_value(), min_size=1, max_size=3, unique_by=lambda o: o[0]), world=st.integers(1, 8), name=NAMES)
def test_slurm_option_values(tmp_path, options, world, name):
    out = tmp_path / "case" / name
    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    words = [word for _, flag in options for word in flag]
    result = larsbench("slurm", *TINY, f"--world-size={world}", *words, "--output", out)
    check_clean(result)
    if result.returncode == 0:
        check_scripts(out, setup=any(n == "setup" for n, _ in options))
    else:
        check_refused(result, OPTION_KEYS | {"--world-size", "world_size"})
        assert not out.exists() and not (tmp_path / "case").exists()


needs_mount = pytest.mark.skipif(not can_mount(), reason="a full disk is a tmpfs: mounting one needs root (CI runs as root)")


@needs_mount
@FEW
@given(kind=st.sampled_from(OUTPUT_KINDS), name=NAMES, free=st.sampled_from([0, 4, 8, 16, 64]), runs=st.integers(1, 40))
def test_slurm_into_a_bad_output(tmp_path, kind, name, free, runs):
    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    with tiny_disk(free) as disk:
        out = make_output(kind, tmp_path / "case", name, disk)
        before = snapshot(tmp_path / "case", disk)
        result = larsbench("slurm", *TINY, f"--repeats={runs}", "--output", out)
        check_clean(result)
        if result.returncode == 0:
            assert kind == "full", result.stdout
            check_scripts(out, setup=False)
        else:
            check_refused(result, ("--output",))
            assert snapshot(tmp_path / "case", disk) == before


# --- sbatch and squeue: missing, failing, and picked up again -------------------------------------


class FakeSlurm:
    """sbatch and squeue as shell scripts in a folder that is the whole PATH: sbatch notes each
    call and prints the next job id; squeue prints ``states`` or, while ``down``, fails as it
    does when the controller cannot be reached."""

    def __init__(self, folder: Path):
        self.bin = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.calls = folder / "sbatch.calls"
        self.states = folder / "squeue.states"
        self.down = folder / "squeue.down"

    def install(self, *commands: str) -> FakeSlurm:
        scripts = {
            "sbatch": f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{self.calls}"\nn=0\nwhile read -r line; do n=$((n + 1)); done < "{self.calls}"\n'
                      'echo "$((4200 + n))"\n',
            "squeue": f'#!/bin/sh\nif [ -e "{self.down}" ]; then\n  echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2\n'
                      f'  exit 1\nfi\nwhile IFS= read -r line; do printf "%s\\n" "$line"; done < "{self.states}"\n',
        }  # fmt: skip
        for command in commands:
            path = self.bin / command
            path.write_text(scripts[command])
            path.chmod(0o755)
        self.states.write_text("")
        return self

    def submitted(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    fake = FakeSlurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(fake.bin))
    return fake


@pytest.mark.parametrize(("present", "flags", "missing"), [((), ["--submit"], "sbatch"), (("squeue",), ["--submit"], "sbatch"),
                                                           (("sbatch",), ["--wait"], "squeue"), (("sbatch",), ["--submit", "--wait"], "squeue")])  # fmt: skip
def test_a_missing_slurm_command_is_named_before_anything_is_submitted(tmp_path, fake_slurm, present, flags, missing):
    fake_slurm.install(*present)
    out = tmp_path / "out"
    result = larsbench("slurm", *TINY, "--output", out, *flags)
    key = check_refused(result, ("--submit", "--wait"))
    assert key == ("--submit" if missing == "sbatch" else "--wait") and f"{missing} is not on PATH" in result.stderr
    assert fake_slurm.submitted() == 0 and not out.exists()


@MANY
@given(poll=st.floats(), timeout=st.floats())
def test_wait_timing_values(tmp_path, fake_slurm, poll, timeout):
    assume(not (math.isfinite(poll) and poll > 0 and math.isfinite(timeout) and timeout > 0))  # valid ones wait for real
    fake_slurm.install("sbatch", "squeue")
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    before = fake_slurm.submitted()
    result = larsbench("slurm", *TINY, "--output", out, "--wait", f"--poll-seconds={poll!r}", f"--controller-timeout={timeout!r}")
    check_refused(result, ("--poll-seconds", "--controller-timeout"))
    assert fake_slurm.submitted() == before and not out.exists()


def jobs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "slurm" / "jobs.jsonl").read_text().splitlines()]


def test_a_controller_that_stops_answering_keeps_the_job_ids_and_a_second_wait_picks_them_up(tmp_path, fake_slurm):
    fake_slurm.install("sbatch", "squeue")
    out = tmp_path / "out put"
    fake_slurm.down.touch()
    gone = larsbench("slurm", *TINY, "--output", out, "--wait", "--poll-seconds=0.1", "--controller-timeout=0.5")
    check_refused(gone, ("--wait",))
    line = gone.stderr.strip()
    assert "no answer from the Slurm controller for 0.5 s (squeue failed: squeue: error: Unable to contact slurm controller" in line
    assert f"jobs 4201 may still run and are kept in {out / 'slurm' / 'jobs.jsonl'}" in line
    assert f"`larsbench slurm --output {shlex.quote(str(out))} --wait` picks them up again" in line
    assert "the Slurm controller does not answer" in gone.stdout  # said once, when it began
    assert [j["job_id"] for j in jobs(out)] == ["4201"] and fake_slurm.submitted() == 1

    fake_slurm.down.unlink()
    fake_slurm.states.write_text("4201|COMPLETED\n")
    back = larsbench("slurm", "--output", out, "--wait", "--poll-seconds=0.1")  # no experiment: not needed to pick up
    assert back.returncode == 0, back.stdout + back.stderr
    assert "jobs 4201 were submitted and not yet seen to end; waiting for them instead of submitting again" in back.stdout
    assert fake_slurm.submitted() == 1
    assert jobs(out)[-1]["job_id"] == "4201" and jobs(out)[-1]["states"] == "1 COMPLETED"

    fake_slurm.states.write_text("4202|COMPLETED\n")
    again = larsbench("slurm", *TINY, "--output", out, "--wait", "--poll-seconds=0.1")  # collected: a new wait submits anew
    assert again.returncode == 0, again.stdout + again.stderr
    assert fake_slurm.submitted() == 2 and "submitted cli-1n1t.sbatch: job 4202" in again.stdout


def test_jobs_submitted_without_wait_are_waited_for_later(tmp_path, fake_slurm):
    fake_slurm.install("sbatch", "squeue")
    out = tmp_path / "out"
    assert larsbench("slurm", *TINY, "--output", out, "--submit").returncode == 0
    assert larsbench("slurm", *TINY, "--optimizer", "sgd", "--output", out, "--submit").returncode == 0
    fake_slurm.states.write_text("4201|COMPLETED\n4202|FAILED\n")
    done = larsbench("slurm", "--output", out, "--wait", "--poll-seconds=0.1")
    assert done.returncode == 1 and "job 4202: FAILED" in done.stdout and fake_slurm.submitted() == 2
