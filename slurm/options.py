"""Slurm options: which exist, where they come from, and the allocation shape of each run.

The valid options are the user-facing keyword arguments of ``slurm.script.render_script``
(its signature minus ``INTERNAL``), with their types and help taken from its annotations: add
an argument there and it is a valid experiment key and a command-line flag at once.

Sources, later wins: the experiment file's ``slurm:`` section, then flags. An unknown key is an
error that lists the valid ones.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError

from larsbench.slurm.script import INTERNAL, check_line, extra_option, render_script
from larsbench.core.errors import ConfigError

SECTION = "slurm"
# Options that take several values: on the command line the flag is repeated.
LIST_OPTIONS = ("extra_sbatch", "setup")


@cache
def option_types() -> dict[str, Any]:
    """Every user option of ``render_script`` and its annotated type."""
    hints = get_type_hints(render_script, include_extras=True)
    params = inspect.signature(render_script).parameters
    return {name: hints[name] for name in params if name not in INTERNAL}


def valid_options() -> tuple[str, ...]:
    return tuple(option_types())


@cache
def option_schema(name: str) -> dict[str, Any]:
    """An option's JSON schema (computed once: every command line builds its flags from them)."""
    return TypeAdapter(option_types()[name]).json_schema()


def option_help(name: str) -> str:
    return option_schema(name).get("description", "")


def option_default(name: str) -> Any:
    default = inspect.signature(render_script).parameters[name].default
    return None if default is inspect.Parameter.empty else default


def validate(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Check names and types; ``where`` prefixes the key in errors (``slurm.`` or ``--``)."""
    types = option_types()
    checked: dict[str, Any] = {}
    for name, value in options.items():
        key = f"{where}{name}" if where != "--" else "--" + str(name).replace("_", "-")
        if name not in types:
            import difflib

            close = difflib.get_close_matches(str(name), types, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(key, f"unknown Slurm option {name!r}; {hint}valid options: {', '.join(types)}")
        if name in LIST_OPTIONS and isinstance(value, str):
            value = [value]
        try:
            value = TypeAdapter(types[name]).validate_python(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ConfigError(key, f"{error['msg']} (got {value!r}); {option_help(name)}") from None
        for item in value if isinstance(value, list) else [value]:
            if name != "setup" and isinstance(item, str):
                check_line(key, item)
        if name == "extra_sbatch":
            for line in value:
                try:
                    extra_option(line)
                except ConfigError as exc:
                    raise ConfigError(key, exc.message) from None
        if name == "time":
            time_limit_seconds(value, key)
        checked[name] = value
    return checked


def time_limit_seconds(value: str | int | None, key: str = "time") -> int | None:
    """Seconds in a Slurm time limit (``60``, ``1:30:00``, ``2-12``, ...); None when unlimited."""
    if value is None:
        return None
    text = str(value).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if match is None:
        raise ConfigError(key, f"{text!r} is not a Slurm time limit; use minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS")
    days, a, b, c = match.groups()
    a, b, c = int(a), int(b or 0), int(c or 0)
    if days is not None:  # D-HH[:MM[:SS]]
        return int(days) * 86400 + a * 3600 + b * 60 + c
    if match.group(4) is not None:  # HH:MM:SS
        return a * 3600 + b * 60 + c
    if match.group(3) is not None:  # MM:SS
        return a * 60 + b
    return a * 60  # minutes


def merge(section: dict[str, Any] | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The experiment's ``slurm:`` section overridden by flags, both checked."""
    if section is not None and not isinstance(section, dict):
        raise ConfigError(SECTION, "must be a mapping of Slurm options, e.g. 'partition: gpu'")
    merged = validate(dict(section or {}), f"{SECTION}.")
    merged.update(validate(flags, "--"))
    limit = time_limit_seconds(merged.get("time"))
    warning = merged.get("signal_seconds", option_default("signal_seconds"))
    if limit is not None and warning >= limit:
        raise ConfigError(
            "signal_seconds", f"the preemption warning ({warning} s before the end) must be shorter than the time limit ({limit} s); lower signal_seconds"
        )
    return merged


# -- allocation shape -----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Shape:
    """How many nodes and ranks per node one run takes; runs of one shape share a job array."""

    nodes: int
    ntasks_per_node: int

    @property
    def tag(self) -> str:
        return f"{self.nodes}n{self.ntasks_per_node}t"


def gpu_count(gpus_per_node: int | str | None) -> int | None:
    """4 from ``4`` or ``a100:4``; None when not given or not a count."""
    if gpus_per_node is None:
        return None
    match = re.search(r"(\d+)$", str(gpus_per_node))
    return int(match.group(1)) if match else None


def shape_for(world_size: int, options: dict[str, Any], label: str) -> Shape:
    """Nodes × ranks per node for a run of ``world_size`` ranks.

    ``nodes`` and ``ntasks_per_node`` both given: their product must be the world size. One
    given: the other follows (it must divide). Neither: ranks per node default to the GPUs
    per node (one rank per GPU), else every rank on one node. A run smaller than one node's
    worth of ranks takes one node with just its ranks.
    """
    nodes, per_node = options.get("nodes"), options.get("ntasks_per_node")
    if nodes is not None and per_node is not None:
        if nodes * per_node != world_size:
            raise ConfigError(
                "nodes", f"run {label} has world_size {world_size}, but nodes × ntasks_per_node = "
                f"{nodes} × {per_node} = {nodes * per_node}; set only one of them so the other follows"
            )  # fmt: skip
        return Shape(nodes, per_node)
    if nodes is not None:
        if world_size % nodes:
            raise ConfigError("nodes", f"run {label}: {world_size} ranks do not divide evenly over {nodes} nodes")
        return Shape(nodes, world_size // nodes)
    per_node = per_node or gpu_count(options.get("gpus_per_node")) or world_size
    if world_size <= per_node:
        return Shape(1, world_size)
    if world_size % per_node:
        raise ConfigError(
            "ntasks_per_node", f"run {label}: {world_size} ranks do not fill whole nodes of {per_node}; "
            "choose a world_size that is a multiple of it, or set nodes"
        )  # fmt: skip
    return Shape(world_size // per_node, per_node)


# -- command line ---------------------------------------------------------------------------


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option (``--ntasks-per-node``, ...), default SUPPRESS (unset = not given)."""
    group = parser.add_argument_group("Slurm options (override the experiment's 'slurm:' section)")
    types = option_types()
    for name in types:
        schema = option_schema(name)
        kinds = {s.get("type") for s in schema.get("anyOf", [schema])} - {"null"}
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": schema.get("description")}
        if name in LIST_OPTIONS:
            kwargs.update(action="append", metavar="LINE")
        elif kinds == {"integer"}:
            kwargs.update(type=int, metavar="N")
        else:
            kwargs.update(type=_int_or_text, metavar="VALUE")
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def _int_or_text(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def flag_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in option_types() if hasattr(args, name)}


def default_python() -> str:
    return sys.executable or "python"


def resolve_path(path: str | Path) -> str:
    return str(Path(path).expanduser().absolute())
