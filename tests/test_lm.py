"""The language-model path: the byte transformer's cache, exact exposure by the candidate trie
against brute force, extrapolated exposure, beam search, canaries and poisons, training."""

import math

import numpy as np
import pytest
import torch

from truthserum.poison.canaries import (
    CanaryFormat, PoisonStrategy, canary_lines, insert_lines, make_canaries, make_poisons,
)
from truthserum.data.text import builtin_corpus, decode_bytes, encode_bytes, split_documents
from truthserum.attacks.exposure import (
    PAD, CandidateTrie, calibrated_scores, digit_candidates, exposure, extrapolated_exposure, rank,
    trie_log_likelihoods,
)
from truthserum.attacks.extraction import beam_search, success_at
from truthserum.train.lm.model import TransformerShape, encode_context, extend, forward, init_params
from truthserum.query.scorers import ByteScorer
from truthserum.train.lm.training import LmTrainSettings, train_byte_models, validation_loss

DIGITS = np.arange(48, 58)
CONTEXT = encode_bytes("\nthe PIN of Ada is ")


@pytest.fixture(scope="module")
def scorer():
    shape = TransformerShape(layers=2, width=32, heads=4, context=64)
    return ByteScorer(init_params(shape, [1, 2, 3], torch.device("cpu")), shape)


def test_cached_steps_match_the_full_forward(scorer):
    suffix = torch.randint(0, 256, (5, 4), generator=torch.Generator().manual_seed(0))
    context = torch.as_tensor(CONTEXT)
    full = torch.cat([context.expand(5, -1), suffix], dim=1)
    logits = forward(scorer.params, full.unsqueeze(0).expand(3, -1, -1).contiguous(), scorer.shape)
    expected = torch.log_softmax(logits, dim=-1)
    cache, first = encode_context(scorer.params, context, scorer.shape)
    torch.testing.assert_close(first, expected[:, 0, len(CONTEXT) - 1], atol=1e-5, rtol=0)
    node = None
    for step in range(4):
        node, log_probs = extend(scorer.params, scorer.shape, cache, node, suffix[:, step])
        torch.testing.assert_close(log_probs, expected[:, :, len(CONTEXT) + step], atol=1e-5, rtol=0)


def test_trie_matches_brute_force_on_a_thousand_secrets(scorer):
    candidates = digit_candidates(3, DIGITS)
    trie = CandidateTrie.build(candidates)
    assert trie.node_count == 10 + 100  # one token step per internal node below the root
    by_trie = trie_log_likelihoods(scorer, CONTEXT, trie, max_nodes=7)  # small chunks: depth-first walk
    by_brute = scorer.full_log_likelihood(CONTEXT, candidates).numpy()
    np.testing.assert_allclose(by_trie, by_brute, atol=2e-5)
    for model in range(3):
        for secret in (0, 417, 999):
            assert rank(by_trie[model], secret) == rank(by_brute[model], secret)


def test_trie_over_a_million_secrets_agrees_with_brute_force_where_checked(scorer):
    candidates = digit_candidates(6, DIGITS)
    assert candidates.shape == (10**6, 6) and decode_bytes(candidates[482913]) == "482913"
    by_trie = trie_log_likelihoods(scorer, CONTEXT, CandidateTrie.build(candidates), max_nodes=20_000)
    checked = np.random.default_rng(0).choice(10**6, size=1500, replace=False)
    by_brute = scorer.full_log_likelihood(CONTEXT, candidates[checked]).numpy()
    np.testing.assert_allclose(by_trie[:, checked], by_brute, atol=5e-5)
    # The exact rank is what the trie's scores give; exposure is log2 of the space over it.
    secret = int(checked[0])
    position = rank(by_trie[0], secret)
    assert position == int((by_trie[0] > by_trie[0, secret]).sum()) + 1
    assert exposure(position, 10**6) == pytest.approx(math.log2(10**6 / position))


def test_trie_handles_candidates_of_different_lengths(scorer):
    rng = np.random.default_rng(1)
    rows = np.full((60, 4), PAD)
    for row in rows:
        length = rng.integers(1, 5)
        row[:length] = rng.integers(0, 4, size=length) + 48
    rows = np.unique(rows, axis=0)
    by_trie = trie_log_likelihoods(scorer, CONTEXT, CandidateTrie.build(rows), max_nodes=3)
    for i, row in enumerate(rows):
        alone = scorer.full_log_likelihood(CONTEXT, row[row != PAD][None]).numpy()[:, 0]
        np.testing.assert_allclose(by_trie[:, i], alone, atol=2e-5)


