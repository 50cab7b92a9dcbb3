"""What the exposure and extraction code needs from a language model: next-token
log-probabilities after a shared context, extended one token at a time over a cache.

:class:`ByteScorer` serves the byte transformers of :mod:`truthserum.train.lm.model` (all M models of
an ensemble at once); :mod:`truthserum.train.lm.hf` serves Hugging Face causal models.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from truthserum.train.lm import model as byte_model


class CachedScorer(Protocol):
    """M models scored together on the same token trees.

    ``start`` runs the shared context once. ``extend`` appends one token to each of B nodes:
    ``parents`` is the state returned by the previous call (None: the context itself) and
    ``parent_index`` picks, for each new node, its parent among that state's nodes.
    Log-probabilities are float32 tensors over the whole vocabulary.
    """

    num_models: int
    vocab_size: int

    def start(self, context: np.ndarray) -> torch.Tensor:  # (M, V)
        ...

    def extend(self, parents: Any | None, parent_index: np.ndarray, tokens: np.ndarray) -> tuple[Any, torch.Tensor]:
        ...  # (state of the B nodes, (M, B, V))

    def full_log_likelihood(self, context: np.ndarray, candidates: np.ndarray) -> torch.Tensor:
        ...  # (M, N): the naive way, every candidate scored as a whole sequence


class ByteScorer:
    """The byte transformers of one ensemble, ``params`` stacked along the model axis."""

    vocab_size = byte_model.VOCAB

    def __init__(self, params: byte_model.Params, shape: byte_model.TransformerShape):
        self.params = params
        self.shape = shape
        self.num_models = params["embed"].shape[0]
        self.device = params["embed"].device
        self._context: byte_model.ContextCache | None = None

    @torch.no_grad()
    def start(self, context: np.ndarray) -> torch.Tensor:
        tokens = torch.as_tensor(np.asarray(context, dtype=np.int64), device=self.device)
        self._context, log_probs = byte_model.encode_context(self.params, tokens, self.shape)
        return log_probs

    @torch.no_grad()
    def extend(
        self, parents: byte_model.NodeCache | None, parent_index: np.ndarray, tokens: np.ndarray
    ) -> tuple[byte_model.NodeCache, torch.Tensor]:
        assert self._context is not None, "start() first"
        gathered = None if parents is None else parents.select(torch.as_tensor(parent_index, device=self.device))
        tokens_t = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)
        return byte_model.extend(self.params, self.shape, self._context, gathered, tokens_t)

    @torch.no_grad()
    def full_log_likelihood(self, context: np.ndarray, candidates: np.ndarray, *, batch: int = 2048) -> torch.Tensor:
        """Naive scoring: each candidate run as the whole sequence context + candidate."""
        context = np.asarray(context, dtype=np.int64)
        out = []
        for start in range(0, len(candidates), batch):
            part = np.asarray(candidates[start:start + batch], dtype=np.int64)
            rows = np.concatenate([np.broadcast_to(context, (len(part), len(context))), part], axis=1)
            tokens = torch.as_tensor(rows, device=self.device).unsqueeze(0).expand(self.num_models, -1, -1)
            lp = byte_model.sequence_log_probs(self.params, tokens.contiguous(), self.shape)
            out.append(lp[:, :, len(context) - 1:].sum(dim=-1).cpu())
        return torch.cat(out, dim=1)
