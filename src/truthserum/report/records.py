"""Stage 8, report: the per-record view, which targets leak most and how much poisoning raised
their leakage, read from a run's score files.

Only the top and bottom records are kept (:data:`RECORD_ROWS` each), so the view stays the
same size for 32 targets or 50,000: the ranking itself is one vectorized pass over the scores.

A target's leakage under a membership-style attack is its own AUC: the chance that the score of
a random model that trained on it exceeds that of a random model that did not (ties count one
half), computed from the ranks of its column of scores. Under attribute inference it is the
share of the models that trained on it whose guess of its sensitive value is right.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

RECORD_ROWS = 10  # records shown at each end of the ranking
THUMBNAIL_PIXELS = 56  # the longer side of a record's picture


@dataclass(frozen=True)
class RecordRow:
    """One record: its index (what it indexes is the view's ``index_kind``), its name where it
    has one (a canary's), its label when known, a PNG thumbnail for images, and per condition
    its leakage and the mean scores of the models that trained on it (IN) and did not (OUT)."""

    index: int
    name: str | None
    label: int | None
    thumbnail: bytes | None
    leakage: dict[str, float]
    scores_in: dict[str, float]
    scores_out: dict[str, float]

    def change(self, baseline: str, compared: str) -> float:
        return self.leakage[compared] - self.leakage[baseline]


@dataclass(frozen=True)
class RecordView:
    """The ranked records of one attack: ``top`` gained the most leakage from ``baseline`` to
    ``compared``, ``bottom`` the least (with one condition, leaked the most and the least).
    When all the records fit in both ends, ``top`` holds them all in order and ``bottom`` none.
    ``index_kind`` says what a record's index is ("pool index", "victim", "target", "canary")."""

    attack: str
    index_kind: str
    measure: str
    baseline: str | None
    compared: str
    records: int
    top: list[RecordRow]
    bottom: list[RecordRow]


def per_target_auc(scores: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Each target's AUC from its ``(M,)`` column of scores and membership (NaN where no model
    trained on it, or every model did)."""
    ranks = rankdata(scores, axis=0)  # ties share their average rank
    members = members.astype(bool)
    count_in = members.sum(axis=0)
    count_out = members.shape[0] - count_in
    rank_sum = np.where(members, ranks, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - count_in * (count_in + 1) / 2) / (count_in * count_out)
    return np.where((count_in > 0) & (count_out > 0), auc, np.nan)


def per_target_guess_accuracy(scores: np.ndarray, truth: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Attribute inference: each target's share of member models whose guess (the candidate
    value with the highest score) is its true value (NaN where no model trained on it)."""
    right = scores.argmax(axis=2) == truth[None, :]
    members = members.astype(bool)
    count = members.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, (right & members).sum(axis=0) / count, np.nan)


def _mean_where(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = mask.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, np.where(mask, scores, 0.0).sum(axis=0) / count, np.nan)


def thumbnail_png(image: np.ndarray) -> bytes:
    """A small greyscale or colour PNG of one record (channels first or last), its values
    stretched to the full range; enlarged without smoothing, so its pixels stay visible."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    low, high = np.nanmin(array), np.nanmax(array)
    pixels = np.zeros_like(array) if high <= low else (array - low) / (high - low)
    picture = Image.fromarray((255 * pixels).round().astype(np.uint8))
    scale = max(1, THUMBNAIL_PIXELS // max(picture.size))
    picture = picture.resize((picture.size[0] * scale, picture.size[1] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def target_images(run_dir: Path, targets: np.ndarray | None) -> dict[int, np.ndarray]:
    """Pool index -> the record's image, from the exact replicas in ``poisons.npz`` (a replica
    has its target's features); empty for tables, text and runs without poisons."""
    path = run_dir / "poisons.npz"
    if targets is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            if "source" not in stored.files or stored["x"].ndim < 3:
                return {}
            x, source = stored["x"], stored["source"]
    except (OSError, ValueError, KeyError):
        return {}
    first = {}
    for row, index in enumerate(source.tolist()):
        first.setdefault(int(index), row)
    return {int(t): x[first[int(t)]] for t in targets.tolist() if int(t) in first}


def rank_records(
    leakage: dict[str, np.ndarray], scores_in: dict[str, np.ndarray], scores_out: dict[str, np.ndarray], *,
    attack: str, measure: str, baseline: str | None, compared: str, indices: np.ndarray, index_kind: str,
    labels: np.ndarray | None = None, images: dict[int, np.ndarray] | None = None,
    names: list[str] | None = None, rows: int = RECORD_ROWS,
) -> RecordView:
    """The top and bottom ``rows`` records by the change of leakage from ``baseline`` to
    ``compared`` (by the leakage of ``compared`` alone when there is no baseline); records
    whose leakage cannot be measured are left out. ``images`` are keyed by index."""
    key = leakage[compared] - (leakage[baseline] if baseline is not None else 0.0)
    valid = np.flatnonzero(~np.isnan(key))
    order = valid[np.argsort(-key[valid], kind="stable")]
    if order.size <= 2 * rows:
        top, bottom = order, order[:0]
    else:
        top, bottom = order[:rows], order[order.size - rows:][::-1]
    images = images or {}

    def row(position: int) -> RecordRow:
        index = int(indices[position])
        image = images.get(index)
        return RecordRow(
            index=index, name=None if names is None else names[position],
            label=None if labels is None else int(labels[position]),
            thumbnail=None if image is None else thumbnail_png(image),
            leakage={name: float(values[position]) for name, values in leakage.items()},
            scores_in={name: float(values[position]) for name, values in scores_in.items()},
            scores_out={name: float(values[position]) for name, values in scores_out.items()},
        )

    return RecordView(attack=attack, index_kind=index_kind, measure=measure, baseline=baseline, compared=compared,
                      records=int(valid.size), top=[row(p) for p in top], bottom=[row(p) for p in bottom])


def _record_targets(score_files: dict[str, Path], targets: np.ndarray | None, count: int) -> np.ndarray | None:
    """The records' pool indices: the score file's own ``targets`` (``truthserum attack``
    writes them, after any target it dropped), else the run's design when it has one per
    column; None when neither fits (the records are then numbered by column)."""
    for path in score_files.values():
        with np.load(path, allow_pickle=False) as stored:
            if "targets" in stored.files and stored["targets"].shape == (count,):
                return stored["targets"]
    return targets if targets is not None and targets.shape == (count,) else None


def membership_records(
    score_files: dict[str, Path], *, attack: str, baseline: str | None, compared: str,
    targets: np.ndarray | None, labels: np.ndarray | None, images: dict[int, np.ndarray], index_kind: str,
) -> RecordView | None:
    """The per-record view of a membership-style attack from the conditions' score files
    (``members`` and one ``(M, T)`` array per attack); None where a file lacks the attack.
    ``targets``, ``labels`` and ``images`` are the run's, by pool index; they are used only
    where the records are known to be those pool points."""
    leakage, scores_in, scores_out = {}, {}, {}
    for condition in [c for c in (baseline, compared) if c is not None]:
        with np.load(score_files[condition], allow_pickle=False) as stored:
            if attack not in stored.files or "members" not in stored.files:
                return None
            scores, members = stored[attack], stored["members"].astype(bool)
        leakage[condition] = per_target_auc(scores, members)
        scores_in[condition] = _mean_where(scores, members)
        scores_out[condition] = _mean_where(scores, ~members)
        del scores
    count = next(iter(leakage.values())).size
    pool = _record_targets(score_files, targets, count)
    if pool is None:
        indices, labels, images, index_kind = np.arange(count), None, {}, "target"
    else:
        indices = pool
        labels = labels[pool] if labels is not None and pool.size and pool.max() < labels.size else None
    return rank_records(leakage, scores_in, scores_out, attack=attack, measure="per-target AUC",
                        baseline=baseline, compared=compared, indices=indices, index_kind=index_kind,
                        labels=labels, images=images)


def attribute_records(
    score_files: dict[str, Path], *, attack: str, baseline: str | None, compared: str, targets: np.ndarray | None,
) -> RecordView | None:
    """The per-record view of attribute inference: each target's share of right guesses among
    the models that trained on it; the mean scores are those of its true value."""
    leakage, scores_in, scores_out = {}, {}, {}
    for condition in [c for c in (baseline, compared) if c is not None]:
        with np.load(score_files[condition], allow_pickle=False) as stored:
            if attack not in stored.files:
                return None
            scores, truth, keep = stored[attack], stored["truth"], stored["keep"].astype(bool)
        leakage[condition] = per_target_guess_accuracy(scores, truth, keep)
        true_scores = np.take_along_axis(scores, truth[None, :, None].astype(np.int64), axis=2)[..., 0]
        scores_in[condition] = _mean_where(true_scores, keep)
        scores_out[condition] = _mean_where(true_scores, ~keep)
    count = next(iter(leakage.values())).size
    pool = targets if targets is not None and targets.shape == (count,) else None
    return rank_records(leakage, scores_in, scores_out, attack=attack, measure="share of member models guessing right",
                        baseline=baseline, compared=compared, indices=np.arange(count) if pool is None else pool,
                        index_kind="target" if pool is None else "pool index")