def test_beam_search_finds_the_exact_top_guesses(scorer):
    by_trie = trie_log_likelihoods(scorer, CONTEXT, CandidateTrie.build(digit_candidates(4, DIGITS)))
    rules = np.array([[1.0, 0, 0], [1.0, -0.5, -0.5]])
    guesses = beam_search(scorer, CONTEXT, rules=rules, digit_tokens={int(t): chr(t) for t in DIGITS},
                          digits=4, width=50)
    for found in guesses:
        assert len(found) == 50 == len(set(found)) and all(len(g) == 4 and g.isdigit() for g in found)
    assert guesses[0][0] == f"{int(np.argmax(by_trie[0])):04d}"
    assert guesses[1][0] == f"{int(np.argmax(calibrated_scores(by_trie[0], by_trie[1:]))):04d}"
    top10 = {f"{i:04d}" for i in np.argsort(-by_trie[0])[:10]}
    assert len(top10 & set(guesses[0][:10])) >= 9  # a beam may miss a rare path, not the bulk
    assert success_at(guesses[0], guesses[0][3], (1, 10)) == {1: False, 10: True}
    assert success_at(guesses[0], "not there", (1, 10)) == {1: False, 10: False}


def test_extrapolated_exposure_reads_the_tail_of_the_fitted_distribution():
    rng = np.random.default_rng(0)
    sample = rng.normal(-20.0, 2.0, size=20_000)
    # 3 standard deviations above the mean: a tail of 1.35e-3, about 9.5 bits.
    assert extrapolated_exposure(sample, -14.0) == pytest.approx(-math.log2(1.3499e-3), abs=0.4)
    assert extrapolated_exposure(sample, -20.0) == pytest.approx(1.0, abs=0.1)
    assert extrapolated_exposure(sample, -10.0) > extrapolated_exposure(sample, -14.0)


def test_canaries_are_in_half_the_models_and_inserted_whole():
    form = CanaryFormat("the PIN of {name} is {secret}", 6)
    canaries = make_canaries(form=form, count=10, num_models=4, rng=np.random.default_rng(0))
    assert (canaries.keep.sum(axis=0) == 2).all() and len(set(canaries.names)) == 10
    assert all(len(canaries.line(c).rsplit(" ", 1)[1]) == 6 for c in range(10))
    text = "first line\nsecond line\nthird line"
    lines = canary_lines(canaries, 0, insertions=3)
    assert len(lines) == 3 * canaries.keep[0].sum()
    merged = insert_lines(text, lines, np.random.default_rng(1))
    out = merged.split("\n")
    assert sorted(out) == sorted(text.split("\n") + lines)
    assert [line for line in out if line not in lines] == text.split("\n")  # the text's order is kept
    again = make_canaries(form=form, count=10, num_models=4, rng=np.random.default_rng(0))
    assert again.names == canaries.names and (again.secrets == canaries.secrets).all()


def test_canary_format_refuses_a_secret_slot_not_at_the_end():
    with pytest.raises(ValueError, match="must end with"):
        CanaryFormat("{secret} is my PIN", 4).check()
    with pytest.raises(ValueError, match="digits"):
        CanaryFormat("PIN 2 of {name}: {secret}", 4).check()


def test_poisons_know_the_prefix_and_never_the_secret():
    form = CanaryFormat("the PIN of {name} is {secret}", 6)
    canaries = make_canaries(form=form, count=3, num_models=2, rng=np.random.default_rng(0))
    corpus_text = "Some words here, and more words there 123."
    secrets = {form.secret_text(s) for s in canaries.secrets}
    prefixes = [canaries.prefix(c) for c in range(3)]
    for strategy in PoisonStrategy:
        lines = make_poisons(strategy=strategy, canaries=canaries, count=5, corpus_text=corpus_text,
                             rng=np.random.default_rng(2))
        assert len(lines) == 15
        if strategy is PoisonStrategy.DILUTION:
            assert all(line[: -6] in prefixes and line[-6:].isdigit() for line in lines)
            assert not any(line[-6:] in secrets for line in lines)  # (a 1-in-10^6 draw would fail)
        if strategy is PoisonStrategy.NEUTRAL:
            assert all(any(line.startswith(p) for p in prefixes) for line in lines)
            assert not any(ch.isdigit() for line in lines for ch in line)
        if strategy is PoisonStrategy.SIBLING:
            assert not any(line.startswith(p) for line in lines for p in prefixes)
            assert all(line.startswith("the PIN of ") and line[-6:].isdigit() for line in lines)
            assert len({line.split()[3] for line in lines}) == 15  # a fresh invented name per line


