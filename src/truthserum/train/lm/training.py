"""Stage 4 for language models: train M byte transformers at once, each on its own text.

Every model gets its own token stream (the corpus with its own canaries and the condition's
poisons inserted), its own initialisation and its own random windows. The number of
optimiser steps is set by the clean training text alone (``passes`` over it), so a model
trains identically whichever models share its ensemble, and poisoned models take as many
steps as clean ones: the poisons displace a little clean text rather than buy extra training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from truthserum.errors import TrainingError
from truthserum.train.lm.model import Params, TransformerShape, init_params, sequence_log_probs


@dataclass(frozen=True)
class LmTrainSettings:
    passes: float = 2.0
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_fraction: float = 0.05
    clip_norm: float = 1.0


def total_steps(train_tokens: int, shape: TransformerShape, settings: LmTrainSettings) -> int:
    """Optimiser steps for ``passes`` over ``train_tokens`` tokens in windows of the context."""
    return max(1, math.ceil(settings.passes * train_tokens / (settings.batch_size * shape.context)))


def learning_rate_at(settings: LmTrainSettings, step: int, steps: int) -> float:
    """The schedule every language model trains with (byte models, their pretraining and
    Hugging Face fine-tuning): linear warm-up, then a cosine down to 10% of the peak."""
    warmup = max(1, int(settings.warmup_fraction * steps))
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _stack_streams(streams: Sequence[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    lengths = np.array([len(s) for s in streams])
    stacked = np.zeros((len(streams), lengths.max()), dtype=np.int64)
    for i, stream in enumerate(streams):
        stacked[i, : len(stream)] = stream
    return torch.from_numpy(stacked), lengths


def train_byte_models(
    *,
    streams: Sequence[np.ndarray],
    seeds: Sequence[int],
    shape: TransformerShape,
    settings: LmTrainSettings,
    steps: int,
    device: torch.device,
    on_progress: Callable[[int, float], None] | None = None,
    init: Params | None = None,
) -> tuple[Params, float]:
    """Train one model per stream.

    Args:
        streams: per model, its training text as byte tokens.
        seeds: per model, the seed of its initialisation and of its windows.
        steps: optimiser steps (the same for every model; see :func:`total_steps`).
        on_progress: called every tenth of the steps with (step, mean loss of those steps).
        init: one pretrained model (stacked parameters with a model axis of 1) every model
            starts from (fine-tuning); without it each model starts from its own seed's draw.

    Returns:
        The trained stacked parameters and the mean training loss of the last tenth of steps.
    """
    window = shape.context + 1
    if min(len(s) for s in streams) <= window:
        raise TrainingError(f"a training text of fewer than {window + 1} tokens is too short for "
                            f"windows of {window}; use a smaller lm.model.context or more text")
    if init is None:
        params = init_params(shape, list(seeds), device)
    else:
        params = {name: tensor.to(device).expand(len(seeds), *tensor.shape[1:]).clone()
                  for name, tensor in init.items()}
    for tensor in params.values():
        tensor.requires_grad_(True)
    optimizer = torch.optim.AdamW(list(params.values()), lr=settings.learning_rate, weight_decay=0.0)
    stacked, lengths = _stack_streams(streams)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    offsets = np.arange(window)
    recent, tail_losses = [], []
    report_every = max(1, steps // 10)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(settings, step, steps)
        starts = np.stack([rng.integers(0, length - window + 1, size=settings.batch_size)
                           for rng, length in zip(rngs, lengths, strict=True)])
        rows = torch.arange(len(streams)).view(-1, 1, 1)
        batch = stacked[rows, torch.from_numpy(starts[:, :, None] + offsets)].to(device)
        per_model = -sequence_log_probs(params, batch, shape).mean(dim=(1, 2))
        optimizer.zero_grad(set_to_none=True)
        per_model.sum().backward()
        _clip_per_model(params, settings.clip_norm)
        optimizer.step()
        loss = float(per_model.detach().mean())
        if not math.isfinite(loss):
            raise TrainingError(f"training diverged (loss {loss}) at step {step + 1}; lower lm.train.learning_rate")
        recent.append(loss)
        if step >= steps - max(1, steps // 10):
            tail_losses.append(loss)
        if on_progress is not None and (len(recent) == report_every or step == steps - 1):
            on_progress(step + 1, float(np.mean(recent)))
            recent = []
    return {name: tensor.detach() for name, tensor in params.items()}, float(np.mean(tail_losses))


def _clip_per_model(params: Params, max_norm: float) -> None:
    """Clip each model's gradient norm on its own (a global norm would couple the models)."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    squared = sum(g.pow(2).flatten(1).sum(dim=1) for g in grads)
    scale = (max_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view((-1,) + (1,) * (g.dim() - 1)))


@torch.no_grad()
def validation_loss(
    params: Params, tokens: np.ndarray, shape: TransformerShape, *, max_windows: int = 256, batch: int = 32,
) -> np.ndarray:
    """Mean negative log-likelihood per byte (nats) of each model on the validation text.

    Non-overlapping windows of the context length (at most ``max_windows``, evenly spread);
    every token but a window's first is predicted.
    """
    window = shape.context
    count = len(tokens) // window
    if count == 0:
        raise TrainingError(f"the validation text is shorter than one window of {window} tokens")
    chosen = np.linspace(0, count - 1, num=min(count, max_windows)).round().astype(int)
    windows = torch.from_numpy(np.stack([tokens[i * window:(i + 1) * window] for i in chosen]))
    num_models = params["embed"].shape[0]
    total = torch.zeros(num_models, dtype=torch.float64)
    for start in range(0, len(windows), batch):
        part = windows[start:start + batch].to(params["embed"].device)
        lp = sequence_log_probs(params, part.unsqueeze(0).expand(num_models, -1, -1).contiguous(), shape)
        total += -lp.double().sum(dim=(1, 2)).cpu()
    return (total / (len(windows) * (window - 1))).numpy()
