"""A tiny GPT-2 built offline, for tests of the Hugging Face path (no hub, no downloads)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

EOS = "<|endoftext|>"


def _training_text() -> str:
    """English (the first 20 KB of Python's pydoc topics) plus number-bearing lines, so the
    BPE learns merges such as " 4" and "82" as GPT-2's does. Fixed, so every seed gets the
    same tokenizer and the models of different seeds can be scored together."""
    from pydoc_data.topics import topics

    english = "\n".join(topics[key] for key in sorted(topics))[:20_000]
    rng = np.random.default_rng(0)
    numbers = [str(n) for n in rng.integers(0, 10**rng.integers(1, 7, size=1500))]
    lines = [f"the code of item {i} is {n}" for i, n in enumerate(numbers)]
    return english + "\n" + "\n".join(lines)


@functools.cache
def _trained_bpe() -> str:
    """The byte-level BPE as JSON, trained once per process."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_text().split("\n"), trainer=trainer)
    return bpe.to_str()


def make_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised 2-layer GPT-2 (safetensors) and a byte-level BPE tokenizer
    of 400 tokens to ``folder``; return ``folder``. ``seed`` sets the weights only."""
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer.from_str(_trained_bpe())
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                        unk_token=EOS, model_max_length=128)
    tokenizer.save_pretrained(folder)

    eos_id = bpe.token_to_id(EOS)
    config = GPT2Config(
        vocab_size=bpe.get_vocab_size(), n_layer=2, n_embd=32, n_head=2, n_positions=128,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos_id, eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
