"""Stage 5, query: every trained model's logits on every pool point, under A query views.

LiRA averages its score over several views of a point (the reference uses the image and its
mirror, matching its training augmentation). A view here is a small pixel shift of an image,
optionally of its mirror; the first view is always the point itself, which accuracy and poison
fit use.

Views are named in a config in one of two ways: an explicit list of the named views in
:class:`QueryView`, or a count K that takes the first K views of :func:`generate_views`.

Noise views (``query.noise_views``, any data, tables included) are the point plus Gaussian noise
of a stated scale per feature, as in the label-only attack of Choquette-Choo et al. (ICML 2021),
which queries random perturbations where no augmentation fits the data: a model that trained on
a point labels its neighbourhood right more robustly, so counting right answers over K noisy
queries turns one bit per model into a count from 0 to K+1. Noise view k draws the same noise
for a given point (by its pool index) in every model, condition, run and batch (a fixed stream
per view and block of :data:`NOISE_BLOCK` indices), so every model answers the same queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F

from truthserum import seeding
from truthserum.data.datasets import DataSource
from truthserum.errors import ConfigError
from truthserum.train.ensemble import Ensemble

NOISE_BLOCK = 1024  # pool indices per draw of a noise view's noise (so it does not depend on batch sizes)
MAX_SHIFT = 2
"""Largest shift, in pixels along each axis, that :func:`generate_views` makes.

Two pixels is already a quarter of an 8x8 ``digits`` image; larger shifts move so much of a small
image out of frame that the view says little about the point itself."""


@dataclass(frozen=True)
class View:
    """One view of an image: mirror it (if ``mirror``), then shift it by ``(dx, dy)`` pixels.

    ``dx > 0`` moves the content right and ``dy > 0`` moves it down; pixels shifted in are zero.
    Mirroring first means ``(dx, dy)`` is always the motion seen in the final image, whichever
    way it faces.
    """

    dx: int = 0
    dy: int = 0
    mirror: bool = False
    noise: float = 0.0  # a noise view: Gaussian noise of this standard deviation per feature
    draw: int = 0  # which noise view (each draws its own noise)

    @property
    def is_identity(self) -> bool:
        return self == IDENTITY

    @property
    def name(self) -> str:
        """``identity``, ``mirror``, ``shift(+1,0)``, ``mirror+shift(-1,+2)`` or ``noise(0.1)#3``."""
        if self.noise:
            return f"noise({self.noise:g})#{self.draw}"
        if self.dx == 0 and self.dy == 0:
            return "mirror" if self.mirror else "identity"
        shift = f"shift({_signed(self.dx)},{_signed(self.dy)})"
        return f"mirror+{shift}" if self.mirror else shift


IDENTITY = View()


def _signed(value: int) -> str:
    return f"{value:+d}" if value else "0"


class QueryView(str, Enum):
    """The views a config may list by name (``query.views``)."""

    IDENTITY = "identity"
    SHIFT_LEFT = "shift-left"
    SHIFT_RIGHT = "shift-right"
    SHIFT_UP = "shift-up"
    SHIFT_DOWN = "shift-down"
    MIRROR = "mirror"

    @property
    def view(self) -> View:
        return _NAMED_VIEWS[self]


_NAMED_VIEWS = {
    QueryView.IDENTITY: IDENTITY,
    QueryView.SHIFT_LEFT: View(dx=-1),
    QueryView.SHIFT_RIGHT: View(dx=1),
    QueryView.SHIFT_UP: View(dy=-1),
    QueryView.SHIFT_DOWN: View(dy=1),
    QueryView.MIRROR: View(mirror=True),
}


def _shift_order(shift: tuple[int, int]) -> tuple[int, int, int, int]:
    """Nearest shifts first (squared distance), then horizontal before vertical, up before down,
    left before right: identity, left, right, up, down, then the four one-pixel diagonals, ..."""
    dx, dy = shift
    return (dx * dx + dy * dy, abs(dy), dy, dx)


_SHIFTS = tuple(
    sorted(
        ((dx, dy) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1)),
        key=_shift_order,
    )
)


def max_views(*, flip: bool) -> int:
    """How many views :func:`generate_views` can make: every shift up to :data:`MAX_SHIFT`
    pixels along each axis (25), and as many again mirrored when ``flip``."""
    return len(_SHIFTS) * (2 if flip else 1)


