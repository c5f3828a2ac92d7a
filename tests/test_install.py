"""larsbench as pip installs it: one top-level package, and ranks that nothing in the working
directory can shadow (a folder holding ``suite/``, ``reports.py``, ``slurm.py`` or even
``larsbench/`` is where a user may well run it from)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

TRAP = 'raise SystemExit("booby trap: {name} was imported from the working directory")\n'


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves a build/ folder in the tree it builds.
    source = out / "source"
    skip = shutil.ignore_patterns(".git", ".venv", ".whl", "build", "results", "docs", "*.egg-info", "__pycache__", ".benchmarks")
    shutil.copytree(REPO, source, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (found,) = out.glob("larsbench-*.whl")
    return found


def test_the_wheel_holds_larsbench_alone(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    version = wheel.name.split("-")[1]
    assert {name.split("/")[0] for name in names} == {"larsbench", f"larsbench-{version}.dist-info"}
    for layer in ("core", "workloads", "backends", "loop", "suite", "slurm", "reports"):
        assert f"larsbench/{layer}/__init__.py" in names
    assert "larsbench/main.py" in names and "larsbench/suite/experiments/default.yaml" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "larsbench = larsbench.main:main" in entry_points and "ddp = larsbench.backends.ddp:DDPBackend" in entry_points


@pytest.mark.multiprocess
def test_an_installed_larsbench_runs_from_a_booby_trapped_folder(wheel, tmp_path):
    # A fresh environment holding the wheel (not an editable install); torch and the other
    # dependencies come from this environment's site-packages through a path entry.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip

    work = tmp_path / "work"
    for name in ("suite", "larsbench", "core"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(TRAP.format(name=f"{name}/"))
    for name in ("reports", "slurm", "backends", "workloads"):
        (work / f"{name}.py").write_text(TRAP.format(name=f"{name}.py"))
    # The traps are live: a plain `python -c` from that folder does import them.
    shadowed = subprocess.run([str(python), "-c", "import larsbench.main"], cwd=work, capture_output=True, text=True)
    assert shadowed.returncode != 0 and "booby trap: larsbench/" in shadowed.stderr
    done = subprocess.run(
        [str(venv / "bin" / "larsbench"), "run", "--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16",
         "--world-size", "2", "--micro-batch", "4", "--steps", "3", "--synthetic-samples", "64", "--device", "cpu",
         "--output", "out"],
        cwd=work, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "booby trap" not in done.stdout + done.stderr
    (record,) = [json.loads(line) for line in (work / "out" / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["steps"] == 3
    assert record["provenance"]["config"]["world_size"] == 2
