"""Stage 5, query: every trained model's logits on every pool point, under A query views.

LiRA averages its score over several views of a point (the reference uses the image and its
mirror, matching its training augmentation). The views here are pixel shifts and a mirror for
images; the first view is always the point itself, which accuracy and poison fit use.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import torch

from truthserum.errors import ConfigError
from truthserum.train.ensemble import Ensemble


class QueryView(str, Enum):
    IDENTITY = "identity"
    SHIFT_LEFT = "shift-left"
    SHIFT_RIGHT = "shift-right"
    SHIFT_UP = "shift-up"
    SHIFT_DOWN = "shift-down"
    MIRROR = "mirror"


# (axis, step) of a one-pixel shift with zero fill, on (B, C, H, W) images.
_SHIFTS = {
    QueryView.SHIFT_LEFT: (3, -1),
    QueryView.SHIFT_RIGHT: (3, 1),
    QueryView.SHIFT_UP: (2, -1),
    QueryView.SHIFT_DOWN: (2, 1),
}


def check_views_fit_data(views: Sequence[QueryView], *, is_image: bool) -> None:
    """Shifts and mirrors need image data (the config already ensures identity comes first)."""
    if not is_image and any(view is not QueryView.IDENTITY for view in views):
        raise ConfigError("query.views other than 'identity' need image data (N, C, H, W)")


def apply_view(x: torch.Tensor, view: QueryView) -> torch.Tensor:
    """One view of a batch of points."""
    if view is QueryView.IDENTITY:
        return x
    if view is QueryView.MIRROR:
        return torch.flip(x, dims=(3,))
    axis, step = _SHIFTS[view]
    shifted = torch.roll(x, shifts=step, dims=axis)
    edge = 0 if step > 0 else x.shape[axis] - 1
    shifted.index_fill_(axis, torch.tensor([edge], device=x.device), 0.0)
    return shifted


@torch.no_grad()
def query_logits(
    ensemble: Ensemble, x: torch.Tensor, views: Sequence[QueryView], *, batch_size: int = 1024
) -> np.ndarray:
    """Logits of every model on every point under every view.

    Returns:
        ``(M, N, A, C)`` float32.
    """
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        per_view = [ensemble.forward_shared(apply_view(chunk, view)) for view in views]
        outputs.append(torch.stack(per_view, dim=2).cpu())
    return torch.cat(outputs, dim=1).numpy().astype(np.float32)
