"""VGG with batch norm for CIFAR-sized inputs (Simonyan & Zisserman 2015, configurations A/B/D/E).

Pooling uses ``ceil_mode`` so the network also runs on inputs smaller than 32×32 (e.g. 8×8 digits);
the classifier is a single Linear layer on globally averaged features, as in CIFAR VGG variants.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from .registry import register_model

CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


def vgg_features(config: list[int | str], in_channels: int, width: float = 1.0) -> tuple[nn.Sequential, int]:
    """conv3×3-BN-ReLU per channel count of ``config`` (scaled by ``width``), a ceil-mode 2×2 max
    pool per ``"M"``: the stack and its output channels."""
    layers: list[nn.Module] = []
    channels = in_channels
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            out = max(1, round(v * width))
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            channels = out
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """(N, in_channels, H, W) → logits (N, num_classes); channel counts scaled by ``width``."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.features, channels = vgg_features(CONFIGS[depth], in_channels, width)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


for _depth in CONFIGS:
    register_model(f"vgg{_depth}")(partial(VGG, _depth))
