"""The compression-table models of Khodak et al. (2021): EigenDamage's CIFAR ResNet and VGG.

Table 1's "ResNet32" (``eigendamage_resnet32``, ~7.4M parameters at 10 classes) and "VGG19"
(``eigendamage_vgg19``) are the models of microsoft/fnl_paper ``EigenDamage-Pytorch/models/``,
not the akamaster ResNet-32 ×2 (:mod:`.resnet_cifar`):

- ResNet (models/resnet.py:48-154): widths 64/128/256, a 1×1 conv (no bias) + BN shortcut
  wherever the shape changes, Kaiming-normal (fan-in) convs and Linear, zero Linear bias.
- VGG (models/vgg.py:14-81): conv3×3-BN-ReLU stacks with max pools, no pool after the last
  stack, a 2×2 average pool and one Linear; convs N(0, 2/(k²·c_in)), Linear N(0, 0.01²).

Both keep the official names' structure where the official factorization reads them: the
stem conv and the classifier stay dense under the default ``skip``, every other conv
(downsample shortcuts included, main_pretrain.py:69-78) is factorized. Pools use ``ceil_mode``
and the head averages globally, which equals the official ops on 32×32 inputs and also runs
on 8×8 digits.
"""

from __future__ import annotations

import math
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_model
from .vgg import CONFIGS, vgg_features

RESNET_WIDTHS = (64, 128, 256)
# models/vgg.py:14-19: the VGG stacks without the pool after the last one
VGG_CONFIGS: dict[int, list[int | str]] = {depth: config[:-1] for depth, config in CONFIGS.items()}


class EDBasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN + (1×1 conv-BN shortcut when the shape changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        self.bn3: nn.BatchNorm2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))
            self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.bn3(self.downsample(x))
        return F.relu(out + shortcut)


class EigenDamageResNet(nn.Module):
    """ResNet-(6n+2) at widths 64/128/256: (N, in_channels, H, W) → logits (N, num_classes)."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n ≥ 1 (20, 32, 56, 110, …), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, RESNET_WIDTHS[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(RESNET_WIDTHS[0])
        stages, channels = [], RESNET_WIDTHS[0]
        for i, width in enumerate(RESNET_WIDTHS):
            blocks = []
            for j in range(n):
                blocks.append(EDBasicBlock(channels, width, 2 if i > 0 and j == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(channels, num_classes)
        for m in self.modules():  # models/resnet.py:18-28
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean((2, 3)))


class EigenDamageVGG(nn.Module):
    """VGG-``depth`` with BN: (N, in_channels, H, W) → logits (N, num_classes)."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.feature, channels = vgg_features(VGG_CONFIGS[depth], in_channels)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():  # models/vgg.py:68-81
            if isinstance(m, nn.Conv2d):
                k_h, k_w = m.kernel_size
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (k_h * k_w * m.in_channels)))
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.feature(x).mean((2, 3)))


for _depth in (20, 32, 56, 110):
    register_model(f"eigendamage_resnet{_depth}")(partial(EigenDamageResNet, _depth))
for _depth in VGG_CONFIGS:
    register_model(f"eigendamage_vgg{_depth}")(partial(EigenDamageVGG, _depth))
