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
    # FLOP counts and measured peaks too (``core.cache``): measured once per test session.
    monkeypatch.setenv("LARSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``larsbench ARGS`` in a fresh process, exactly as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "larsbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def larsbench(*args: str) -> subprocess.CompletedProcess:
    """``larsbench ARGS`` in this process (``larsbench.main.main``): the same parser, handlers and
    exit codes without a fresh interpreter's start-up, for tests of validation and messages.
    Warnings are off, as ``run_cli`` turns them off."""
    import contextlib
    import io
    import warnings

    from larsbench.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["larsbench", *args], code, out.getvalue(), err.getvalue())
