"""An in-process ``larsbench`` for the report, compare and baseline commands."""

from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from larsbench.reports.cli import add_commands
from larsbench.core.errors import ConfigError


@pytest.fixture
def cli():
    """``larsbench ARGS`` in-process: (exit code, console text); a ConfigError exits 2 as in main."""

    def run(*argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="larsbench")
        add_commands(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([str(a) for a in argv])
        out = io.StringIO()
        try:
            return args.handler(args, Console(file=out, width=300, highlight=False)), out.getvalue()
        except ConfigError as exc:
            return 2, f"larsbench: error: {exc}"

    return run
