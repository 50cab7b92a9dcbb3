"""Label-only membership inference: the attacker sees only the predicted label of each query.

With A query views a model answers each with a label, so all the attacker learns about a
point is k, the number of views whose predicted label is the true one (0..A). The score of
(target model m, point j) is a likelihood ratio of that count under the point's IN and OUT
shadow models, each estimated as a histogram with Jeffreys smoothing (half a count per bin):

    P_in(k) = (#IN shadows with count k + 1/2) / (#IN shadows + (A + 1)/2)

    score = log P_in(k_m) - log P_out(k_m)

The histogram keeps the correlation between views (a count, not A independent coin flips).
Without poisons a well-generalising model labels most points right whether or not it trained
on them, so the counts barely differ; with mislabeled replicas the OUT models answer the
poison label and the counts separate (Tramèr et al. 2022; Chaudhari et al., ICLR 2024).
"""

from __future__ import annotations

import numpy as np

from truthserum.attacks.lira import MaskFor, check_group_sizes
from truthserum.store.logits import position_chunks

SMOOTHING = 0.5


def count_histograms(counts: np.ndarray, group: np.ndarray, num_views: int) -> np.ndarray:
    """``(T, A + 1)`` smoothed probabilities of each count among the group's shadows.

    Args:
        counts: ``(M, T)`` correct-label counts per model and target point.
        group: ``(M, T)`` bool, the shadows in the group (no empty column).
        num_views: A.
    """
    one_hot = counts[:, :, None] == np.arange(num_views + 1)[None, None, :]  # (M, T, A + 1)
    tallies = (one_hot & group[:, :, None]).sum(axis=0)
    return (tallies + SMOOTHING) / (group.sum(axis=0)[:, None] + SMOOTHING * (num_views + 1))


def label_only(
    correct: np.ndarray, keep: np.ndarray, mask_for: MaskFor, *, chunk: int | None = None
) -> np.ndarray:
    """Label-only likelihood-ratio scores.

    Args:
        correct: ``(M, T, A)`` bool, whether model m labels view a of target point t right.
        keep: ``(M, T)`` membership of the target points.
        mask_for: the usable shadows of a target model for some target positions.
        chunk: target points processed together (bounds the temporaries; default
            :func:`~truthserum.store.logits.chunk_points`).

    Returns:
        ``(M, T)`` scores, higher means member.
    """
    num_views = correct.shape[2]
    counts = correct.sum(axis=2)
    scores = np.empty(keep.shape)
    for columns in position_chunks(keep.shape[1], chunk):
        start = int(columns[0])
        member, chunk_counts = keep[:, columns], counts[:, columns]
        rows = np.arange(columns.size)
        for m in range(keep.shape[0]):
            mask = mask_for(m, columns)
            in_group, out_group = mask & member, mask & ~member
            check_group_sizes(in_group, name="IN", target_model=m, offset=start)
            check_group_sizes(out_group, name="OUT", target_model=m, offset=start)
            p_in = count_histograms(chunk_counts, in_group, num_views)[rows, chunk_counts[m]]
            p_out = count_histograms(chunk_counts, out_group, num_views)[rows, chunk_counts[m]]
            scores[m, columns] = np.log(p_in) - np.log(p_out)
    return scores
