"""The Hugging Face path on a tiny offline GPT-2: loading, the cached scorer against the naive
one, the secret slot's tokenization, beam search, fine-tuning."""

import json
import shutil

import numpy as np
import pytest
import torch
from lm_fixtures import make_tiny_gpt2
from pydoc_data.topics import topics

from truthserum.errors import DataError, TrainingError
from truthserum.poison.canaries import insert_lines
from truthserum.attacks.exposure import PAD, CandidateTrie, trie_log_likelihoods
from truthserum.attacks.extraction import beam_search
from truthserum.train.lm.hf import (
    HFScorer, digit_token_map, fine_tune, load_hf, secret_token_rows, validation_loss,
)

PREFIX = "the PIN of Ada is "
SECRETS = [f"{i:03d}" for i in range(1000)]
ENGLISH = "\n".join(topics[key] for key in sorted(topics))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gpt2")
    return make_tiny_gpt2(root / "seed0", seed=0), make_tiny_gpt2(root / "seed1", seed=1)


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _canary_text(secret: str) -> str:
    return insert_lines(ENGLISH[20_000:26_000], [PREFIX + secret] * 30, np.random.default_rng(0))


def test_load_hf_round_trip(folders, tmp_path):
    model, tokenizer = load_hf(folders[0])
    assert not model.training and next(model.parameters()).dtype == torch.float32
    text = "the PIN of Ada is 482913"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    model.save_pretrained(tmp_path / "copy")
    tokenizer.save_pretrained(tmp_path / "copy")
    again, tokenizer_again = load_hf(tmp_path / "copy")
    assert tokenizer_again(text)["input_ids"] == ids
    with torch.no_grad():
        x = torch.tensor([ids])
        torch.testing.assert_close(again(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=0)


def test_load_hf_refuses_bad_folders(folders, tmp_path):
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folders[0] / name, no_tokenizer / name)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(folders[0] / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    empty = tmp_path / "empty"
    empty.mkdir()
    custom = shutil.copytree(folders[0], tmp_path / "custom")
    settings = json.loads((custom / "config.json").read_text())
    settings["auto_map"] = {"AutoModelForCausalLM": "modeling_mine.MyModel"}
    (custom / "config.json").write_text(json.dumps(settings))
    from safetensors.torch import load_file, save_file

    partial = shutil.copytree(folders[0], tmp_path / "partial")  # a weight missing: it would be random
    weights = load_file(partial / "model.safetensors")
    weights.pop(sorted(name for name in weights if name.endswith("mlp.c_fc.weight"))[0])
    save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
    cases = {tmp_path / "missing": "no such", empty: "config.json", pickled: "pytorch_model.bin",
             no_tokenizer: "tokenizer", custom: "auto_map", partial: "initialise at random"}
    for path, problem in cases.items():
        with pytest.raises(DataError) as caught:
            load_hf(path)
        message = str(caught.value)
        assert str(path) in message and problem in message and "\n" not in message


def test_secret_rows_reproduce_the_tokenization(folders):
    _, tokenizer = load_hf(folders[0])
    context, rows = secret_token_rows(tokenizer, PREFIX, SECRETS)
    assert rows.shape[0] == 1000 and context.dtype == rows.dtype == np.int64
    for secret, row in zip(SECRETS, rows):
        assert list(context) + [t for t in row if t != PAD] == tokenizer(PREFIX + secret)["input_ids"]
    # The tiny BPE merges " 4" but not " 0": the prefix's trailing space is cut from the context,
    # and moves into the rows as its own token or as part of the secret's first token.
    head = tokenizer(PREFIX)["input_ids"]
    assert list(context) == head[:-1]
    firsts = set(tokenizer.convert_ids_to_tokens(rows[:, 0].tolist()))
    assert "Ġ" in firsts and "Ġ4" in firsts


def test_digit_token_map(folders):
    _, tokenizer = load_hf(folders[0])
    bare = digit_token_map(tokenizer, allow_leading_space=False)
    spaced = digit_token_map(tokenizer, allow_leading_space=True)
    assert set(bare) < set(spaced) and any(len(d) > 1 for d in bare.values())
    for token, digits in spaced.items():
        text = tokenizer.convert_ids_to_tokens(token)
        assert digits.isascii() and digits.isdigit() and text.removeprefix("Ġ") == digits
        assert (token in bare) == (text == digits)
    assert "²" not in tokenizer.convert_ids_to_tokens(list(spaced))  # unicode digits are not secrets


def test_trie_scores_match_full_sequences_and_reuse_the_context(folders):
    (model0, tokenizer), (model1, tokenizer1) = load_hf(folders[0]), load_hf(folders[1])
    assert tokenizer1.get_vocab() == tokenizer.get_vocab()
    context, rows = secret_token_rows(tokenizer, PREFIX, SECRETS)
    scorer = HFScorer([model0, model1], batch=64)  # sub-batches inside extend too
    lengths = []
    hooks = [m.register_forward_pre_hook(lambda _, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
                                         with_kwargs=True) for m in (model0, model1)]
    try:
        trie = trie_log_likelihoods(scorer, context, CandidateTrie.build(rows), max_nodes=256)
    finally:
        for hook in hooks:
            hook.remove()
    assert lengths[:2] == [len(context)] * 2  # the context runs once per model...
    assert max(lengths[2:]) <= rows.shape[1] < len(context)  # ...and never again
    full = scorer.full_log_likelihood(context, rows).numpy()
    assert trie.shape == full.shape == (2, 1000)
    np.testing.assert_allclose(trie, full, rtol=0, atol=1e-4)
    assert np.abs(trie[0] - trie[1]).max() > 0.1  # two different models


def test_loading_says_nothing_and_restores_transformers_settings(folders, capfd):
    """transformers' own bars and messages stay out of the output while a model loads, even
    with its verbosity at info (where it logs every file it reads); its settings are as they
    were afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        capfd.readouterr()
        load_hf(folders[0])
        out, err = capfd.readouterr()
        assert out == "" and err == ""
        assert hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity(verbosity)


def test_fine_tune_lowers_the_loss_and_is_reproducible(folders):
    text = _canary_text("482")
    settings = dict(steps=60, batch_size=8, context=32, learning_rate=1e-2)
    (a, tokenizer), (b, _), (c, _) = load_hf(folders[0]), load_hf(folders[0]), load_hf(folders[0])
    before = validation_loss([a], tokenizer, text, context=32)
    losses_a = fine_tune([a], tokenizer, [text], seeds=[5], **settings)
    after = validation_loss([a], tokenizer, text, context=32)
    assert after.shape == (1,) and after[0] < before[0] - 1.0 and np.isfinite(losses_a[0])
    assert not a.training
    steps = []
    assert fine_tune([b], tokenizer, [text], seeds=[5], on_step=lambda: steps.append(1), **settings) == losses_a
    assert len(steps) == settings["steps"]  # the progress bar moves once a step, and changes nothing
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert fine_tune([c], tokenizer, [text], seeds=[6], **settings) != losses_a
    with pytest.raises(TrainingError, match="too few"):
        fine_tune([c], tokenizer, ["too short"], seeds=[5], **settings)
    with pytest.raises(TrainingError, match="diverged"):
        fine_tune([c], tokenizer, [text], seeds=[5], **{**settings, "learning_rate": 1e6})
    assert not c.training


def test_beam_search_finds_the_trie_argmax(folders):
    from truthserum.train.lm.hf import HFBackend
    from truthserum.train.lm.training import LmTrainSettings

    backend = HFBackend(path=folders[0], settings=LmTrainSettings(), context=32, clean_train_text=ENGLISH[:2000],
                        device=torch.device("cpu"))
    model, tokenizer = load_hf(folders[0])
    query = backend.query(PREFIX, SECRETS)
    context, rows = query.context, query.candidates
    # The context was cut before the prefix's space: a guess starts with the space (" 48", or " "
    # alone), never with a bare digit, and goes on with digit tokens only.
    assert query.first_tokens and all(tokenizer.decode([t]).startswith(" ") for t in query.first_tokens)
    assert "" in query.first_tokens.values()
    assert set(rows[:, 0]) <= set(query.first_tokens)
    digits = backend.digit_tokens()
    assert all(not tokenizer.decode([t]).startswith(" ") for t in digits)
    scorer = HFScorer([model])
    search = dict(rules=np.eye(1), digit_tokens=digits, first_tokens=query.first_tokens, digits=3, width=10)
    guesses = beam_search(scorer, context, **search)[0]
    assert len(guesses) == 10 and len(set(guesses)) == 10
    assert all(len(g) == 3 and g.isdigit() for g in guesses)

    fine_tune([model], tokenizer, [_canary_text("482")], steps=150, batch_size=8, context=32,
              learning_rate=1e-2, seeds=[0])
    scores = trie_log_likelihoods(scorer, context, CandidateTrie.build(rows))[0]
    guesses = beam_search(scorer, context, **search)[0]
    assert all(len(g) == 3 and g.isdigit() for g in guesses)
    assert guesses[0] == SECRETS[int(np.argmax(scores))] == "482"
