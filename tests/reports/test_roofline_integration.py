"""The network roofline on real runs: a grid of two 2-rank DDP runs of the same model, one fed by
synthetic tensors and one planted with a data-loading misconfiguration (JPEGs of 512 px decoded
and cropped to 32 px on the rank's own thread, ``data_workers: 0``), with ``larsbench comm`` on
the same 2 ranks. The report marks the starved run and names data starvation first; the control
is never said to be starved (on 2 shared cores it may still be marked for overhead: two ranks,
their gloo threads and anything else on the machine compete for the cores, and the records say so)."""

from __future__ import annotations

import json

import pytest

from larsbench.reports.comm import load_comm
from larsbench.reports.load import load_records
from larsbench.reports.predict_comm import networks
from larsbench.reports.roofline import roofline
from tests.conftest import run_cli

pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]

GRID = {"backend": "ddp", "model": "alexnet_bn_mini", "image_size": 32, "num_classes": 4, "micro_batch_size": 64,
        "world_size": 2, "steps": 12, "timing_warmup_steps": 3, "compute_probe_steps": 3, "device": "cpu",
        "log_every_steps": 6, "synthetic_samples": 256}  # fmt: skip


def test_a_data_starved_run_is_marked_and_named_and_its_control_is_not_called_starved(tmp_path):
    jpegs = tmp_path / "jpegs"
    made = run_cli("data", "generate", str(jpegs), "--num-classes", "4", "--train-per-class", "48", "--val-per-class", "2", "--image-size", "512")
    assert made.returncode == 0, made.stderr
    exp = tmp_path / "grid.yaml"
    exp.write_text(json.dumps({"name": "grid", "defaults": GRID, "runs": [
        {"dataset": "synthetic"},
        {"dataset": "imagefolder", "data_dir": str(jpegs), "data_workers": 0},
    ]}))  # fmt: skip
    out = tmp_path / "out"
    ran = run_cli("run", str(exp), "--output", str(out), timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    comm = run_cli("comm", "--backend", "ddp", "--world-size", "2", "--operations", "all_reduce", "--max-bytes", "4M",
                   "--device", "cpu", "--output", str(out))  # fmt: skip
    assert comm.returncode == 0, comm.stdout + comm.stderr
    report = run_cli("report", str(out), "-o", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr

    runs = {r["dataset"]: r for r in load_records([out])}
    network = networks(load_comm([out]))
    starved, control = roofline(runs["imagefolder"], network), roofline(runs["synthetic"], network)
    print(f"\nstarved: step {starved.step_sec * 1e3:.0f} ms, roofline {starved.roofline_sec * 1e3:.0f} ms, data wait "
          f"{runs['imagefolder']['data_wait_sec_per_step'] * 1e3:.0f} ms; control: step {control.step_sec * 1e3:.0f} ms, "
          f"roofline {control.roofline_sec * 1e3:.0f} ms ({control.ratio:.2f}×: {'; '.join(control.causes) or 'not marked'})")  # fmt: skip
    assert "ddp's" in starved.network_source  # the roofline's network is larsbench comm's
    assert starved.marked and starved.causes[0].startswith("data starvation")
    assert not any(cause.startswith("data starvation") for cause in control.causes)
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"(run {runs['imagefolder']['run_id']}) is {starved.ratio:.2f}× its roofline: data starvation" in md
    assert f"(run {runs['synthetic']['run_id']}) is {control.ratio:.2f}× its roofline: data starvation" not in md
