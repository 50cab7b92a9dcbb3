"""Stage 6 for language models: extracting a secret by beam search from its prefix.

The adversary knows the format (how many digits) and the prefix, and asks the model for its
most likely secrets: a beam search over the tokens that spell digits, keeping the ``width``
best partial secrets at each step. Extraction succeeds at k if the true secret is among the
top k completed guesses (k = 1, 10, 100 by default; ``width`` >= the largest k).

Each step keeps the ``width`` best partial guesses and, apart, the ``width`` best completed ones.
A beam can rank by a target model's own log-likelihood or by a calibrated score (minus the
mean of reference models); a rule is a weight vector over the M models of the scorer, so all
rules of a canary (every target model, raw and calibrated) run as one batched search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from truthserum.query.scorers import CachedScorer


@dataclass
class _Entry:
    rule: int
    digits: str
    log_likelihood: np.ndarray  # (M,) per model
    node: int  # index into the current state (-1: the root)


@torch.no_grad()
def beam_search(
    scorer: CachedScorer, context: np.ndarray, *, rules: np.ndarray, digit_tokens: dict[int, str],
    digits: int, width: int, first_tokens: dict[int, str] | None = None,
) -> list[list[str]]:
    """Ranked guesses (best first, at most ``width``) for each rule.

    Args:
        rules: ``(R, M)``: a guess's score under rule r is ``rules[r] @ log_likelihoods``.
        digit_tokens: the tokens the search may append, each with the digits it spells.
        digits: the secret's length in digits.
        first_tokens: the tokens allowed as a guess's first token, if not ``digit_tokens``
            (GPT-2 spells the space before a number into its first token, " 482"; such a
            token spells its digits only, and a bare space token spells "").
    """
    rules = np.asarray(rules, dtype=np.float64)
    root = scorer.start(context).double().cpu().numpy()  # (M, V)
    vocabularies = []
    for tokens in (first_tokens if first_tokens is not None else digit_tokens, digit_tokens):
        ids = np.array(sorted(tokens))
        vocabularies.append((ids, [tokens[t] for t in ids], np.array([len(tokens[t]) for t in ids])))
    steps = 0
    entries = [_Entry(rule=r, digits="", log_likelihood=np.zeros(rules.shape[1]), node=-1) for r in range(len(rules))]
    next_log_probs = {-1: root}  # node -> (M, V)
    state = None
    finished: list[list[_Entry]] = [[] for _ in rules]
    while entries:
        proposals: list[list[tuple[float, _Entry, int]]] = [[] for _ in rules]
        token_ids, spelled, lengths = vocabularies[min(steps, 1)]
        steps += 1
        for entry in entries:
            room = digits - len(entry.digits)
            allowed = np.flatnonzero((lengths <= room) & ((lengths > 0) | (steps == 1)))
            lp = next_log_probs[entry.node][:, token_ids[allowed]]  # (M, A)
            totals = entry.log_likelihood[:, None] + lp
            scores = rules[entry.rule] @ totals
            for j, index in enumerate(allowed):
                proposals[entry.rule].append((float(scores[j]), _Entry(
                    rule=entry.rule, digits=entry.digits + spelled[index], log_likelihood=totals[:, j],
                    node=entry.node,
                ), int(token_ids[index])))
        survivors: list[tuple[_Entry, int]] = []
        for rule, items in enumerate(proposals):
            # Completed guesses keep their own top ``width``: with tokens of several digits a
            # guess may complete while others are partial, and a partial guess's score only
            # falls as it grows, so they must not evict completed ones. A guess spelled by two
            # token paths keeps its better path.
            items.sort(key=lambda item: -item[0])
            done = {e.digits: (_score(rules[rule], e), e) for e in finished[rule]}
            partial: dict[str, tuple[_Entry, int]] = {}
            for score, entry, token in items:
                if len(entry.digits) == digits:
                    if entry.digits not in done or done[entry.digits][0] < score:
                        done[entry.digits] = (score, entry)
                elif entry.digits not in partial and len(partial) < width:
                    partial[entry.digits] = (entry, token)
            finished[rule] = [e for _, e in sorted(done.values(), key=lambda item: -item[0])[:width]]
            survivors.extend(partial.values())
        if not survivors:
            break
        parents = np.array([entry.node for entry, _ in survivors])
        tokens = np.array([token for _, token in survivors])
        if state is None:
            parents = np.zeros_like(parents)
        state, log_probs = scorer.extend(state, parents, tokens)
        log_probs = log_probs.double().cpu().numpy()
        next_log_probs = {}
        entries = []
        for node, (entry, _) in enumerate(survivors):
            entry.node = node
            next_log_probs[node] = log_probs[:, node]
            entries.append(entry)
    return [[e.digits for e in sorted(finished[r], key=lambda e: -_score(rules[r], e))] for r in range(len(rules))]


def _score(rule: np.ndarray, entry: _Entry) -> float:
    return float(rule @ entry.log_likelihood)


def success_at(guesses: list[str], secret: str, ks: tuple[int, ...]) -> dict[int, bool]:
    """Whether ``secret`` is among the first k guesses, for each k."""
    position = guesses.index(secret) + 1 if secret in guesses else None
    return {k: position is not None and position <= k for k in ks}