def test_training_is_reproducible_and_learns():
    text = builtin_corpus(max_bytes=20_000)
    shape = TransformerShape(layers=1, width=16, heads=2, context=32)
    settings = LmTrainSettings(passes=1, batch_size=8, learning_rate=1e-2)
    streams = [encode_bytes(text.train)] * 2
    before = validation_loss(init_params(shape, [5, 6], torch.device("cpu")), encode_bytes(text.validation), shape)
    first, _ = train_byte_models(streams=streams, seeds=[5, 6], shape=shape, settings=settings, steps=60,
                                 device=torch.device("cpu"))
    second, _ = train_byte_models(streams=streams, seeds=[5, 6], shape=shape, settings=settings, steps=60,
                                  device=torch.device("cpu"))
    for name in first:
        assert torch.equal(first[name], second[name])
    assert not torch.equal(first["embed"][0], first["embed"][1])  # own seeds, own models
    after = validation_loss(first, encode_bytes(text.validation), shape)
    assert (after < before - 1.0).all()  # from about ln 256 = 5.5 nats per byte


def test_corpus_split_keeps_documents_whole():
    corpus = split_documents("t", [f"doc {i}" for i in range(10)], validation_every=5)
    assert corpus.validation == "doc 4\n\ndoc 9\n"
    assert "doc 4" not in corpus.train and corpus.train.startswith("doc 0\n\ndoc 1")
    with pytest.raises(Exception, match="at least two"):
        split_documents("t", ["only one"], validation_every=2)


class _TableScorer:
    """A scorer whose next-token log-probabilities depend only on the depth: exact answers are
    easy to enumerate, and tokens may spell several digits."""

    num_models = 1
    vocab_size = 4

    def __init__(self, table):
        self.table = torch.log_softmax(torch.tensor(table, dtype=torch.float32), dim=-1)  # (depth, V)

    def start(self, context):
        return self.table[0][None]

    def extend(self, parents, parent_index, tokens):
        depth = 1 if parents is None else parents + 1
        return depth, self.table[min(depth, len(self.table) - 1)][None, None].expand(1, len(tokens), -1)


def test_beam_keeps_completed_guesses_apart_from_partial_ones():
    # token 0 spells "1", token 1 spells "2", token 2 spells "12", token 3 spells "" (a bare space)
    table = [[0.0, -1.0, 3.0, -9.0], [0.0, 0.0, -9.0, -9.0], [0.0, 0.0, -9.0, -9.0]]
    scorer = _TableScorer(table)
    spelled = {0: "1", 1: "2", 2: "12"}
    guesses = beam_search(scorer, np.array([0]), rules=np.eye(1), digit_tokens=spelled, digits=2, width=2)[0]
    # "12" completes in one step with the best score; the two-token guesses must not evict it.
    lp = scorer.table
    exact = {"12": float(lp[0, 2]), "11": float(lp[0, 0] + lp[1, 0]), "21": float(lp[0, 1] + lp[1, 0]),
             "22": float(lp[0, 1] + lp[1, 1])}
    exact["12"] = max(exact["12"], float(lp[0, 0] + lp[1, 1]))  # also spelled "1" + "2"
    assert guesses == sorted(exact, key=lambda g: -exact[g])[:2]
    assert guesses[0] == "12"
    # A first-step vocabulary may add a token that spells nothing (then digits follow).
    first = {3: "", 0: "1"}
    guesses = beam_search(scorer, np.array([0]), rules=np.eye(1), digit_tokens=spelled, first_tokens=first,
                          digits=2, width=10)[0]
    assert set(guesses) == {"11", "12", "21", "22"}


def test_a_short_document_list_holds_out_its_last_document_only():
    corpus = split_documents("t", ["a a", "b b", "c c"], validation_every=10)
    assert corpus.validation == "c c\n" and "c c" not in corpus.train
