"""Training augmentation: the standard CIFAR recipe (random horizontal flip, then a random crop
of the image padded by 4 pixels on every side), applied independently to every example of every
model of an ensemble in one batched computation.

Randomness is split from the image work. :func:`draw_augmentations` draws, from each model's own
generator, one flip and one crop offset per training example the model sees, in the order of
that model's batches; :func:`augment_images` then applies given draws to a ``(M, B, C, H, W)``
batch with no Python loop over models or examples. A model's draws depend only on its own
generator and its own batches, never on the other models of its shard, so it trains the same
whichever shard it falls in, and the same seed gives the same numbers.

Padding reflects the border instead of the usual zeros: a zero frame around a standardised image
is a value the image never contains, and reflection keeps crops looking like photos. Either is a
common choice; the attack only needs the models to train well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch.nn import functional as F

from truthserum.errors import ConfigError

CROP_PADDING = 4
"""Pixels of reflected border around each image before the random crop; a crop shifts the image
by up to this many pixels along each axis (the usual 4 for 32x32 CIFAR-10 images)."""


class Augment(str, Enum):
    """The augmentation of training batches (never of queries: views are the query's own)."""

    NONE = "none"
    CROP = "crop"  # random crop of the padded image only: for images whose mirror is another class
    FLIP_CROP = "flip-crop"  # random horizontal flip, then random crop: the CIFAR-10 recipe

    @property
    def flips(self) -> bool:
        return self is Augment.FLIP_CROP


def check_augment_fits_data(augment: Augment, feature_shape: tuple[int, ...]) -> None:
    """Refuse augmentation of data that are not images large enough to crop.

    Raises:
        ConfigError: ``augment`` is on and a point is not ``(C, H, W)`` with H and W above
            :data:`CROP_PADDING` (a reflected border must be narrower than the image).
    """
    if augment is Augment.NONE:
        return
    if len(feature_shape) != 3:
        raise ConfigError(
            f"train.augment '{augment.value}' needs image data (C, H, W), got feature shape {feature_shape}"
        )
    if min(feature_shape[1:]) <= CROP_PADDING:
        raise ConfigError(
            f"train.augment '{augment.value}' needs images larger than {CROP_PADDING}x{CROP_PADDING} "
            f"pixels (it pads and crops by {CROP_PADDING}), got {feature_shape}"
        )


@dataclass(frozen=True)
class AugmentDraws:
    """Per-example draws for one epoch, laid out like its index batches ``(steps, M, width)``.

    ``flip`` says whether to mirror; ``top`` and ``left`` place the crop window inside the padded
    image (``CROP_PADDING`` each is the unshifted image). Padding slots get the identity.
    """

    flip: np.ndarray
    top: np.ndarray
    left: np.ndarray


def draw_augmentations(
    batches: np.ndarray, rngs: Sequence[np.random.Generator], augment: Augment
) -> AugmentDraws:
    """Draw one epoch's flips and crop offsets, each model from its own generator.

    Args:
        batches: the epoch's ``(steps, M, width)`` indices, -1 for padding.
        rngs: per model, its augmentation generator.
        augment: the mode (its flips are drawn only when it flips, so ``crop`` and
            ``flip-crop`` share nothing but the layout).

    Returns:
        Draws for every slot; model m consumes exactly one flip (if any) and one pair of
        offsets per training example, in the order of its own batches (step by step), so the
        width that the other models impose on the batch never changes its draws.
    """
    steps, num_models, width = batches.shape
    if len(rngs) != num_models:
        raise ValueError(f"{num_models} models but {len(rngs)} augmentation generators")
    flip = np.zeros(batches.shape, dtype=bool)
    top = np.full(batches.shape, CROP_PADDING, dtype=np.int64)
    left = np.full(batches.shape, CROP_PADDING, dtype=np.int64)
    for model, rng in enumerate(rngs):
        valid = batches[:, model] >= 0  # (steps, width); its True cells in row-major order
        count = int(valid.sum())
        if augment.flips:
            flip[:, model][valid] = rng.random(count) < 0.5
        offsets = rng.integers(0, 2 * CROP_PADDING + 1, size=(count, 2))
        top[:, model][valid] = offsets[:, 0]
        left[:, model][valid] = offsets[:, 1]
    return AugmentDraws(flip=flip, top=top, left=left)


def augment_images(
    x: torch.Tensor, flip: torch.Tensor, top: torch.Tensor, left: torch.Tensor
) -> torch.Tensor:
    """Flip and crop every image of a batch by its own draws; ``x`` itself is never modified.

    Args:
        x: ``(*lead, C, H, W)`` images, e.g. ``(M, B, C, H, W)``.
        flip: ``lead``-shaped bool, mirror left to right first.
        top, left: ``lead``-shaped ints in ``0..2 * CROP_PADDING``, the crop window's corner in
            the image padded by reflection with ``CROP_PADDING`` pixels on every side.

    Returns:
        A new tensor shaped like ``x``: pixel (i, j) of image k is pixel
        ``(top[k] + i, left[k] + j)`` of its (flipped) padded image.
    """
    *lead, channels, height, width = x.shape
    x = torch.where(flip[..., None, None, None], x.flip(-1), x)
    pad = CROP_PADDING
    # F.pad's reflect mode takes (N, C, H, W): fold the leading axes into N and back again
    padded = F.pad(x.reshape(-1, channels, height, width), (pad, pad, pad, pad), mode="reflect")
    padded = padded.view(*lead, channels, height + 2 * pad, width + 2 * pad)
    # Two gathers pick each image's window: its rows, then its columns. The index tensors are
    # broadcast views (no copy per channel or pixel).
    rows = top[..., None] + torch.arange(height, device=x.device)  # (*lead, H)
    rows = rows[..., None, :, None].expand(*lead, channels, height, width + 2 * pad)
    padded = padded.gather(-2, rows)
    cols = left[..., None] + torch.arange(width, device=x.device)  # (*lead, W)
    cols = cols[..., None, None, :].expand(*lead, channels, height, width)
    return padded.gather(-1, cols)
