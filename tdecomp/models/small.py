"""Small models for fast experiments and tests (CPU, seconds per epoch on 8×8 digits)."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model


@register_model("mlp")
class MLP(nn.Module):
    """Flatten → [Linear-ReLU]×depth → Linear. Input (N, C, image_size, image_size), or
    (N, C, length) signals when ``length`` is given."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 8,
        hidden: int = 256,
        depth: int = 2,
        length: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_channels * (length if length is not None else image_size * image_size)
        for _ in range(depth):
            layers += [nn.Linear(features, hidden), nn.ReLU()]
            features = hidden
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_model("cnn")
class SmallCNN(nn.Module):
    """Five 3×3 conv-BN-ReLU layers (two of stride 2) at widths (32, 64, 64, 128, 128)·width,
    global average pooling and a Linear classifier. Four convs are factorizable by default
    (the first conv and the classifier stay dense)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        plan = [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]
        layers: list[nn.Module] = []
        channels = in_channels
        for w, stride in plan:
            out = max(1, round(w * width))
            layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean((2, 3)))
