"""MLPerf's reference convergence points (RCPs) for ResNet-50 on ImageNet: the epochs MLCommons'
reference runs needed to reach 75.9% top-1 at each global batch, as the installed
``mlperf_logging`` ships them (``rcp_checker/training_4.0.0/rcps_resnet.json``, 4.0.0 being the
last ruleset with ResNet) and as its RCP checker reads them: per batch the olympic mean of the
reference runs, the smallest mean a submission may show (a one-sided t-test at 5%), and for a
batch between reference batches the checker's interpolation of its pruned set (the fastest
convergence at each batch).

They stand in for a user's own epochs to target where the runs have none at a batch
(``predict``), and they judge a run's own epochs (``report``): more epochs than the reference
mean means the recipe converges slower than MLPerf's at that batch; fewer than the minimum is
what the RCP checker rejects in a submission.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

RULESET = "4.0.0"
BENCHMARK = "resnet"
TARGET_TOP1 = 0.759  # MLPerf ResNet-50's quality target
IMAGENET_TRAIN_IMAGES = 1_281_167  # MLPerf's epoch for ResNet-50: the ImageNet-1k train set
IMAGENET_CLASSES = 1000


@dataclass
class EpochsSource:
    epochs: float
    train_images: int
    target_top1: float
    source: str  # "runs" (this workload's own) or "rcp" (MLPerf's reference points)
    detail: str


@dataclass(frozen=True)
class Reference:
    global_batch: int
    mean_epochs: float  # olympic mean of the reference runs
    min_epochs: float  # the smallest mean the RCP checker accepts
    how: str  # "RCP at B=..." or "interpolated between B=... and B=..."


@functools.cache
def _checker():
    from mlperf_logging.rcp_checker.rcp_checker import RCP_Checker

    return RCP_Checker("training", RULESET, BENCHMARK, False)


def is_imagenet_resnet50(s: dict[str, Any]) -> bool:
    """A ResNet-50 run on an ImageNet-1k ImageFolder tree (1000 classes) with LARS: what the RCPs
    are reference runs of."""
    return s.get("model") == "resnet50" and s.get("dataset") == "imagefolder" and s.get("num_classes") == IMAGENET_CLASSES and s.get("optimizer") == "lars"


def reference(global_batch: int, exact_from_full: bool = True) -> Reference | None:
    """The reference at ``global_batch``: an RCP measured at that batch (``exact_from_full``: any
    published one, else only those the checker keeps after pruning), else the checker's
    interpolation between its pruned neighbours; None outside their range."""
    checker = _checker()
    exact = checker._find_rcp(global_batch, "full_rcps" if exact_from_full else "pruned_rcps")
    if exact is not None:
        return Reference(global_batch, float(exact["RCP Mean"]), float(exact["Min Epochs"]), f"RCP at B={global_batch}")
    low = checker._find_top_min_rcp(global_batch, "pruned_rcps")
    high = checker._find_bottom_max_rcp(global_batch, "pruned_rcps")
    if low is None or high is None:
        return None
    _, interp = checker._create_interp_rcp(global_batch, low, high)
    return Reference(global_batch, float(interp["RCP Mean"]), float(interp["Min Epochs"]),
                     f"interpolated between the RCPs at B={low['BS']} and B={high['BS']}")  # fmt: skip


def epochs_from_rcp(settings: dict[str, Any], global_batch: int) -> EpochsSource | None:
    """Epochs to 75.9% at ``global_batch`` from the RCPs, for ImageNet ResNet-50 with LARS."""
    if not is_imagenet_resnet50(settings):
        return None
    found = reference(global_batch)
    if found is None:
        return None
    return EpochsSource(found.mean_epochs, IMAGENET_TRAIN_IMAGES, TARGET_TOP1, "rcp",
                        f"MLPerf training {RULESET} RCP mean ({found.how}), LARS reference recipe")  # fmt: skip


def judge_epochs(settings: dict[str, Any], global_batch: int, epochs: float, target_top1: float | None) -> str | None:
    """What the RCPs say of a run's epochs to target, as the RCP checker judges (its pruned set):
    None when they do not apply or the run is within them."""
    if not is_imagenet_resnet50(settings) or target_top1 is None or abs(target_top1 - TARGET_TOP1) > 1e-9:
        return None
    found = reference(global_batch, exact_from_full=False)
    if found is None:
        return None
    if epochs > found.mean_epochs:
        return (f"needed {epochs:.3g} epochs to {TARGET_TOP1:.1%}, more than MLPerf's reference convergence allows at "
                f"B={global_batch} ({found.mean_epochs:.3g} epochs, {found.how}): the recipe converges slower than MLPerf's")  # fmt: skip
    if epochs < found.min_epochs:
        return (f"reached {TARGET_TOP1:.1%} in {epochs:.3g} epochs, fewer than MLCommons' RCP checker accepts at "
                f"B={global_batch} (at least {found.min_epochs:.3g}, {found.how}): a submission would fail the RCP check")  # fmt: skip
    return None


def rcp_blocks(records: list[dict[str, Any]]) -> list:
    """The report's marks for ImageNet ResNet-50 runs whose epochs to 75.9% the RCPs reject."""
    from larsbench.reports.load import settings
    from larsbench.reports.render import Bullets, Heading, Text

    judged, marks = 0, []
    for r in records:
        s = settings(r)
        if r.get("status") != "ok" or not is_imagenet_resnet50(s) or r.get("epochs_to_accuracy") is None:
            continue
        judged += 1
        verdict = judge_epochs(s, int(r["global_batch_size"]), float(r["epochs_to_accuracy"]), r.get("target_top1"))
        if verdict:
            marks.append(f"{r.get('label')} (run {r.get('run_id')}) {verdict}.")
    if not judged:
        return []
    text = (f"{judged} ImageNet ResNet-50 run(s) reached their target; each run's epochs to 75.9% against MLPerf's reference "
            f"convergence points (training {RULESET}, as MLCommons' RCP checker reads them; one run against the reference mean, "
            "where the checker wants the olympic mean of 5).")  # fmt: skip
    return [Heading("MLPerf reference convergence", 4), Text(text), Bullets(marks or ["Every judged run is within the RCPs."])]
