"""DP-SGD inside the vectorized ensemble (Abadi et al., CCS 2016).

Every step, each model draws its batch by Poisson sampling (every one of its training points
independently, with probability q: what the accountants assume), computes every example's
gradient, scales each to L2 norm at most C, sums them, adds Gaussian noise of standard deviation
sigma * C to every coordinate and divides by its expected batch size q * n. The optimiser then
takes that noisy gradient as it would any other.

Per-example gradients are computed for all models at once:

* for the MLP and logistic regression, from each Linear layer's input ``a`` and output gradient
  ``g``: example i's weight gradient is the outer product ``g_i a_i^T``, so its squared norm is
  ``|a_i|^2 |g_i|^2`` (Goodfellow 2015) and the clipped sum is one batched matmul, without ever
  materialising the ``(M, B, out, in)`` gradients;
* for every other architecture, by ``torch.func``: ``vmap`` over models of ``vmap`` over
  examples of ``grad``, a chunk of examples at a time.

Both give the same numbers as a Python loop over models and examples (tests/test_dp_sgd.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from truthserum.errors import ConfigError
from truthserum.train.ensemble import Ensemble, TrainSettings, check_finite_loss, make_optimizer, set_learning_rate

CLIP_STABILITY = 1e-6  # added to a norm before dividing by it, as Opacus does
_GENERIC_CHUNK_FLOATS = 1 << 27  # per-example gradients held at once by the torch.func path (512 MB)


@dataclass(frozen=True)
class PrivateTraining:
    """DP-SGD's settings for one training job, fixed before it trains: the accountant's
    ``noise_multiplier`` sigma, the ``clip_norm`` C, the Poisson ``sample_rate`` q and the
    ``expected_batch_size`` every model divides its noisy sum by (q times the job's largest
    training set: the same for every model, so the divisor does not depend on the data)."""

    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    expected_batch_size: float


def check_private_module(model: nn.Module) -> None:
    """Refuse a model DP-SGD cannot train: one whose buffers mix examples (BatchNorm's running
    statistics) or which has no trainable parameters.

    Raises:
        ConfigError: one line naming what the model has.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"defense dp-sgd cannot train this model: {name or 'it'} is a {type(module).__name__}, which "
                "mixes the examples of a batch, so no example has a gradient of its own (use GroupNorm)"
            )
    if any(True for _ in model.buffers()):
        raise ConfigError("defense dp-sgd cannot train this model: it has buffers, state that training changes "
                          "outside the gradients")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("defense dp-sgd cannot train this model: it has no trainable parameters")


