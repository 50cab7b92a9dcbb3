"""Model architectures. Each is an ordinary ``nn.Module`` for one model; the ensemble code
stacks the parameters of many of them and runs them as one batched computation."""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from truthserum.errors import ConfigError


class Architecture(str, Enum):
    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"


def build_model(
    architecture: Architecture,
    *,
    feature_shape: tuple[int, ...],
    num_classes: int,
    hidden_sizes: tuple[int, ...] = (256,),
    channels: tuple[int, ...] = (16, 32),
) -> nn.Module:
    """One freshly initialised model (initialisation draws from torch's global generator).

    Args:
        architecture: which family.
        feature_shape: one point's shape: ``(D,)`` or ``(C, H, W)``.
        num_classes: output width.
        hidden_sizes: MLP hidden widths.
        channels: CNN convolution widths; each conv (3x3, padding 1) is followed by ReLU and
            2x2 max pooling, then a linear classifier.
    """
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
    if architecture is Architecture.CNN:
        if len(feature_shape) != 3:
            raise ConfigError(
                f"model.architecture 'cnn' needs image data (C, H, W), got feature shape {feature_shape}"
            )
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