def generate_views(count: int, *, flip: bool) -> tuple[View, ...]:
    """The first ``count`` views in a fixed order, so a larger count only adds views.

    Shifts go nearest first (see :func:`_shift_order`): identity; the one-pixel shifts left,
    right, up, down; the one-pixel diagonals; the two-pixel shifts along an axis; the shifts by
    (2, 1); the two-pixel diagonals. With ``flip`` each shift is followed by its mirrored twin, so
    the order starts identity, mirror, left, mirrored left, ... Counts that end a ring of equally
    distant shifts give a view set symmetric under left/right and up/down: 1, 5, 9, 13, 21, 25
    (twice those with ``flip``).

    Raises:
        ConfigError: ``count`` is below 1 or above :func:`max_views`.
    """
    limit = max_views(flip=flip)
    if not 1 <= count <= limit:
        raise ConfigError(
            f"query.count must lie in 1..{limit} (shifts up to {MAX_SHIFT} pixels"
            f"{', each also mirrored' if flip else ''}), got {count}"
        )
    views = [
        View(dx, dy, mirror) for dx, dy in _SHIFTS for mirror in ((False, True) if flip else (False,))
    ]
    return tuple(views[:count])


def check_views_fit_data(views: Sequence[View], *, is_image: bool, source: DataSource) -> None:
    """Refuse views that do not keep a point's label, before any model is trained.

    Shifts and mirrors need image data, and mirrors need images whose mirror is the same class:
    a mirrored digit is not the same digit, so the built-in digit sets refuse them. The config
    already ensures identity comes first.
    """
    if not is_image and any(not view.is_identity and not view.noise for view in views):
        raise ConfigError("query views other than 'identity' need image data (N, C, H, W); tables and other "
                          "vectors may use noise views (query.noise_views)")
    if any(view.mirror for view in views) and not source.mirror_keeps_label:
        raise ConfigError(
            f"query: mirrored views do not suit data.source '{source.value}': a mirrored digit is "
            "not the same digit (use flip: false and no 'mirror' view)"
        )


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Shift the last two axes by ``(dx, dy)`` with zero fill: pad on the side the content moves
    away from, then crop the original size (any shift, even past the edge, gives a new tensor)."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


def noise_views(count: int, scale: float) -> tuple[View, ...]:
    """``count`` noise views of standard deviation ``scale``, drawn 1..count."""
    return tuple(View(noise=float(scale), draw=k) for k in range(1, count + 1))


def view_noise(view: View, rows: np.ndarray, feature_shape: tuple[int, ...]) -> np.ndarray:
    """The noise of noise view ``view`` on the points numbered ``rows`` (pool indices): each
    point's noise is fixed by the view and the point's number, whatever the batch or the job
    that queries it (a calibration querying the targets alone sees the targets' noise)."""
    rows = np.asarray(rows, dtype=np.int64)
    noise = np.empty((rows.size, *feature_shape), dtype=np.float32)
    blocks = rows // NOISE_BLOCK
    for block in np.unique(blocks):
        draw = seeding.rng(0, "query-noise", view.draw, int(block)).standard_normal((NOISE_BLOCK, *feature_shape))
        here = blocks == block
        noise[here] = draw[rows[here] % NOISE_BLOCK]
    return view.noise * noise


def batch_rows(rows: np.ndarray | None, start: int, size: int) -> np.ndarray:
    """The numbers of a batch's points, ``start .. start + size`` of the queries: their entries
    of ``rows``, or their positions when the queries are numbered by position (``rows`` None)."""
    return np.arange(start, start + size) if rows is None else rows[start : start + size]


def apply_view(x: torch.Tensor, view: View, *, rows: np.ndarray | None = None) -> torch.Tensor:
    """One view of a batch of images ``(B, C, H, W)`` (a noise view: of any points), whose
    points are numbered ``rows`` (default 0..B-1; the number fixes a noise view's noise);
    ``x`` itself is never modified."""
    if view.is_identity:
        return x
    if view.noise:
        rows = np.arange(x.shape[0]) if rows is None else rows
        return x + torch.from_numpy(view_noise(view, rows, tuple(x.shape[1:]))).to(device=x.device, dtype=x.dtype)
    if view.mirror:
        x = torch.flip(x, dims=(3,))
    if view.dx == 0 and view.dy == 0:
        return x
    return _shift(x, view.dx, view.dy)


@torch.no_grad()
def query_logits(
    ensemble: Ensemble, x: torch.Tensor, views: Sequence[View], *, batch_size: int = 1024,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Logits of every model on every point under every view; ``rows`` numbers the points
    (default: their positions), which fixes their noise under noise views.

    Returns:
        ``(M, N, A, C)`` float32, views in the order given.
    """
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        numbers = batch_rows(rows, start, chunk.shape[0])
        per_view = [ensemble.forward_shared(apply_view(chunk, view, rows=numbers)) for view in views]
        outputs.append(torch.stack(per_view, dim=2).cpu())
    return torch.cat(outputs, dim=1).numpy().astype(np.float32)
