"""1-D convolutional networks for signals (N, C, L), e.g. MNIST-1D (length 40).

Both keep every convolution an ``nn.Conv1d`` with ``bias=False`` before a BatchNorm, so their
(c_out, c_in, k) kernels are what the factorized families compress; the first conv and the
classifier stay dense under the default skip rule, as in the 2-D models.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_model

# (channels, stride) of the conv layers at width 1: 64 → 256 channels, length 40 → 5. Striding
# early, as MNIST-1D's reference CNN does (three stride-2 convs), keeps a run CPU-cheap.
CNN1D_PLAN = ((64, 2), (128, 2), (128, 1), (256, 2), (256, 1))
RESNET1D_STAGES = ((64, 1), (128, 2), (256, 2))


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> list[nn.Module]:
    """``Conv1d(k, stride, 'same'-style padding) → BatchNorm1d → ReLU``: (N, c_in, L) → (N, c_out, ⌈L/s⌉)."""
    return [
        nn.Conv1d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(),
    ]


@register_model("cnn1d")
class CNN1d(nn.Module):
    """Five conv-BN-ReLU layers (kernel 3) at widths (64, 128, 128, 256, 256)·width, three of stride 2,
    global average pooling and a Linear classifier: 373k parameters at width 1 (four factorizable
    convs hold 99% of them). ``length`` is accepted for data bundles that pass it and unused."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, length: int | None = None
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for base, stride in CNN1D_PLAN:
            out = _channels(base, width)
            layers += conv_bn_relu(channels, out, stride)
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(2))


class BasicBlock1d(nn.Module):
    """conv3-BN-ReLU-conv3-BN + shortcut, ReLU: (N, c_in, L) → (N, c_out, ⌈L/s⌉). The shortcut is the
    identity, or a 1-wide conv + BN where the shape changes (He et al. 2016, option B)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm1d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet1d")
class ResNet1d(nn.Module):
    """Stem conv3-BN-ReLU of stride 2, three stages of ``blocks`` basic blocks at (64, 128, 256)·width
    (strides 1, 2, 2), global average pooling, Linear: 440k parameters at width 1, blocks 1."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        blocks: int = 1,
        length: int | None = None,
    ) -> None:
        super().__init__()
        channels = _channels(RESNET1D_STAGES[0][0], width)
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, channels, stride=2))
        stages: list[nn.Module] = []
        for base, stride in RESNET1D_STAGES:
            out = _channels(base, width)
            for i in range(blocks):
                stages.append(BasicBlock1d(channels, out, stride if i == 0 else 1))
                channels = out
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.stages(self.stem(x)).mean(2))
