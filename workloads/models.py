"""Models by name: torchvision's ResNet-50 and AlexNet, AlexNet-BN, a small AlexNet-BN for CPU
studies, and a tiny test CNN."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _resnet50(num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(num_classes=num_classes)


def _alexnet(num_classes: int) -> nn.Module:
    from torchvision.models import alexnet

    return alexnet(num_classes=num_classes)


def _alexnet_bn(num_classes: int) -> nn.Module:
    """AlexNet with BatchNorm after every convolution and hidden fully-connected layer, the
    LARS paper's AlexNet-BN. Derived from torchvision's definition so the layer shapes stay
    exactly torchvision's."""
    model = _alexnet(num_classes)
    model.features = _with_batchnorm(model.features, nn.Conv2d, nn.BatchNorm2d)
    hidden = list(model.classifier)
    last = max(i for i, layer in enumerate(hidden) if isinstance(layer, nn.Linear))
    model.classifier = nn.Sequential(
        *_with_batchnorm(nn.Sequential(*hidden[:last]), nn.Linear, nn.BatchNorm1d), *hidden[last:]
    )
    return model


def _with_batchnorm(block: nn.Sequential, layer_type: type, norm_type: type) -> nn.Sequential:
    layers: list[nn.Module] = []
    for layer in block:
        layers.append(layer)
        if isinstance(layer, layer_type):
            width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
            layers.append(norm_type(width))
    return nn.Sequential(*layers)


def _tiny_cnn(num_classes: int) -> nn.Module:
    """Two convolutions and a classifier, no BatchNorm or dropout: fast enough for
    multi-process tests, and exact under micro-batch splitting (no per-batch statistics)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def _alexnet_bn_mini(num_classes: int) -> nn.Module:
    """AlexNet-BN's pattern (five convolutions, three max-pools, two hidden fully-connected
    layers, BatchNorm after each) at about 1/8 of its width and for 32-px inputs: 0.5M
    parameters instead of 61M, so a batch-size study of many runs fits on a laptop CPU while
    LARS still sees eight weight layers of very different shapes."""

    def conv(c_in: int, c_out: int, k: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    def linear(n_in: int, n_out: int) -> list[nn.Module]:
        return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv(3, 24, 5), nn.MaxPool2d(2),
        *conv(24, 64, 5), nn.MaxPool2d(2),
        *conv(64, 96, 3), *conv(96, 64, 3), *conv(64, 64, 3),
        nn.AdaptiveMaxPool2d(4), nn.Flatten(),
        *linear(64 * 4 * 4, 256), *linear(256, 256),
        nn.Linear(256, num_classes),
    )  # fmt: skip


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet50": _resnet50,
    "alexnet": _alexnet,
    "alexnet_bn": _alexnet_bn,
    "alexnet_bn_mini": _alexnet_bn_mini,
    "tiny_cnn": _tiny_cnn,
}


# Smallest input each model accepts: AlexNet's stride-4 stem and three max-pools leave no
# feature map below 63 px.
MIN_IMAGE_SIZE = {"resnet50": 32, "alexnet": 63, "alexnet_bn": 63, "alexnet_bn_mini": 16, "tiny_cnn": 8}


def build_model(name: str, num_classes: int) -> nn.Module:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return factory(num_classes)
