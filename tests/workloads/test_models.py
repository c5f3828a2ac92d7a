"""Models by name (workloads/models.py): shapes, sizes, and AlexNet-BN's structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import alexnet as tv_alexnet

from larsbench.workloads.models import MIN_IMAGE_SIZE as MODEL_MIN_IMAGE_SIZE
from larsbench.workloads.models import MODELS, build_model


@pytest.fixture(scope="module")
def alexnet_bn_7():
    torch.manual_seed(0)
    return build_model("alexnet_bn", 7)


def _param_count(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet50_has_torchvisions_published_parameter_count():
    model = build_model("resnet50", 1000)
    assert _param_count(model) == 25_557_032
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 1000)


def test_alexnet_has_torchvisions_published_parameter_count():
    assert _param_count(build_model("alexnet", 1000)) == 61_100_840


@pytest.mark.parametrize(
    ("name", "num_classes"), [("resnet50", 10), ("alexnet", 5), ("alexnet_bn_mini", 10), ("tiny_cnn", 3)]
)
def test_logits_shape_at_the_minimum_image_size(name, num_classes):
    torch.manual_seed(0)
    size = MODEL_MIN_IMAGE_SIZE[name]
    assert size == {"resnet50": 32, "alexnet": 63, "alexnet_bn_mini": 16, "tiny_cnn": 8}[name]
    model = build_model(name, num_classes)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))  # training mode (batch statistics), as in a step
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()


def test_alexnet_bn_logits_at_63_and_64_px_in_train_and_eval(alexnet_bn_7):
    for size in (63, 64):
        x = torch.randn(2, 3, size, size)
        assert alexnet_bn_7.train()(x).shape == (2, 7)
        with torch.no_grad():
            assert alexnet_bn_7.eval()(x).shape == (2, 7)
    alexnet_bn_7.train()


@pytest.mark.parametrize("name", ["alexnet", "alexnet_bn"])
def test_alexnet_below_63_px_has_no_feature_map_left(name, alexnet_bn_7):
    model = alexnet_bn_7 if name == "alexnet_bn" else build_model(name, 7)
    with torch.no_grad(), pytest.raises(RuntimeError):
        model.eval()(torch.randn(1, 3, 62, 62))


def test_alexnet_bn_mini_keeps_alexnet_bns_layer_pattern_at_a_fraction_of_its_size():
    model = build_model("alexnet_bn_mini", 10)
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d))]
    assert kinds.count("Conv2d") == 5 and kinds.count("Linear") == 3
    assert kinds.count("BatchNorm2d") == 5 and kinds.count("BatchNorm1d") == 2  # none after the last layer
    assert 400_000 < _param_count(model) < 600_000
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_tiny_cnn_builds_with_num_classes_and_has_no_batchnorm():
    model = build_model("tiny_cnn", 4)
    assert model(torch.randn(3, 3, 8, 8)).shape == (3, 4)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _leaves(model):
    return [m for m in model.modules() if not list(m.children())]


def test_alexnet_bn_has_a_batchnorm_after_every_conv_and_hidden_linear(alexnet_bn_7):
    leaves = _leaves(alexnet_bn_7)
    convs = [m for m in leaves if isinstance(m, nn.Conv2d)]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    bn2d = [m for m in leaves if isinstance(m, nn.BatchNorm2d)]
    bn1d = [m for m in leaves if isinstance(m, nn.BatchNorm1d)]
    assert len(convs) == 5 and len(linears) == 3
    assert len(bn2d) == len(convs)
    assert len(bn1d) == len(linears) - 1
    # each norm sits directly after its layer and normalises that layer's outputs
    for i, layer in enumerate(leaves):
        if isinstance(layer, nn.Conv2d):
            nxt = leaves[i + 1]
            assert isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == layer.out_channels
        elif isinstance(layer, nn.Linear) and layer is not linears[-1]:
            nxt = leaves[i + 1]
            assert isinstance(nxt, nn.BatchNorm1d) and nxt.num_features == layer.out_features
    assert leaves[-1] is linears[-1] and linears[-1].out_features == 7  # logits stay un-normalised


def test_alexnet_bn_otherwise_matches_torchvisions_alexnet(alexnet_bn_7):
    reference = tv_alexnet(num_classes=7)

    def signature(m):
        if isinstance(m, nn.Conv2d):
            return ("conv", tuple(m.weight.shape), m.stride, m.padding, m.bias is not None)
        if isinstance(m, nn.Linear):
            return ("linear", tuple(m.weight.shape), m.bias is not None)
        if isinstance(m, nn.MaxPool2d):
            return ("maxpool", m.kernel_size, m.stride)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return ("avgpool", m.output_size)
        return (type(m).__name__,)

    ours = [signature(m) for m in _leaves(alexnet_bn_7) if not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    theirs = [signature(m) for m in _leaves(reference)]
    assert ours == theirs
    bn_params = sum(
        p.numel() for m in alexnet_bn_7.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    )  # fmt: skip
    assert _param_count(alexnet_bn_7) == _param_count(reference) + bn_params


def test_unknown_model_name_raises():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet51", 10)
    assert set(MODELS) == set(MODEL_MIN_IMAGE_SIZE)
