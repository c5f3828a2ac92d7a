"""The ``run`` and ``data`` sub-commands of ``larsbench`` (``larsbench.main`` holds the rest)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from larsbench.core.spec import RUN_FIELDS, field_help, flag_for
from larsbench.suite.config import bundled_experiment, load_experiment
from larsbench.core.errors import ConfigError


def _json_or_file(text: str) -> Any:
    """A JSON value given inline or as the path of a JSON file (DeepSpeed's habit)."""
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.is_file() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON or a JSON file: {exc}") from None


def _flag_type(schema: dict[str, Any]) -> dict[str, Any]:
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    kind = options[0]
    if kind.get("type") == "object":
        return {"type": _json_or_file, "metavar": "JSON"}
    if "enum" in kind:
        return {"choices": kind["enum"]}
    if kind.get("type") == "boolean":
        return {"action": argparse.BooleanOptionalAction}  # --channels-last / --no-channels-last
    if kind.get("type") == "integer":
        return {"type": int, "metavar": "N"}
    if kind.get("type") == "number":
        return {"type": float, "metavar": "X"}
    return {"type": str}


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run settings (override the experiment's)")
    schemas = field_help()
    for name in RUN_FIELDS:
        schema = schemas[name]
        group.add_argument(
            flag_for(name), dest=name, default=argparse.SUPPRESS, help=schema.get("description"), **_flag_type(schema)
        )


def add_repeats_flags(parser: argparse.ArgumentParser) -> None:
    """``--repeats N|auto`` and the adaptive series' ``--repeats-target`` and ``--repeats-max``."""
    parser.add_argument("--repeats", metavar="N|auto",
                        help="run every setting N times, each repeat with its own seed unless --hold-seed (each record carries "
                        "its repeat index and seed); 'auto': repeat until the throughput's 95%% CI is within --repeats-target "
                        "of its mean, or --repeats-max runs; overrides the experiment's 'repeats'")  # fmt: skip
    parser.add_argument("--repeats-target", metavar="PERCENT",
                        help="with --repeats auto: stop once the 95%% CI half-width is within this share of the mean (default 2%%)")
    parser.add_argument("--repeats-max", type=int, metavar="N", help="with --repeats auto: at most N runs per setting (default 10)")


def add_commands(commands: argparse._SubParsersAction, after_run: Callable[[Path, Console], None] | None = None) -> None:
    """The ``run``, ``comm`` and ``data`` sub-commands. ``after_run(output, console)`` runs when
    a ``run`` has finished (the command line writes the report there: reports sit above this
    layer, so they are handed in rather than imported)."""
    run = commands.add_parser("run", help="run an experiment (default: the bundled CPU demo)")
    run.add_argument("experiment", nargs="?", type=Path, help="experiment YAML; omit for the bundled default or a single run from flags")
    run.add_argument("--output", type=Path, help="results folder (default: the experiment's 'output', else ./results)")
    run.add_argument("--run-id", help="name a single run; running it again with the same id resumes it from its checkpoint")
    add_repeats_flags(run)
    run.add_argument("--verbose", action="store_true", help="stream every launcher's and library's output instead of writing it to OUTPUT/logs/")
    run.add_argument("--no-report", dest="report", action="store_false", help="do not write OUTPUT/report at the end")
    run.add_argument("--dry-run", action="store_true",
                     help="list the runs (settings, ranks, global batch, steps) with a rough time from earlier runs of "
                     "each setting on this machine, and run or write nothing")  # fmt: skip
    add_run_flags(run)
    run.set_defaults(handler=cmd_run, after_run=after_run)

    comm = commands.add_parser(
        "comm", help="measure each backend's all-reduce, all-gather and broadcast over message sizes",
        description="Each backend's collectives through its own API over a sweep of message sizes, with "
        "algorithm and bus bandwidth as nccl-tests defines them; records go to OUTPUT/comm.jsonl.",
    )
    comm.add_argument("--backend", action="append", metavar="NAME", help="backend to measure (repeatable; default: every installed one)")
    comm.add_argument("--world-size", type=int, default=2, metavar="N", help="ranks on this machine (default 2)")
    comm.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    comm.add_argument("--min-bytes", default="4K", metavar="SIZE", help="smallest message (default 4K)")
    comm.add_argument("--max-bytes", default="256M", metavar="SIZE", help="largest message (default 256M)")
    comm.add_argument("--operations", default="all_reduce,all_gather,broadcast", help="comma-separated (default: all three)")
    comm.add_argument("--iterations", type=int, default=20, metavar="N", help="collectives per timed loop, at most (default 20, as nccl-tests' -n; fewer for sizes that would pass the 1 s budget); 3 loops per size")
    comm.add_argument("--output", type=Path, default=Path("results"), help="folder for comm.jsonl (default ./results)")
    comm.set_defaults(handler=cmd_comm)

    data = commands.add_parser("data", help="data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    generate = data_commands.add_parser("generate", help="write a learnable image set in ImageFolder layout")
    generate.add_argument("directory", type=Path)
    generate.add_argument("--num-classes", type=int, default=10)
    generate.add_argument("--train-per-class", type=int, default=64)
    generate.add_argument("--val-per-class", type=int, default=16)
    generate.add_argument("--image-size", type=int, default=72)
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(handler=cmd_data_generate)


# A generated set is for CPU studies; larger images than this only cost memory (PIL holds each whole).
MAX_GENERATED_SIZE = 4096


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from larsbench.suite.launch import run_experiment
    from larsbench.suite.summary import summary_table

    overrides = {name: getattr(args, name) for name in RUN_FIELDS if hasattr(args, name)}
    path = args.experiment
    if path is None and not overrides:
        path = bundled_experiment()
    experiment = load_experiment(path, overrides, args.repeats, args.repeats_target, args.repeats_max)
    output = args.output or Path(experiment.output or "results")
    if args.dry_run:
        return _dry_run(experiment, output, console)
    console.print(f"larsbench: experiment {experiment.name!r}: {len(experiment.runs)} run(s) → {output}/results.jsonl")
    started = time.perf_counter()
    records = run_experiment(experiment, output, console, args.run_id, args.verbose)
    console.print(summary_table(records, f"{experiment.name}: {len(records)} run(s) in {time.perf_counter() - started:.0f} s"))
    if args.report and args.after_run is not None:
        args.after_run(output, console)
    return 1 if any(r["status"] in ("failed", "preempted") for r in records) else 0


def _dry_run(experiment, output: Path, console: Console) -> int:
    from larsbench.suite.plan import plan, plan_table, total_text

    planned = plan(experiment.runs, output)
    console.print(plan_table(planned, f"larsbench: experiment {experiment.name!r} would run (dry run: nothing runs or is written)"))
    console.print(f"{total_text(planned)}; records would go to {output}/results.jsonl")
    return 0


def cmd_data_generate(args: argparse.Namespace, console: Console) -> int:
    from larsbench.workloads.generated import generate_imagefolder

    for name in ("num_classes", "train_per_class", "val_per_class", "image_size"):
        if getattr(args, name) < (2 if name == "num_classes" else 1):
            raise ConfigError("--" + name.replace("_", "-"), "must be a positive number (classes: at least 2)")
    if args.image_size > MAX_GENERATED_SIZE:
        raise ConfigError("--image-size", f"at most {MAX_GENERATED_SIZE} px (one image of {args.image_size} px would not fit in memory); "
                          "runs crop and resize to their own image_size anyway")  # fmt: skip
    if args.seed < 0:
        raise ConfigError("--seed", "must be 0 or more")
    try:
        root = generate_imagefolder(
            args.directory,
            num_classes=args.num_classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            image_size=args.image_size,
            seed=args.seed,
        )
    except FileExistsError as exc:
        raise ConfigError("directory", str(exc)) from None
    except OSError as exc:
        images = args.num_classes * (args.train_per_class + args.val_per_class)
        raise ConfigError("directory", f"cannot write the data set to {args.directory} ({exc.strerror or exc}); "
                          f"choose a writable folder with room for {images} JPEG images") from None  # fmt: skip
    console.print(f"wrote {args.num_classes} classes × ({args.train_per_class} train + {args.val_per_class} val) images to {root}")
    return 0



def cmd_comm(args: argparse.Namespace, console: Console) -> int:
    from larsbench.backends.registry import backend_names, get_backend
    from larsbench.suite.comm import comm_table, parse_size, run_comm, size_sweep

    if args.world_size < 1:
        raise ConfigError("--world-size", "must be at least 1")
    if args.iterations < 3:
        raise ConfigError("--iterations", "must be at least 3 collectives per timed loop")
    smallest, largest = parse_size(args.min_bytes, "--min-bytes"), parse_size(args.max_bytes, "--max-bytes")
    if smallest > largest:
        raise ConfigError("--min-bytes", f"{args.min_bytes} is larger than --max-bytes {args.max_bytes}")
    backends = args.backend or [name for name in backend_names() if _installed(get_backend(name))]
    operations = [op.strip() for op in args.operations.split(",") if op.strip()]
    started = time.perf_counter()
    records = run_comm(backends, args.world_size, args.device, size_sweep(smallest, largest), operations, args.iterations, args.output, console)
    console.print(comm_table(records, f"collectives: {len(records)} measurement(s) in {time.perf_counter() - started:.0f} s → {args.output / 'comm.jsonl'}"))
    return 0 if {r["backend"] for r in records} == set(backends) else 1


def _installed(backend) -> bool:
    try:
        backend.check_available()
    except ConfigError:
        return False
    return True
