"""The architecture as a test: import-linter's contracts in pyproject.toml hold, and they fail
when a lower layer imports a higher one.

The repository keeps one folder per layer at its top level and installs them as
``larsbench.*`` (setuptools ``package-dir``); import-linter reads a package from one directory
tree, so the test lays the package out as it is installed, in a temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def installed_layout(target: Path) -> Path:
    """``target/larsbench`` as pip installs it: the root package with each mapped folder inside."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = target / "larsbench"
    for package, folder in sorted(mapping.items()):  # the root first, then its sub-packages
        inside = root.joinpath(*package.split(".")[1:])
        shutil.copytree(REPO / folder, inside, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )


def test_every_package_is_mapped_and_every_layer_exists(tmp_path):
    root = installed_layout(tmp_path)
    for layer in ("core", "workloads", "backends", "loop", "suite", "slurm", "reports"):
        assert (root / layer / "__init__.py").is_file(), layer


def test_the_import_contracts_hold(tmp_path):
    installed_layout(tmp_path)
    done = lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_backward_import_breaks_the_layers_contract(tmp_path):
    root = installed_layout(tmp_path)
    with (root / "core" / "errors.py").open("a") as module:
        module.write("\nimport larsbench.loop.trainer  # a lower layer reaching up\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "larsbench.core.errors -> larsbench.loop.trainer" in done.stdout, done.stdout


def test_reports_may_not_import_the_training_side(tmp_path):
    root = installed_layout(tmp_path)
    with (root / "reports" / "load.py").open("a") as module:
        module.write("\nimport torch\n")
    done = lint(tmp_path)
    assert done.returncode != 0 and "reports read records only BROKEN" in done.stdout, done.stdout
