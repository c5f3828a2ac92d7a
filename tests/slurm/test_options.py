"""Slurm options: names derived from the renderer's signature, types, sources, shapes."""

from __future__ import annotations

import argparse

import pytest

from larsbench.slurm.options import Shape, add_option_flags, flag_options, merge, shape_for, time_limit_seconds, valid_options
from larsbench.core.errors import ConfigError


def test_valid_options_are_the_renderers_user_keywords():
    assert valid_options() == (
        "job_name", "nodes", "ntasks_per_node", "partition", "account", "qos", "time", "gpus_per_node",
        "cpus_per_task", "mem", "constraint", "extra_sbatch", "setup", "python", "signal_seconds",
        "max_requeues", "stop_margin_seconds", "array_throttle",
    )  # fmt: skip


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        merge({"partiton": "gpu"}, {})
    assert error.value.key == "slurm.partiton"
    assert "did you mean 'partition'?" in error.value.message
    assert "valid options: job_name, nodes, ntasks_per_node, partition" in error.value.message


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"nodes": 0}, "slurm.nodes", "greater than 0"),
        ({"nodes": "2"}, "slurm.nodes", "valid integer"),
        ({"cpus_per_task": 1.5}, "slurm.cpus_per_task", "valid integer"),
        ({"partition": ""}, "slurm.partition", "at least 1 character"),
        ({"partition": "gpu\n#SBATCH --x"}, "slurm.partition", "line break"),
        ({"extra_sbatch": ["--exclusive\ntouch /tmp/x"]}, "slurm.extra_sbatch", "line break"),
        ({"extra_sbatch": ["exclusive"]}, "slurm.extra_sbatch", "not a long sbatch option"),
        ({"extra_sbatch": ["-p gpu"]}, "slurm.extra_sbatch", "write it as --name or --name=value"),
        ({"time": "two hours"}, "slurm.time", "not a Slurm time limit"),
        ({"time": 5, "signal_seconds": 300}, "signal_seconds", "shorter than the time limit"),
        (["partition"], "slurm", "must be a mapping"),
    ],
)
def test_bad_options_name_their_key(section, key, message):
    with pytest.raises(ConfigError) as error:
        merge(section, {})
    assert error.value.key == key and message in error.value.message, error.value


def test_flags_override_the_section_and_name_the_flag():
    merged = merge({"partition": "cpu", "time": "1:00:00", "setup": "module load x"}, {"partition": "gpu"})
    assert merged == {"partition": "gpu", "time": "1:00:00", "setup": ["module load x"]}
    with pytest.raises(ConfigError) as error:
        merge({}, {"ntasks_per_node": 0})
    assert error.value.key == "--ntasks-per-node"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(60, 3600), ("90", 5400), ("10:30", 630), ("1:00:00", 3600), ("2-12", 216000), ("1-00:00:00", 86400),
     ("1-2:3:4", 93784), ("UNLIMITED", None)],
)  # fmt: skip
def test_time_limits(text, seconds):
    assert time_limit_seconds(text) == seconds


@pytest.mark.parametrize(
    ("world", "options", "shape"),
    [
        (1, {}, Shape(1, 1)),
        (8, {}, Shape(1, 8)),
        (8, {"ntasks_per_node": 4}, Shape(2, 4)),
        (2, {"ntasks_per_node": 4}, Shape(1, 2)),
        (512, {"gpus_per_node": "h100:8"}, Shape(64, 8)),
        (16, {"gpus_per_node": 4, "ntasks_per_node": 8}, Shape(2, 8)),
        (8, {"nodes": 4}, Shape(4, 2)),
        (8, {"nodes": 2, "ntasks_per_node": 4}, Shape(2, 4)),
    ],
)
def test_shapes(world, options, shape):
    assert shape_for(world, options, "run") == shape


@pytest.mark.parametrize(
    ("world", "options", "key"),
    [(6, {"ntasks_per_node": 4}, "ntasks_per_node"), (6, {"nodes": 4}, "nodes"), (8, {"nodes": 2, "ntasks_per_node": 2}, "nodes")],
)
def test_impossible_shapes_are_errors(world, options, key):
    with pytest.raises(ConfigError) as error:
        shape_for(world, options, "ddp-w6")
    assert error.value.key == key and "ddp-w6" in error.value.message


def test_every_option_has_a_flag():
    parser = argparse.ArgumentParser()
    add_option_flags(parser)
    args = parser.parse_args(["--ntasks-per-node", "4", "--gpus-per-node", "a100:4", "--mem", "4096",
                              "--setup", "module load a", "--setup", "module load b", "--time", "1:00:00"])  # fmt: skip
    assert flag_options(args) == {"ntasks_per_node": 4, "gpus_per_node": "a100:4", "mem": 4096,
                                  "setup": ["module load a", "module load b"], "time": "1:00:00"}  # fmt: skip
    assert flag_options(parser.parse_args([])) == {}
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags == {"--" + name.replace("_", "-") for name in valid_options()}
