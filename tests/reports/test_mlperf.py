"""MLPerf's own tools on the suite's output: the compliance checker on real event logs (ResNet-50
with LARS: the ResNet rules; AlexNet: the common rules) and the summarizer's olympic score."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlperf_logging.compliance_checker import mlp_parser

from larsbench.core.results import read_records
from larsbench.reports.mlperf import check_event_log, score
from tests.conftest import REPO, larsbench


def test_the_score_is_the_olympic_mean_of_five_and_says_when_there_are_too_few():
    five = score([600.0, 660.0, 720.0, 780.0, 840.0], "resnet50")  # 10 to 14 minutes
    assert five.minutes == pytest.approx(12.0) and five.required == 5 and five.note == "olympic mean"
    one_failed = score([600.0, 660.0, 720.0, 780.0, None], "resnet50")  # the failed run counts as the slowest
    assert one_failed.minutes == pytest.approx((11 + 12 + 13) / 3) and one_failed.not_converged == 1
    assert score([600.0, None, 720.0, None, 840.0], "resnet50").minutes is None
    few = score([600.0, 660.0], "alexnet")
    assert few.minutes is None and few.note == "too few runs: 2 of the 5 MLPerf requires"


SMALL = ["--dataset", "generated", "--num-classes", "4", "--train-images-per-class", "8", "--val-images-per-class", "4",
         "--micro-batch", "8", "--epochs", "2", "--warmup-epochs", "0.5", "--target-top1", "0.2", "--device", "cpu",
         "--compute-probe-steps", "0"]  # fmt: skip


@pytest.mark.multiprocess
def test_event_logs_pass_mlcommons_compliance_checker(tmp_path):
    runs = {"resnet": ["--model", "resnet50", "--image-size", "32"], "alexnet": ["--model", "alexnet", "--image-size", "64"]}
    logs = {}
    for name, args in runs.items():
        out = tmp_path / name
        done = larsbench("run", *args, *SMALL, "--output", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        (record,) = read_records(out)
        logs[name] = (out / record["event_log"], record)

    path, record = logs["resnet"]
    # The official command line, with the ResNet rules that a declared benchmark enables.
    official = subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", "4.0.0", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    output = official.stdout + official.stderr
    assert official.returncode == 0 and "training_4.0.0/open_resnet.yaml" in output and "SUCCESS" in output, output
    events = {line.key: line.value["value"] for line in mlp_parser.parse_file(str(path), ruleset="4.0.0")[0]}
    assert events["submission_benchmark"] == "resnet" and events["submission_division"] == "open"
    assert events["submission_status"] == "research" and events["opt_name"] == "lars"
    assert events["lars_opt_base_learning_rate"] == record["lr"] and events["lars_epsilon"] == 0.0
    assert events["lars_opt_momentum"] == 0.9 and events["lars_opt_weight_decay"] == 5e-4
    assert events["lars_opt_learning_rate_decay_poly_power"] == 2.0 and events["global_batch_size"] == 8
    assert events["lars_opt_learning_rate_warmup_epochs"] == 0.5 and events["eval_samples"] == 16

    path, record = logs["alexnet"]
    checked = check_event_log(path, "alexnet")
    assert checked.passed and "common rules" in checked.rules, checked.output
    assert "submission_benchmark" not in path.read_text()  # AlexNet has no MLPerf benchmark to claim
