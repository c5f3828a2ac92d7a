"""The ``larsbench`` command: every sub-command, and the one place a bad input becomes a
one-line error and exit status 2."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from larsbench import __version__
from larsbench.core.errors import ConfigError, error_line
from larsbench.core.files import UnreadableLines
from larsbench.reports import cli as reports_cli
from larsbench.slurm import cli as slurm_cli
from larsbench.suite import cli as suite_cli

DESCRIPTION = (
    "Benchmark large-batch distributed training (LARS vs SGD) across PyTorch DDP, DeepSpeed and "
    "Horovod, locally and on Slurm; report, compare and track the results."
)
EPILOG = (
    "exit status: 0 success, 1 a run failed or a regression was found, 2 bad input, "
    "3 compare or history could not tell a large change from noise (inconclusive)."
)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line like every other bad input (argparse would
    print the whole usage first: dozens of lines for ``run``, with the error last)."""

    def error(self, message: str) -> NoReturn:
        key, text = usage_error(message)
        self.exit(2, f"larsbench: error: {key}: {text}; see '{self.prog} --help'\n")


def usage_error(message: str) -> tuple[str, str]:
    """argparse's message as (the argument it is about, what is wrong), on one line."""
    message = " ".join(message.split())
    if match := re.fullmatch(r"argument (\S+?): (.*)", message):
        names = match.group(1).split("/")
        return next((n for n in names if n.startswith("--")), names[0]), match.group(2)
    if match := re.fullmatch(r"the following arguments are required: (.*)", message):
        names = [name.split("/")[-1] for name in match.group(1).split(", ")]
        return names[0], "required" + (f" (so are {', '.join(names[1:])})" if len(names) > 1 else "")
    if match := re.fullmatch(r"unrecognized arguments: (\S+).*", message):
        return match.group(1), "not an argument of this command"
    return "usage", message


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="larsbench", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"larsbench {__version__}")
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
    with warnings.catch_warnings():
        # A file's unreadable lines are a plain notice, once per file however often it is read
        # (a run reads results.jsonl after every run), whatever PYTHONWARNINGS says.
        warnings.simplefilter("always", UnreadableLines)
        noticed: set[Path] = set()
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not isinstance(message, UnreadableLines):
                return shown(message, category, filename, lineno, file, line)
            if message.path.resolve() not in noticed:
                noticed.add(message.path.resolve())
                print(f"larsbench: {message}", file=sys.stderr, flush=True)

        warnings.showwarning = show
        try:
            return args.handler(args, console())
        except ConfigError as exc:
            print(error_line(exc), file=sys.stderr)
            return 2
        except OSError as exc:
            # Each command names the argument behind the files it writes; this is the net for a
            # file that none of them expected to fail (one line, not a traceback).
            where = exc.filename or "larsbench"
            print(f"larsbench: error: {where}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("larsbench: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