def per_example_gradients(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every example's gradient for every model, by ``torch.func``: ``x`` is ``(M, B, *features)``,
    ``y`` ``(M, B)``; returns parameter name -> ``(M, B, *shape)`` in ``nn.Module``'s layout."""

    def example_loss(params, buffers, x_one, y_one):
        logits = functional_call(ensemble.template, (params, buffers), (x_one.unsqueeze(0),))
        return F.cross_entropy(logits, y_one.unsqueeze(0))

    params = {name: ensemble.module_layout(name, p.detach()) for name, p in ensemble.params.items()}
    per_model = vmap(grad(example_loss), in_dims=(None, None, 0, 0))
    return vmap(per_model, in_dims=(0, 0, 0, 0))(params, ensemble.buffers, x, y)


def _clip_factors(squared_norms: torch.Tensor, valid: torch.Tensor, clip_norm: float) -> torch.Tensor:
    factors = (clip_norm / (squared_norms.sqrt() + CLIP_STABILITY)).clamp(max=1.0)
    return factors * valid


def _generic_clipped_sums(
    ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, clip_norm: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    models, batch = y.shape
    per_example = sum(p[0].numel() for p in ensemble.params.values())
    chunk = max(1, min(batch, _GENERIC_CHUNK_FLOATS // max(1, models * per_example)))
    sums = {name: torch.zeros_like(p) for name, p in ensemble.params.items()}
    norms, losses = [], []
    for start in range(0, batch, chunk):
        part = slice(start, start + chunk)
        grads = per_example_gradients(ensemble, x[:, part], y[:, part])
        squared = sum(g.flatten(2).pow(2).sum(dim=2) for g in grads.values())
        factors = _clip_factors(squared, valid[:, part], clip_norm)
        for name, g in grads.items():
            clipped = torch.einsum("mb,mb...->m...", factors, g)
            sums[name] += ensemble.module_layout(name, clipped)
        norms.append(squared.sqrt())
        with torch.no_grad():
            losses.append(ensemble.example_losses(x[:, part], y[:, part]))
    return sums, torch.cat(norms, dim=1), torch.cat(losses, dim=1)


def _linear_clipped_sums(
    ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, clip_norm: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The MLP's (and logistic regression's) clipped sums from layer inputs and output gradients."""
    layers = ensemble.mlp_layers
    assert layers is not None
    params = ensemble.params
    h = x.flatten(2)
    inputs, outputs = [], []
    for position, (name, relu) in enumerate(layers):
        weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
        inputs.append(h)
        last = position == len(layers) - 1
        # hidden weights are stored (M, in, out), the output layer's (M, C, in)
        z = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2) if last else weight)
        outputs.append(z)
        h = torch.relu(z) if relu else z
    losses = F.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
    output_grads = torch.autograd.grad((losses * valid).sum(), outputs)
    squared = torch.zeros_like(losses)
    for a, g in zip(inputs, output_grads, strict=True):
        squared += a.pow(2).sum(dim=2) * g.pow(2).sum(dim=2) + g.pow(2).sum(dim=2)
    factors = _clip_factors(squared.detach(), valid, clip_norm)
    sums = {}
    for position, ((name, _), a, g) in enumerate(zip(layers, inputs, output_grads, strict=True)):
        scaled = g * factors.unsqueeze(2)
        last = position == len(layers) - 1
        sums[f"{name}.weight"] = torch.bmm(scaled.transpose(1, 2), a) if last else torch.bmm(a.transpose(1, 2), scaled)
        sums[f"{name}.bias"] = scaled.sum(dim=1)
    return {name: t.detach() for name, t in sums.items()}, squared.detach().sqrt(), losses.detach()


def clipped_gradient_sums(
    ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, clip_norm: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Sum over each model's batch of its examples' gradients, each scaled to norm at most
    ``clip_norm``; padding (``valid`` False) counts for nothing.

    Args:
        x: ``(M, B, *features)``; y, valid: ``(M, B)``.

    Returns:
        parameter name -> ``(M, *shape)`` in the ensemble's own layout (what ``.grad`` takes),
        every example's gradient norm before clipping ``(M, B)``, and its loss ``(M, B)``.
    """
    valid = valid.to(x.dtype)
    if ensemble.mlp_layers is not None:
        return _linear_clipped_sums(ensemble, x, y, valid, clip_norm)
    return _generic_clipped_sums(ensemble, x, y, valid, clip_norm)


def poisson_batches(
    train_indices: Sequence[np.ndarray], sample_rate: float, rngs: Sequence[np.random.Generator],
) -> np.ndarray:
    """One step's batch for every model: each of its rows drawn independently with
    probability ``sample_rate``. Returns ``(M, width)`` row indices, -1 for padding."""
    drawn = [indices[rng.random(len(indices)) < sample_rate] for indices, rng in zip(train_indices, rngs, strict=True)]
    width = max(1, max(len(d) for d in drawn))
    batch = np.full((len(drawn), width), -1, dtype=np.int64)
    for model, rows in enumerate(drawn):
        batch[model, : len(rows)] = rows
    return batch


def train_private_ensemble(
    ensemble: Ensemble,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    train_indices: Sequence[np.ndarray],
    sample_rngs: Sequence[np.random.Generator],
    noise_seeds: Sequence[int],
    settings: TrainSettings,
    private: PrivateTraining,
    steps: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """Train every model of ``ensemble`` in place with DP-SGD: ``steps`` Poisson-sampled steps
    per epoch for ``settings.epochs`` epochs (what the accountant was told).

    A model's batches and noise come from its own generators (``sample_rngs``, ``noise_seeds``),
    so it trains the same whichever models share its ensemble (up to float rounding: the padded
    batch width depends on the other models' draws).

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    params = ensemble.params
    optimizer = make_optimizer(list(params.values()), settings)
    noise = [torch.Generator().manual_seed(seed) for seed in noise_seeds]
    total_steps = steps * settings.epochs
    step = 0
    for epoch in range(settings.epochs):
        epoch_loss = torch.zeros((), device=ensemble.device)
        for _ in range(steps):
            set_learning_rate(optimizer, settings, step, total_steps)
            batch = torch.from_numpy(poisson_batches(train_indices, private.sample_rate, sample_rngs)).to(x.device)
            valid = batch >= 0
            rows = batch.clamp(min=0)
            sums, _, losses = clipped_gradient_sums(ensemble, x[rows], y[rows], valid, private.clip_norm)
            for name, param in params.items():
                draws = torch.stack([
                    torch.randn(param.shape[1:], generator=generator, dtype=param.dtype) for generator in noise
                ]).to(param.device)
                param.grad = (sums[name] + private.noise_multiplier * private.clip_norm * draws) \
                    / private.expected_batch_size
            optimizer.step()
            counts = valid.sum(dim=1).clamp(min=1)
            epoch_loss += ((losses * valid).sum(dim=1) / counts).mean()
            step += 1
        mean_loss = float(epoch_loss) / steps
        check_finite_loss(mean_loss, epoch, what="DP-SGD training")
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
