"""The ``predict`` sub-command of ``larsbench``: step time, throughput, scaling efficiency and
time to accuracy at allocations that were never run (``reports.predict``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from larsbench.core.errors import ConfigError

EPILOG = """\
RESULTS are runs at a small scale (typically one node); COMM is what `larsbench comm` (or
`larsbench slurm --comm`) measured on the allocations to predict, or the largest one measured
(intra-node records for one node, inter-node records for several; scaled in the rank count as a
ring all-reduce scales). For every setting in RESULTS and every node count: weak scaling (each
rank's batch held) and strong scaling (the global batch held: --global-batch, default the base
runs'). The model and its assumptions: docs/method.md, "Predicting other scales".
exit status: 0 predictions printed, 2 bad input."""


def add_command(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict", help="predict step time, throughput, efficiency and time to accuracy at other scales",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    predict.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results.jsonl files or folders holding one")
    predict.add_argument("--comm", action="append", type=Path, required=True, metavar="COMM",
                         help="comm.jsonl (or its folder) from larsbench comm at the target allocation (repeatable)")  # fmt: skip
    predict.add_argument("--nodes", metavar="N[,N...]", help="node counts to predict (default: those COMM measured)")
    predict.add_argument("--ranks-per-node", type=int, metavar="R", help="ranks per node (default: the base runs')")
    predict.add_argument("--global-batch", metavar="B[,B...]", help="global batches for strong scaling (default: the base runs')")
    predict.add_argument("--json", action="store_true", help="print the predictions as JSON (docs/method.md describes it)")
    predict.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    from larsbench.reports.comm import load_comm
    from larsbench.reports.load import load_records
    from larsbench.reports.predict import comm_paths, parse_counts, predict_all, to_json
    from larsbench.reports.predict_comm import require_networks

    if args.ranks_per_node is not None and args.ranks_per_node < 1:
        raise ConfigError("--ranks-per-node", "must be a positive number of ranks")
    batches = parse_counts(args.global_batch, "--global-batch") if args.global_batch else None
    paths = comm_paths(args.comm)
    networks = require_networks(load_comm(paths))
    nodes = parse_counts(args.nodes, "--nodes") if args.nodes else sorted(
        {a.nodes for net in networks.values() for a in net.curves}
    )  # fmt: skip
    records = load_records(args.results)
    families = predict_all(records, networks, nodes, args.ranks_per_node, batches)
    if not families:
        raise ConfigError("RESULTS", "holds no ok run with a measured step time to predict from")
    if args.json:
        print(json.dumps(to_json(families, networks, [str(p) for p in args.results], [str(p) for p in paths]), indent=2))
        return 0
    for family in families:
        console.print(_table(family))
        for shape, why in family.skipped:
            console.print(f"  not predicted: {shape.nodes} node(s) × {shape.ranks_per_node}, {shape.scaling}, B={shape.global_batch}: {escape(why)}")
        for note in family.base.notes:
            console.print(f"  note: {escape(note)}")
    for name, net in sorted(networks.items()):
        console.print(f"COMM {name}: {escape(net.describe())}")
    return 0


def _table(family) -> Table:
    b = family.base
    title = (f"{b.backend} · {b.workload}\nbase: {b.nodes} node(s) × {b.ranks_per_node} rank(s), B={b.global_batch} "
             f"({len(b.run_ids)} run(s)): step {b.step.mean * 1e3:.0f} ms = data {b.data_wait.mean * 1e3:.0f} + compute "
             f"{b.compute.mean * 1e3:.0f} + overhead {b.overhead.mean * 1e3:.0f} + exposed comm; "
             f"{len(b.messages)} reduction(s) of {sum(b.messages) / 2**20:.1f} MiB, overlap window {b.overlap_window.mean * 1e3:.0f} ms")  # fmt: skip
    table = Table(title=escape(title), title_justify="left")
    for name in ("nodes × ranks", "scaling", "B = N×micro×acc", "step ms [low–high]", "images/s", "efficiency",
                 "exposed comm ms", "sync ms", "time to accuracy", "communication from"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("scaling", "communication from", "time to accuracy") else "right")
    for p in family.predictions:
        s = p.shape
        tta = p.time_to_accuracy
        tta_text = "—" if tta is None else (
            f"{_duration(tta['sec'])} [{_duration(tta['low_sec'])}–{_duration(tta['high_sec'])}] "
            f"({tta['epochs']:.3g} ep, {'RCP-based' if tta['epochs_source'] == 'rcp' else 'epochs from runs'})"
        )  # fmt: skip
        table.add_row(
            f"{s.nodes} × {s.ranks_per_node}", s.scaling, f"{s.global_batch} = {s.world_size}×{p.micro_batch_size}×{p.accumulation_steps}",
            f"{p.step_sec * 1e3:.0f} [{p.step_low * 1e3:.0f}–{p.step_high * 1e3:.0f}]", f"{p.throughput:.1f}",
            "—" if p.efficiency is None else f"{p.efficiency:.2f}", f"{p.parts['exposed_comm_sec'] * 1e3:.0f}",
            f"{p.parts['sync_sec'] * 1e3:.0f}", tta_text, escape(p.comm_how),
        )  # fmt: skip
    return table


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
