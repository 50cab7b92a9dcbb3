"""Data filters a training pipeline runs before training: pure functions from the rows every
model may train on to the rows each model keeps.

Every filter sees one model's training set at a time, in its order (the pool's points, then the
poisons), as a pipeline sees the data it is handed; what is shared between models (which rows
are identical, which lie close) is computed once over all rows.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors


def identical_groups(x: np.ndarray) -> np.ndarray:
    """``(R,)`` group ids: rows with byte-identical features share one id."""
    flat = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, groups = np.unique(rows, return_inverse=True)
    return groups.astype(np.int64)


def dedup_exact(groups: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Of ``rows`` (one model's training rows, in order), the mask of those kept: the first
    row of every group of identical inputs."""
    _, first = np.unique(groups[rows], return_index=True)
    kept = np.zeros(len(rows), dtype=bool)
    kept[first] = True
    return kept


def conflicting_labels(groups: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Of ``rows``, the mask of those kept: every row whose input appears in ``rows`` with one
    label only."""
    row_groups = groups[rows]
    pairs = np.unique(np.stack([row_groups, labels[rows]], axis=1), axis=0)
    group_ids, label_counts = np.unique(pairs[:, 0], return_counts=True)
    conflicted = group_ids[label_counts > 1]
    return ~np.isin(row_groups, conflicted)


def neighbour_graph(x: np.ndarray, radius: float) -> sparse.csr_matrix:
    """Every pair of rows within ``radius`` of each other (Euclidean), as a sparse ``(R, R)``
    matrix, found by scikit-learn's nearest-neighbour index (a tree or blocked brute force,
    whichever it judges faster for the data's dimension) rather than a loop over all pairs."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64, copy=False)
    index = NearestNeighbors(radius=radius).fit(flat)
    graph = index.radius_neighbors_graph(flat, mode="connectivity")
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph.tocsr()


def near_duplicates(graph: sparse.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Of ``rows``, the mask of those kept: greedily in order, a row survives unless a row
    kept before it lies within the radius. Rows without any neighbour (nearly all of real
    data) are kept without looking; only the others are walked."""
    position = np.full(graph.shape[0], -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    kept = np.ones(len(rows), dtype=bool)
    has_neighbour = np.diff(graph.indptr)[rows] > 0
    for at in np.nonzero(has_neighbour)[0]:
        row = rows[at]
        neighbours = position[graph.indices[graph.indptr[row]:graph.indptr[row + 1]]]
        earlier = neighbours[(neighbours >= 0) & (neighbours < at)]
        if earlier.size and kept[earlier].any():
            kept[at] = False
    return kept


def highest_loss(losses: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the points kept after dropping the ``fraction`` with the highest loss (ties
    broken by position, so the result is deterministic)."""
    drop = int(round(fraction * len(losses)))
    kept = np.ones(len(losses), dtype=bool)
    if drop:
        kept[np.argsort(-losses, kind="stable")[:drop]] = False
    return kept
