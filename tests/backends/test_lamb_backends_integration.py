"""``--optimizer lamb`` end to end, as a user runs it: one experiment through DDP, DeepSpeed and
Horovod on 2 CPU ranks each, then ``larsbench report``. The three backends
train identically, every run writes LAMB's per-layer telemetry and an MLPerf event log that
MLCommons' checker passes with the ``opt_lamb_*`` keys, and the report shows the telemetry."""

from __future__ import annotations

import json

import pytest
from mlperf_logging.compliance_checker import mlp_parser

from larsbench.core.results import read_records
from larsbench.reports.mlperf import check_event_log
from tests.conftest import run_cli

pytestmark = pytest.mark.multiprocess

BACKENDS = ("ddp", "deepspeed", "horovod")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lamb")
    experiment = out / "lamb.yaml"
    experiment.write_text(json.dumps({
        "name": "lamb-backends",
        "defaults": {"optimizer": "lamb", "model": "tiny_cnn", "dataset": "generated", "image_size": 16, "num_classes": 4,
                     "train_images_per_class": 16, "val_images_per_class": 4, "world_size": 2, "micro_batch_size": 4,
                     "epochs": 2, "warmup_epochs": 0.5, "target_top1": 0.3, "device": "cpu", "seed": 1,
                     "telemetry_every_steps": 2, "compute_probe_steps": 2, "log_every_steps": 2},
        "sweep": {"backend": list(BACKENDS)},
    }))  # fmt: skip
    done = run_cli("run", str(experiment), "--output", str(out / "results"), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = run_cli("report", str(out / "results"), "-o", str(out / "report"))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return out, {r["backend"]: r for r in read_records(out / "results")}


def test_lamb_trains_identically_through_every_backend(runs):
    _, records = runs
    assert sorted(records) == sorted(BACKENDS)
    ddp = records["ddp"]
    for backend, record in records.items():
        assert record["status"] == "ok" and record["optimizer"] == "lamb" and record["layer_telemetry"] is True, record["error"]
        assert record["param_checksum"] == pytest.approx(ddp["param_checksum"], rel=1e-5), backend
    # equal checksums would say nothing if the weights had not moved: the loss changed
    losses = [loss for _, loss in ddp["loss_curve"]]
    assert max(losses) - min(losses) > 1e-3


def test_every_run_logs_lambs_per_layer_telemetry(runs):
    out, records = runs
    for record in records.values():
        rows = [json.loads(line) for line in (out / "results" / record["telemetry"]).read_text().splitlines()]
        assert rows and all(set(r) >= {"layer", "w_norm", "update_norm", "trust_ratio", "effective_lr"} for r in rows)
        assert {r["layer"] for r in rows} == {"0.weight", "2.weight", "6.weight"}  # tiny_cnn's weights; biases excluded


def test_the_event_logs_pass_mlperfs_checker_with_lambs_keys(runs):
    out, records = runs
    for record in records.values():
        path = out / "results" / record["event_log"]
        checked = check_event_log(path, record["model"])
        assert checked.passed, checked.output
        events = {line.key: line.value["value"] for line in mlp_parser.parse_file(str(path), ruleset="4.0.0")[0]}
        assert events["opt_name"] == "lamb" and events["opt_base_learning_rate"] == record["lr"]
        assert (events["opt_lamb_beta_1"], events["opt_lamb_beta_2"], events["opt_lamb_epsilon"]) == (0.9, 0.999, 1e-6)
        assert events["opt_lamb_weight_decay_rate"] == 5e-4 and events["opt_learning_rate_training_steps"] == record["steps"]


def test_the_report_shows_lambs_telemetry(runs):
    out, records = runs
    md = (out / "report" / "report.md").read_text()
    section = md.split("### Layer-wise telemetry")[1]
    assert all(record["run_id"] in section for record in records.values())
