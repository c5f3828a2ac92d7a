"""Models by name: torchvision's ResNet-50 and AlexNet, AlexNet-BN, and a tiny test CNN."""

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


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet50": _resnet50,
    "alexnet": _alexnet,
    "alexnet_bn": _alexnet_bn,
    "tiny_cnn": _tiny_cnn,
}


def build_model(name: str, num_classes: int) -> nn.Module:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return factory(num_classes)
