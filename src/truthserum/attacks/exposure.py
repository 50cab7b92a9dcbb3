"""Stage 6 for language models: exposure of a secret, exact and extrapolated.

Exposure (Carlini, Liu, Erlingsson, Kos, Song, "The Secret Sharer", USENIX Security 2019)::

    exposure = log2 |S| - log2 rank(secret)

where S is every candidate of the canary's format and ``rank`` the position of the true
secret when the candidates are sorted by the model's likelihood given the prefix, most likely
first (rank 1: no candidate is strictly more likely; ties count against the secret only when
strictly more likely, so exposure is an upper reading under exact ties, which float scores
make rare). The maximum, log2 |S|, is about 19.93 bits for six digits.

The exact rank needs every candidate's log-likelihood. Scoring each candidate as a whole
sequence costs |S| x (context + secret) token evaluations; here candidates are scored as a
token trie (for digit secrets the tree of digit prefixes) with a key/value cache: each shared
prefix is computed once, so six digits cost 10 + 100 + ... + 10^5 = 111,110 one-token steps (after
one pass over the context) for 10^6 candidates. The trie is walked depth first in chunks of at
most ``max_nodes`` nodes, so memory stays bounded whatever |S|.

Calibrated exposure ranks by the target model's log-likelihood minus the mean log-likelihood
of reference models that did not train on the canary (the difference LiRA takes for
membership): what every model of the setting finds likely, poisons included, cancels, and
what only the target model learned remains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from truthserum.query.scorers import CachedScorer

PAD = -1


@dataclass(frozen=True)
class _Level:
    """Level l of the trie: its nodes (distinct length-l prefixes of candidates longer than l)."""

    parent: np.ndarray  # (nodes,) index of each node's parent at level l-1 (nondecreasing)
    token: np.ndarray  # (nodes,) the token each node appends to its parent
    candidates: np.ndarray  # candidates whose token l is scored at this level, in trie order
    node_of: np.ndarray  # (len(candidates),) their node at this level (nondecreasing)


@dataclass(frozen=True)
class CandidateTrie:
    """Candidates (rows of token ids, padded with -1) arranged as a trie of shared prefixes."""

    tokens: np.ndarray  # (N, L) as given
    levels: tuple[_Level, ...]

    @classmethod
    def build(cls, tokens: np.ndarray) -> CandidateTrie:
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError("candidates must be a non-empty (N, L) token matrix")
        lengths = (tokens != PAD).sum(axis=1)
        if (lengths == 0).any():
            raise ValueError("every candidate needs at least one token")
        order = np.lexsort(tokens.T[::-1])  # lexicographic; PAD (-1) sorts before any token
        sorted_tokens = tokens[order]
        sorted_lengths = lengths[order]
        levels: list[_Level] = []
        previous_node_of_row = np.zeros(len(tokens), dtype=np.int64)  # level-0 node (the root) of every row
        for level in range(tokens.shape[1]):
            active = np.flatnonzero(sorted_lengths > level)
            if level == 0:
                node_of = np.zeros(len(active), dtype=np.int64)
                parent = np.zeros(0, dtype=np.int64)
                token = np.zeros(0, dtype=np.int64)
            else:
                prefixes = sorted_tokens[active, :level]
                changed = np.ones(len(active), dtype=bool)
                changed[1:] = (prefixes[1:] != prefixes[:-1]).any(axis=1)
                node_of = np.cumsum(changed) - 1
                firsts = active[changed]
                parent = previous_node_of_row[firsts]
                token = sorted_tokens[firsts, level - 1]
            node_of_row = np.full(len(tokens), -1, dtype=np.int64)
            node_of_row[active] = node_of
            levels.append(_Level(parent=parent, token=token, candidates=order[active], node_of=node_of))
            previous_node_of_row = node_of_row
        return cls(tokens=tokens, levels=tuple(levels))

    @property
    def node_count(self) -> int:
        """Tree nodes evaluated with one token step each (the root is the context itself)."""
        return sum(len(level.parent) for level in self.levels)


@torch.no_grad()
def trie_log_likelihoods(
    scorer: CachedScorer, context: np.ndarray, trie: CandidateTrie, *, max_nodes: int = 4096
) -> np.ndarray:
    """Log-likelihood ``(M, N)`` of every candidate after ``context``, for each of M models."""
    root = scorer.start(context)  # (M, V)
    total = torch.zeros(root.shape[0], len(trie.tokens), dtype=torch.float64)

    def visit(depth: int, first: int, last: int, state, log_probs: torch.Tensor) -> None:
        """Nodes ``first:last`` of level ``depth``, with their state and next-token log-probs."""
        level = trie.levels[depth]
        lo, hi = np.searchsorted(level.node_of, [first, last])
        if hi > lo:
            rows = level.candidates[lo:hi]
            local = torch.as_tensor(level.node_of[lo:hi] - first)
            next_tokens = torch.as_tensor(trie.tokens[rows, depth])
            total[:, torch.as_tensor(rows)] += log_probs[:, local, next_tokens].double().cpu()
        if depth + 1 == len(trie.levels):
            return
        child_level = trie.levels[depth + 1]
        child_lo, child_hi = np.searchsorted(child_level.parent, [first, last])
        for start in range(child_lo, child_hi, max_nodes):
            stop = min(start + max_nodes, child_hi)
            child_state, child_log_probs = scorer.extend(
                state, child_level.parent[start:stop] - first, child_level.token[start:stop]
            )
            visit(depth + 1, start, stop, child_state, child_log_probs)

    visit(0, 0, 1, None, root.unsqueeze(1))
    return total.numpy()


def digit_candidates(digits: int, digit_tokens: np.ndarray) -> np.ndarray:
    """Every ``digits``-long secret as token rows ``(10**digits, digits)``, in numeric order,
    given the token id of each digit 0..9 (one token per digit)."""
    values = np.arange(10**digits)
    places = 10 ** np.arange(digits - 1, -1, -1)
    return np.asarray(digit_tokens)[(values[:, None] // places) % 10]


def rank(scores: np.ndarray, true_index: int) -> int:
    """1 + the number of candidates strictly more likely than the true one."""
    return int(np.count_nonzero(scores > scores[true_index])) + 1


def exposure(rank_value: int | np.ndarray, space_size: int) -> float | np.ndarray:
    """``log2 |S| - log2 rank``."""
    return math.log2(space_size) - np.log2(rank_value)


def calibrated_scores(target: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Target log-likelihoods minus the references' mean, per candidate."""
    return target - references.mean(axis=0)


def extrapolated_exposure(sample_scores: np.ndarray, secret_score: float) -> float:
    """The Secret Sharer's estimate: fit a skew-normal to the scores of a random sample of
    candidates and read ``-log2 P(score >= secret's score)`` from its tail.

    For spaces too large to enumerate; it may exceed log2 |S| (the fit's tail is not bounded
    by the space), and it is only as good as the fit. Scores are log-likelihoods (or
    calibrated log-likelihoods); higher means more likely.
    """
    shape, loc, scale = stats.skewnorm.fit(sample_scores)
    log_tail = stats.skewnorm.logsf(secret_score, shape, loc=loc, scale=scale)
    return float(-log_tail / math.log(2))
