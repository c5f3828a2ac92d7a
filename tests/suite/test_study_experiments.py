"""The bundled large-batch studies resolve to the runs they promise: four recipes over a
geometric batch series of at least 32× (the ImageNet ones 256 to 32K), every global batch
made of workers × micro-batch × accumulation."""

from __future__ import annotations

import pytest

from larsbench.core.spec import recipe_label
from larsbench.suite.config import bundled_experiment, load_experiment


@pytest.fixture
def imagenet(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
    return str(tmp_path)


@pytest.mark.parametrize(
    "name, batches, models",
    [
        ("study-cpu", [16, 32, 64, 128, 256, 512], {"alexnet_bn_mini"}),
        ("study-imagenet-alexnet-bn", [256 << i for i in range(8)], {"alexnet_bn"}),
        ("study-imagenet-resnet50", [256 << i for i in range(8)], {"resnet50"}),
    ],
)
def test_a_study_crosses_four_recipes_with_a_geometric_batch_series(name, batches, models, imagenet):
    overrides = {} if name == "study-cpu" else {"data_dir": imagenet}
    runs = load_experiment(bundled_experiment(name), overrides).runs
    assert {r.model for r in runs} == models
    by_recipe: dict[str, list[int]] = {}
    for r in runs:
        assert r.world_size * r.micro_batch_size * r.accumulation_steps == r.global_batch_size
        by_recipe.setdefault(recipe_label(r.optimizer, r.scaling_rule, r.warmup_epochs), []).append(r.global_batch_size)
    assert len(by_recipe) == 4
    assert {k.split("+")[0].split("-")[0] for k in by_recipe} == {"lars", "sgd"}
    assert {"sgd-linear", "sgd-sqrt"} <= set(by_recipe)
    assert any(k.startswith("sgd-linear+warmup") for k in by_recipe)
    for series in by_recipe.values():
        assert sorted(series) == batches
    assert batches[-1] / batches[0] >= 32
    # One epoch budget and one target per study: the comparison is at equal work.
    assert len({r.epochs for r in runs}) == 1 and len({r.target_top1 for r in runs}) == 1


def test_imagenet_studies_use_the_papers_settings(imagenet):
    for name in ("study-imagenet-alexnet-bn", "study-imagenet-resnet50"):
        for r in load_experiment(bundled_experiment(name), {"data_dir": imagenet}).runs:
            assert (r.trust_coefficient, r.weight_decay, r.momentum, r.poly_power) == (0.001, 5e-4, 0.9, 2.0)
            assert r.world_size <= 64 and r.micro_batch_size == 128
