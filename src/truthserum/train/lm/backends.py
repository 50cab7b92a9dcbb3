"""The two kinds of language model behind one interface: what the runner needs to train the
models of a condition, save and reload them, and turn a canary into scoring inputs.

:class:`ByteBackend` trains the built-in byte transformers of a condition as one ensemble;
:class:`HFBackend` fine-tunes copies of a Hugging Face model from a local folder, one after
another. Both hand the exposure code a :class:`~truthserum.query.scorers.CachedScorer` over all
M models of a condition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from truthserum.errors import RunDirError
from truthserum.poison.canaries import CanaryFormat
from truthserum.data.text import encode_bytes
from truthserum.attacks.exposure import CandidateTrie, digit_candidates
from truthserum.train.lm.model import Params, TransformerShape, init_params
from truthserum.query.scorers import ByteScorer, CachedScorer
from truthserum.train.lm.training import LmTrainSettings, total_steps, train_byte_models, validation_loss
from truthserum.store.rundir import read_npz, write_npz

DIGIT_BYTES = np.arange(ord("0"), ord("9") + 1)


@dataclass(frozen=True)
class SecretQuery:
    """What the models are asked: the context tokens, and every candidate secret's tokens."""

    context: np.ndarray  # (T0,)
    candidates: np.ndarray  # (N, L) padded with -1, row i spelling secret i of the list given
    # The tokens a guess may start with, if not the digit tokens: where a tokenizer merges the
    # prefix's last characters into the secret's first token (GPT-2's " 482").
    first_tokens: dict[int, str] | None = None
    # The candidates' trie, when the backend already holds it (the same for every canary).
    built_trie: CandidateTrie | None = None

    def trie(self) -> CandidateTrie:
        return self.built_trie if self.built_trie is not None else CandidateTrie.build(self.candidates)


class Backend(Protocol):
    steps: int  # optimiser steps per model

    def train(self, texts: Sequence[str], seeds: Sequence[int], progress: Callable[[int, float], None] | None,
              base: CachedScorer | None = None) -> tuple[CachedScorer, float]: ...
    def save(self, scorer: CachedScorer, path: Path) -> None: ...
    def load(self, path: Path, num_models: int) -> CachedScorer | None: ...
    def validation_loss(self, scorer: CachedScorer, text: str) -> np.ndarray: ...
    def query(self, prefix: str, secrets: Sequence[str]) -> SecretQuery: ...
    def digit_tokens(self) -> dict[int, str]: ...
    def token_count(self, text: str) -> int: ...
    def check_context(self, context: int, form: CanaryFormat) -> None: ...
    def fingerprint(self) -> str | None: ...


class ByteBackend:
    """Byte transformers, trained from scratch or fine-tuned from a pretrained base; each digit
    is one token."""

    def __init__(self, *, shape: TransformerShape, settings: LmTrainSettings, clean_train_text: str,
                 device: torch.device):
        self.shape = shape
        self.settings = settings
        self.device = device
        self.steps = total_steps(len(encode_bytes(clean_train_text)), shape, settings)
        self._digit_tries: dict[int, CandidateTrie] = {}  # every canary of a run shares its space

    def train(self, texts, seeds, progress=None, base: ByteScorer | None = None):
        """One model per text; from ``base`` (a pretrained model, fine-tuning) or from scratch."""
        params, loss = train_byte_models(
            streams=[encode_bytes(t) for t in texts], seeds=seeds, shape=self.shape, settings=self.settings,
            steps=self.steps, device=self.device, on_progress=progress,
            init=None if base is None else base.params,
        )
        return ByteScorer(params, self.shape), loss

    def pretrain(self, text: str, seed: int, settings: LmTrainSettings,
                 progress: Callable[[int, float], None] | None = None) -> tuple[ByteScorer, float, int]:
        """One base model trained from scratch on ``text``: (model, final loss, steps)."""
        tokens = encode_bytes(text)
        steps = total_steps(len(tokens), self.shape, settings)
        params, loss = train_byte_models(streams=[tokens], seeds=[seed], shape=self.shape, settings=settings,
                                         steps=steps, device=self.device, on_progress=progress)
        return ByteScorer(params, self.shape), loss, steps

    def save(self, scorer: ByteScorer, path: Path) -> None:
        write_npz(path, {name: tensor.cpu().numpy() for name, tensor in scorer.params.items()})

    def load(self, path: Path, num_models: int) -> ByteScorer | None:
        arrays = read_npz(path)
        if arrays is None:
            return None
        reference = _parameter_shapes(self.shape, num_models)
        if set(arrays) != set(reference) or any(arrays[k].shape != reference[k] for k in reference):
            raise RunDirError(f"{path}: does not hold the models this config trains; use another out_dir")
        params: Params = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}
        return ByteScorer(params, self.shape)

    def validation_loss(self, scorer: ByteScorer, text: str) -> np.ndarray:
        return validation_loss(scorer.params, encode_bytes(text), self.shape)

    def query(self, prefix: str, secrets: Sequence[str]) -> SecretQuery:
        rows = np.stack([encode_bytes(s) for s in secrets]) if len(secrets) else np.zeros((0, 0), np.int64)
        return SecretQuery(context=encode_bytes(prefix), candidates=rows)

    def digit_space(self, prefix: str, digits: int) -> SecretQuery:
        """Every secret of ``digits`` digits, in numeric order (no per-string encoding); the
        trie is built once per space and reused for every canary and condition."""
        if digits not in self._digit_tries:
            self._digit_tries[digits] = CandidateTrie.build(digit_candidates(digits, DIGIT_BYTES))
        trie = self._digit_tries[digits]
        return SecretQuery(context=encode_bytes(prefix), candidates=trie.tokens, built_trie=trie)

    def digit_tokens(self) -> dict[int, str]:
        return {int(t): chr(t) for t in DIGIT_BYTES}

    def token_count(self, text: str) -> int:
        return len(encode_bytes(text))

    def check_context(self, context: int, form: CanaryFormat) -> None:
        pass  # the config checks the byte model's context against the longest query

    def fingerprint(self) -> str | None:
        return None  # nothing outside the config (a base's inputs are checked by its own record)


def _parameter_shapes(shape: TransformerShape, num_models: int) -> dict[str, tuple[int, ...]]:
    params = init_params(shape, [0], torch.device("cpu"))  # small: the byte models are
    return {name: (num_models,) + tuple(p.shape[1:]) for name, p in params.items()}
