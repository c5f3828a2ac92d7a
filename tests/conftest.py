import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_data_cache(tmp_path_factory, monkeypatch):
    # Generated data sets land in a per-session folder, never in the user's cache.
    monkeypatch.setenv("LARSBENCH_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``larsbench ARGS`` in a fresh process, exactly as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "suite.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
