"""Model architectures. Each is an ordinary ``nn.Module`` for one model; the ensemble code
stacks the parameters of many of them and runs them as one batched computation."""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn
from torch.nn import functional as F

from truthserum.errors import ConfigError


class Architecture(str, Enum):
    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"
    WRN = "wrn"
    OWN = "own"  # the user's own model, passed from Python (truthserum.audit_membership)


WRN_GROUPS = 16
"""Groups of every GroupNorm in the Wide-ResNet. Every WRN width is a multiple of 16 (16, then
16k, 32k and 64k channels), so 16 groups always divide it; at widen factor 1 a group is one
channel."""


def check_wrn_depth(depth: int) -> int:
    """The residual blocks per stage of a WRN of ``depth`` layers: ``(depth - 4) / 6``.

    Raises:
        ConfigError: ``depth`` is not 10, 16, 22, 28, ...
    """
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"model.depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    return (depth - 4) // 6


class _WideBlock(nn.Module):
    """A pre-activation residual block: norm, ReLU, 3x3 conv, norm, ReLU, 3x3 conv, plus the
    input (through a 1x1 conv when the width or resolution changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(WRN_GROUPS, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(WRN_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = (
            None if in_channels == out_channels and stride == 1
            else nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-widen (Zagoruyko and Komodakis 2016) with GroupNorm instead of BatchNorm.

    A 3x3 stem conv to 16 channels, three stages of ``(depth - 4) / 6`` residual blocks of
    16k, 32k and 64k channels (the last two halve the resolution), then norm, ReLU, global
    average pooling and a linear classifier.

    Why GroupNorm: the ensemble runs M models as ``vmap`` over ``functional_call``, and
    BatchNorm's running statistics are buffers updated in place during training, which ``vmap``
    cannot do. BatchNorm in training mode at query time would be worse still: a point's logits
    would depend on the other points queried with it, and the attacks compare one point's
    logits across models. GroupNorm normalises each example by its own statistics, so a model's
    output on a point is a function of that point alone, in training and at query time.
    """

    def __init__(self, in_channels: int, num_classes: int, *, depth: int, widen: int):
        super().__init__()
        blocks = check_wrn_depth(depth)
        if widen < 1:
            raise ConfigError(f"model.widen must be at least 1, got {widen}")
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        channels = 16
        for stage, out_channels in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_WideBlock(channels, out_channels, stride))
                channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(WRN_GROUPS, channels)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        out = F.relu(self.norm(out)).mean(dim=(-2, -1))
        return self.classifier(out)


def build_model(
    architecture: Architecture,
    *,
    feature_shape: tuple[int, ...],
    num_classes: int,
    hidden_sizes: tuple[int, ...] = (256,),
    channels: tuple[int, ...] = (16, 32),
    depth: int | None = None,
    widen: int | None = None,
) -> nn.Module:
    """One freshly initialised model (initialisation draws from torch's global generator).

    Args:
        architecture: which family.
        feature_shape: one point's shape: ``(D,)`` or ``(C, H, W)``.
        num_classes: output width.
        hidden_sizes: MLP hidden widths.
        channels: CNN convolution widths; each conv (3x3, padding 1) is followed by ReLU and
            2x2 max pooling, then a linear classifier.
        depth, widen: the Wide-ResNet's layers (6n + 4) and widen factor k; required for it
            (no default here, so a caller that forgets them fails instead of silently building
            another size than the config's ``model.depth`` and ``model.widen``).
    """
    if architecture is Architecture.OWN:
        raise ConfigError(
            "model.architecture 'own' is the model passed from Python (truthserum.audit_membership(model=...)); "
            "a config file names logreg, mlp, cnn or wrn"
        )
    flat = int(torch.tensor(feature_shape).prod())
    if architecture is Architecture.LOGREG:
        return nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))
    if architecture is Architecture.MLP:
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
    if architecture in (Architecture.CNN, Architecture.WRN) and len(feature_shape) != 3:
        raise ConfigError(
            f"model.architecture '{architecture.value}' needs image data (C, H, W), "
            f"got feature shape {feature_shape}"
        )
    if architecture is Architecture.WRN:
        if depth is None or widen is None:
            raise ValueError("build_model: architecture 'wrn' needs depth and widen (model.depth, model.widen)")
        return WideResNet(feature_shape[0], num_classes, depth=depth, widen=widen)
    if architecture is Architecture.CNN:
        in_channels, height, width = feature_shape
        layers = []
        for out_channels in channels:
            if height < 2 or width < 2:
                raise ConfigError(f"model.channels has too many layers for {feature_shape} images")
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels, height, width = out_channels, height // 2, width // 2
        layers += [nn.Flatten(), nn.Linear(in_channels * height * width, num_classes)]
        return nn.Sequential(*layers)
    raise ConfigError(f"unknown architecture {architecture!r}")
