"""``larsbench slurm --comm``: one collectives job per allocation shape, each backend of its runs in turn."""

from __future__ import annotations

import shlex
import subprocess

from larsbench.slurm.comm import plan_comm, run_id_suffixes
from larsbench.slurm.options import merge
from larsbench.suite.config import resolve_experiment
from tests.conftest import larsbench


def plan(doc: dict, options: dict, tmp_path):
    experiment = resolve_experiment(doc, {}, "exp.yaml")
    return plan_comm(experiment, merge(options, {}), tmp_path / "out", [4096, 8192], ["all_reduce"], 5, "/work dir")


def test_one_job_per_shape_measuring_each_backend_device_and_interface_once(tmp_path):
    doc = {"name": "links", "defaults": {"device": "cpu", "network_interface": "ib0"},
           "runs": [{"world_size": 4}, {"world_size": 8}, {"world_size": 8, "micro_batch_size": 8}],
           "sweep": {"backend": ["ddp", "horovod"]}}  # fmt: skip
    jobs = plan(doc, {"ntasks_per_node": 4, "partition": "gpu", "time": 30, "max_requeues": 3}, tmp_path)
    assert [(j.shape.nodes, j.shape.ntasks_per_node) for j in jobs] == [(1, 4), (2, 4)]
    two_nodes = jobs[1]
    assert [m.backend for m in two_nodes.measures] == ["ddp", "horovod"]  # the micro-batch adds no measure
    lines = two_nodes.text.splitlines()
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --partition=gpu", "#SBATCH --time=30"} <= set(lines)
    assert not any("requeue" in line or "signal" in line for line in lines)
    sruns = [shlex.split(line.split(" || ")[0]) for line in lines if line.startswith("srun ")]
    assert [w[w.index("--backend") + 1] for w in sruns] == ["ddp", "horovod"]
    for words in sruns:
        assert words[:5] == ["srun", "--kill-on-bad-exit=1", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4"]
        assert words[words.index("--network-interface") + 1] == "ib0"
        assert words[words.index("--sizes") + 1] == "4096,8192" and words[words.index("--results") + 1] == "$results"
    assert run_id_suffixes(two_nodes, "77") == ["-77-ddp", "-77-horovod"]
    assert subprocess.run(["bash", "-n"], input=two_nodes.text, text=True).returncode == 0


def test_bad_comm_flags_exit_2_with_one_line(tmp_path):
    for args, key in ((["--operations", "all_to_all"], "--operations"), (["--iterations", "2"], "--iterations"),
                      (["--min-bytes", "1M", "--max-bytes", "4K"], "--min-bytes"), (["--nightly", str(tmp_path)], "--comm")):  # fmt: skip
        done = larsbench("slurm", "--comm", "--world-size", "2", *args, "--output", str(tmp_path / "out"))
        assert done.returncode == 2 and done.stderr.startswith(f"larsbench: error: {key}: "), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
