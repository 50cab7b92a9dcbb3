"""Benchmark: exact exposure over every 6-digit secret (10^6 candidates), the candidate trie
with a key/value cache against naive per-candidate full-sequence scoring, on the same models.

Run: ``.venv/bin/python benchmarks/lm_exposure.py`` (add ``--naive-all`` to time the naive
scorer on all 10^6 candidates instead of a random 50,000 and scaling; it takes minutes).
Both scorers are batched the same way; the naive one runs ``context + candidate`` as one
sequence per candidate, recomputing the shared context and every shared digit prefix.
The script checks that the two agree on the candidates both scored, and prints the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from truthserum.train.lm.backends import DIGIT_BYTES
from truthserum.data.text import encode_bytes
from truthserum.attacks.exposure import CandidateTrie, digit_candidates, rank, trie_log_likelihoods
from truthserum.train.lm.model import TransformerShape, init_params
from truthserum.query.scorers import ByteScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4, help="models scored together (default 4, as the demo)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--naive-sample", type=int, default=50_000)
    parser.add_argument("--naive-all", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = TransformerShape(layers=args.layers, width=args.width, heads=4, context=64)
    scorer = ByteScorer(init_params(shape, list(range(args.models)), torch.device("cpu")), shape)
    context = encode_bytes("\nthe PIN of Ada is ")
    candidates = digit_candidates(6, DIGIT_BYTES)

    started = time.perf_counter()
    trie = CandidateTrie.build(candidates)
    built = time.perf_counter() - started
    started = time.perf_counter()
    by_trie = trie_log_likelihoods(scorer, context, trie)
    trie_seconds = time.perf_counter() - started

    rows = np.arange(len(candidates)) if args.naive_all else np.sort(
        np.random.default_rng(0).choice(len(candidates), size=args.naive_sample, replace=False))
    started = time.perf_counter()
    by_naive = scorer.full_log_likelihood(context, candidates[rows]).numpy()
    naive_seconds = (time.perf_counter() - started) * len(candidates) / len(rows)
    error = float(np.abs(by_trie[:, rows] - by_naive).max())
    if args.naive_all:
        assert all(rank(by_trie[m], 482913) == rank(by_naive[m], 482913) for m in range(args.models))

    print(f"models: {args.models} byte transformers ({args.layers} layers, width {args.width}), "
          f"{torch.get_num_threads()} threads; context {len(context)} tokens; 10^6 candidates")
    print(f"trie:  {trie.node_count:,} one-token steps, built in {built:.2f} s, scored in {trie_seconds:.1f} s")
    scope = "all candidates" if args.naive_all else f"{len(rows):,} random candidates, scaled to 10^6"
    print(f"naive: {len(candidates) * (len(context) + 6):,} token positions, {naive_seconds:.1f} s ({scope})")
    print(f"speed-up: {naive_seconds / trie_seconds:.0f}x   largest difference in log-likelihood: {error:.1e}")


if __name__ == "__main__":
    main()
