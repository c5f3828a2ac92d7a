"""The ``larsbench`` command: every sub-command, and the one place a bad input becomes a
one-line error and exit status 2."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from larsbench.core.errors import ConfigError, error_line
from larsbench.reports import cli as reports_cli
from larsbench.slurm import cli as slurm_cli
from larsbench.suite import cli as suite_cli

DESCRIPTION = (
    "Benchmark large-batch distributed training (LARS vs SGD) across PyTorch DDP, DeepSpeed and "
    "Horovod, locally and on Slurm; report, compare and track the results."
)
EPILOG = "exit status: 0 success, 1 a run failed or a regression was found, 2 bad input."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="larsbench", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    suite_cli.add_commands(commands, after_run=reports_cli.report_after_run)  # run, comm, data
    slurm_cli.add_commands(commands)  # slurm
    reports_cli.add_commands(commands)  # report, compare, baseline, history
    return parser


def console() -> Console:
    # Logs and CI are not terminals; rich would wrap tables at 80 columns there.
    found = Console(highlight=False)
    return found if found.is_terminal else Console(highlight=False, width=160)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, console())
    except ConfigError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
