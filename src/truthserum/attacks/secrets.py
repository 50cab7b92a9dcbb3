"""Per-canary measurements and their aggregation, clean against poisoned.

For each canary and each model of its condition that trained on it (the target models), with
the models that did not as references:

- raw exposure: the rank of the secret by the target model's log-likelihood;
- calibrated exposure: by the target's log-likelihood minus the references' mean;
- extrapolated exposure (both scores), from a skew-normal fit to a sample of candidates;
- extraction: beam search for the secret from the prefix, success at each k.

Aggregates are means over (canary, target model) records with percentile bootstrap
intervals that resample canaries (a canary's records move together), and the paired change
against the clean condition: the same canaries and the same initialisations, so the
difference is the poisons' doing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from truthserum.attacks.exposure import (
    CandidateTrie, calibrated_scores, exposure, extrapolated_exposure, rank, trie_log_likelihoods,
)
from truthserum.attacks.extraction import beam_search, success_at
from truthserum.query.scorers import CachedScorer
from truthserum.metrics.bootstrap import percentile_interval, resample_counts

SCORES = ("raw", "calibrated")


@dataclass(frozen=True)
class CanaryTask:
    """One canary to measure in one condition."""

    canary: int
    secret: int  # index of the true secret among the candidates
    members: np.ndarray  # models that trained on it
    references: np.ndarray  # models that did not
    space_size: int


def score_canary(
    scorer: CachedScorer, *, context: np.ndarray, trie: CandidateTrie, task: CanaryTask,
    secret_text: str, digit_tokens: dict[int, str], first_tokens: dict[int, str] | None, digits: int,
    sample: np.ndarray, exact: bool, beam_width: int, top_k: Sequence[int], max_nodes: int,
) -> list[dict]:
    """The records of one canary, one per target model.

    Args:
        trie: the candidates; when ``exact``, every candidate (row ``task.secret`` is the
            secret), otherwise only the secret followed by the extrapolation sample.
        sample: candidate rows forming the extrapolation sample (the secret excluded).
    """
    log_likelihoods = trie_log_likelihoods(scorer, context, trie, max_nodes=max_nodes)  # (M, N)
    references = log_likelihoods[task.references]
    rules, records = [], []
    for model in task.members:
        scores = {"raw": log_likelihoods[model], "calibrated": calibrated_scores(log_likelihoods[model], references)}
        record: dict = {"canary": int(task.canary), "model": int(model)}
        for kind, values in scores.items():
            if exact:
                position = rank(values, task.secret)
                record[f"{kind}_rank"] = position
                record[f"{kind}_exposure"] = float(exposure(position, task.space_size))
            record[f"{kind}_extrapolated"] = extrapolated_exposure(values[sample], float(values[task.secret]))
        records.append(record)
        raw_rule = np.zeros(scorer.num_models)
        raw_rule[model] = 1.0
        calibrated_rule = raw_rule.copy()
        calibrated_rule[task.references] = -1.0 / len(task.references)
        rules += [raw_rule, calibrated_rule]
    guesses = beam_search(scorer, context, rules=np.array(rules), digit_tokens=digit_tokens, digits=digits,
                          width=beam_width, first_tokens=first_tokens)
    for i, record in enumerate(records):
        for j, kind in enumerate(SCORES):
            hits = success_at(guesses[2 * i + j], secret_text, tuple(top_k))
            record[f"{kind}_top"] = {str(k): bool(v) for k, v in hits.items()}
    return records


def _by_canary(records: list[dict], key: str) -> dict[tuple[int, int], list[float]]:
    """The values of ``key`` grouped by canary, (replicate, canary)."""
    units: dict[tuple[int, int], list[float]] = {}
    for record in records:
        units.setdefault((record["replicate"], record["canary"]), []).append(float(record[key]))
    return units


def mean_with_interval(
    records: list[dict], key: str, *, rng: np.random.Generator, resamples: int, confidence: float,
) -> dict:
    """Mean of ``key`` over records, with a bootstrap interval over canaries."""
    units = _by_canary(records, key).values()
    sums = np.array([sum(v) for v in units])
    counts = np.array([len(v) for v in units])
    mean = float(sums.sum() / counts.sum())
    interval = None
    if resamples > 0 and len(sums) > 1:
        replicates = np.array([(w @ sums) / (w @ counts) for w in resample_counts(rng, len(sums), resamples)])
        interval = list(percentile_interval(replicates, confidence))
    return {"mean": mean, "interval": interval, "canaries": int(len(sums)), "records": int(counts.sum())}


def paired_change(
    clean: list[dict], poisoned: list[dict], key: str, *, rng: np.random.Generator, resamples: int,
    confidence: float,
) -> dict:
    """Mean over canaries of (poisoned - clean) per-canary means of ``key``, with an interval."""
    before, after = ({u: float(np.mean(v)) for u, v in _by_canary(records, key).items()}
                     for records in (clean, poisoned))
    units = sorted(set(before) & set(after))
    differences = np.array([after[u] - before[u] for u in units])
    interval = None
    if resamples > 0 and len(units) > 1:
        replicates = np.array([(w @ differences) / w.sum() for w in resample_counts(rng, len(units), resamples)])
        interval = list(percentile_interval(replicates, confidence))
    return {"mean": float(differences.mean()), "interval": interval, "canaries": len(units)}


def flatten_hits(records: list[dict]) -> list[dict]:
    """Records with ``<kind>_top_<k>`` as 0/1 fields, for :func:`mean_with_interval`."""
    out = []
    for record in records:
        flat = dict(record)
        for kind in SCORES:
            for k, hit in record[f"{kind}_top"].items():
                flat[f"{kind}_top_{k}"] = float(hit)
        out.append(flat)
    return out
