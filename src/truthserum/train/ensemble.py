"""Stage 4, train: many models of one architecture trained as one batched computation.

The parameters of M models are stacked along a leading axis and the forward pass is
``torch.func.vmap`` over ``functional_call``: linear layers become batched matmuls and
convolutions grouped ones, so M small models cost about one M-times-wider model instead of M
Python-level training loops. Each model still has its own initialisation (its own seed), its
own member subset and its own data order (its own generator). Because the optimiser updates
are elementwise, a stock ``torch.optim`` optimiser over the stacked tensors is exactly M
independent optimisers; summing the M per-model mean losses keeps their gradients separate.

Two options matter for image models trained on a GPU. Augmentation (``TrainSettings.augment``,
:mod:`truthserum.train.augment`) flips and crops each model's training examples with draws from
that model's own generator. Mixed precision (``TrainSettings.mixed_precision``) runs the forward
pass and the loss in bfloat16 under ``torch.autocast`` on CUDA only; the parameters, their
gradients and the optimiser stay float32, and bfloat16 has float32's range, so no loss scaling is
needed. On the CPU it is never used, so CPU runs stay bit-for-bit reproducible.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from truthserum.errors import TrainingError
from truthserum.train.augment import Augment, augment_images, check_augment_fits_data, draw_augmentations
from truthserum.train.conv_ops import cnn_forward, cnn_layers


class OptimizerName(str, Enum):
    SGD = "sgd"
    ADAM = "adam"


class Schedule(str, Enum):
    CONSTANT = "constant"
    COSINE = "cosine"


class ConvPath(str, Enum):
    """How an ensemble of convolutional models runs its forward and backward passes.

    ``vmap``: ``torch.func.vmap`` over the models, so every convolution becomes one grouped
    convolution over all of them. On a GPU that is one large kernel launch instead of M small
    ones. On the CPU the grouped convolution's backward is slow, and its cost per model grows
    with M (benchmarks/README.md). ``per-model``: each model's own standard convolutions in turn
    within the shard, on views of the stacked parameters, so the stacked optimiser update and
    the batch gathering stay shared. Both compute the same function; only floating-point
    rounding differs (tests/test_conv_ops.py).
    """

    VMAP = "vmap"
    PER_MODEL = "per-model"


def default_conv_path(device: torch.device) -> ConvPath:
    """The faster path measured for the device: per-model on the CPU (benchmarks/README.md,
    convolutional models at 8 to 64 models), vmap elsewhere (a GPU's grouped convolutions)."""
    return ConvPath.PER_MODEL if torch.device(device).type == "cpu" else ConvPath.VMAP


def has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(layer, nn.Conv2d) for layer in module.modules())


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation hyper-parameters shared by every model of an ensemble."""

    optimizer: OptimizerName
    learning_rate: float
    epochs: int
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.CONSTANT
    augment: Augment = Augment.NONE
    mixed_precision: bool = False


def _mlp_layers(template: nn.Module) -> list[tuple[str, bool]] | None:
    """For ``Flatten, (Linear, ReLU)*, Linear`` (the MLP and logistic regression): each Linear's
    name and whether a ReLU follows it. None for any other architecture."""
    if not isinstance(template, nn.Sequential) or not isinstance(template[0], nn.Flatten):
        return None
    layers: list[tuple[str, bool]] = []
    modules = list(template.named_children())[1:]
    for position, (name, module) in enumerate(modules):
        if isinstance(module, nn.Linear) and module.bias is not None:
            following = modules[position + 1][1] if position + 1 < len(modules) else None
            layers.append((name, isinstance(following, nn.ReLU)))
        elif not isinstance(module, nn.ReLU) or not layers or not layers[-1][1]:
            return None
    return layers if layers and not layers[-1][1] else None


class _ClassMajorOutput(torch.autograd.Function):
    """An MLP's output layer, ``(M, B, in) -> (M, C, B)``: logits with the classes before the
    batch, from a weight stored as ``nn.Linear`` stores it, ``(M, C, in)``.

    Why: with few classes (C = 10), every product with C as its last dimension is a thin,
    slow matmul on the CPU (about 25 GFLOP/s here against 170 for the first layer). In this
    orientation the forward product and the weight gradient have the batch or the input width
    as their last dimension and run 3-4 times faster, and cross-entropy reads the classes
    along dimension 1 directly. The backward is written out so that the hidden layer's
    gradient comes back contiguous ``(M, B, in)``; autograd's own would be a transposed view,
    and the ReLU backward over that view costs more than the layer itself.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        return torch.baddbmm(bias.unsqueeze(2), weight, h.transpose(1, 2))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_h = torch.bmm(grad.transpose(1, 2), weight) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(grad, h) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(dim=2) if ctx.needs_input_grad[2] else None
        return grad_h, grad_weight, grad_bias


class Ensemble:
    """The stacked parameters of M models that share one architecture.

    ``params`` maps each parameter's name in one model to its stacked tensor, which the
    optimiser updates. Most architectures run through ``vmap``. An MLP runs as explicit batched
    matmuls instead (``baddbmm`` per layer): each hidden Linear weight is stored transposed, as
    ``(M, in, out)``, so that no pass copies or transposes a weight and the fused optimiser
    sees contiguous tensors; the output layer keeps ``(M, C, in)`` and trains class-major
    (:class:`_ClassMajorOutput`). That is most of what separates vmap's MLP from the
    machine's matmul peak. Both compute the same function.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device, *, conv_path: ConvPath | None = None):
        params, buffers = stack_module_state([model.to(device) for model in models])
        # A weightless copy that only supplies the forward code.
        self._template = copy.deepcopy(models[0]).to("meta")
        self._mlp = _mlp_layers(self._template)
        # convolutional models: the path measured fastest for the device unless one is asked for
        self.conv_path = (conv_path or default_conv_path(device)) if has_convolutions(self._template) else None
        self._cnn = cnn_layers(self._template)  # the plain CNN's per-model path has faster layers
        self.params = {name: self._stacked_leaf(name, p) for name, p in params.items()}
        self.buffers = {name: b.detach().clone() for name, b in buffers.items()}
        self.device = device
        self.num_models = len(models)

    def _stacked_leaf(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        if self.stored_transposed(name):
            stacked = stacked.transpose(1, 2)  # a hidden layer: (M, in, out)
        return stacked.detach().contiguous().clone().requires_grad_(True)

    def stored_transposed(self, name: str) -> bool:
        """Whether parameter ``name`` is stored transposed against ``nn.Module``'s layout (an
        MLP's hidden weights, ``(M, in, out)``)."""
        return self._mlp is not None and name.endswith(".weight") and name != f"{self._mlp[-1][0]}.weight"

    def module_layout(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        """``stacked`` (parameter ``name`` of every model, or a gradient of it) in ``nn.Module``'s
        layout: a view, transposed where the ensemble stores it transposed (the inverse too)."""
        return stacked.transpose(1, 2) if self.stored_transposed(name) else stacked

    @property
    def template(self) -> nn.Module:
        """A weightless copy of one model: the forward code for ``functional_call``."""
        return self._template

    @property
    def mlp_layers(self) -> list[tuple[str, bool]] | None:
        """For an MLP or logistic regression, each Linear's name and whether a ReLU follows it
        (None for any other architecture): what per-example gradients of Linear layers need."""
        return self._mlp

    def _mlp_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden layers. ``h`` is ``(M, B, D)`` or, for a batch shared by every model,
        ``(B, D)``; returns ``(M, B, hidden)``, or ``h`` itself for logistic regression."""
        assert self._mlp is not None
        for name, relu in self._mlp[:-1]:
            weight, bias = self.params[f"{name}.weight"], self.params[f"{name}.bias"]  # (M, in, out)
            if h.dim() == 2:  # the first layer of a shared batch: one matmul broadcast over models
                h = torch.matmul(h, weight) + bias.unsqueeze(1)
            else:
                h = torch.baddbmm(bias.unsqueeze(1), h, weight)
            if relu:  # in place: baddbmm's backward needs its inputs, not its output
                h = torch.relu_(h)
        return h

    def _mlp_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._mlp is not None
        name = self._mlp[-1][0]
        return self.params[f"{name}.weight"], self.params[f"{name}.bias"]  # (M, C, in), (M, C)

    def _mlp_forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` is ``(M, B, D)`` or ``(B, D)``; returns ``(M, B, C)``."""
        h = self._mlp_hidden(h)
        weight, bias = self._mlp_output()
        if h.dim() == 2:  # logistic regression on a shared batch
            return torch.matmul(h, weight.transpose(1, 2)) + bias.unsqueeze(1)
        return _ClassMajorOutput.apply(h, weight, bias).transpose(1, 2)

    @classmethod
    def initialise(
        cls, make_model: Callable[[], nn.Module], seeds: Sequence[int], device: torch.device, *,
        conv_path: ConvPath | None = None,
    ) -> Ensemble:
        """One model per seed, each initialised from ``torch.manual_seed(seed)`` alone, so a
        model's initial weights do not depend on which other models share its ensemble."""
        models = []
        for seed in seeds:
            torch.manual_seed(seed)
            models.append(make_model())
        return cls(models, device, conv_path=conv_path)

    def _call(self, params, buffers, x):
        return functional_call(self._template, (params, buffers), (x,))

    def _each_model(self, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
        """The per-model path: model m's own forward on views of the stacked tensors (``unbind``,
        whose backward writes each model's gradient into its slice of one stacked gradient)."""
        params = {name: p.unbind(0) for name, p in self.params.items()}
        buffers = {name: b.unbind(0) for name, b in self.buffers.items()}
        return torch.stack([
            functional_call(self._template, ({name: p[m] for name, p in params.items()},
                                             {name: b[m] for name, b in buffers.items()}), (x if shared else x[m],))
            for m in range(self.num_models)
        ])

    def forward_per_model(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is ``(M, B, *features)``, a batch per model; returns ``(M, B, C)``."""
        if self._mlp is not None:
            return self._mlp_forward(x.flatten(2))
        if self.conv_path is ConvPath.PER_MODEL:
            if self._cnn is not None:
                return cnn_forward(self._cnn, self.params, x, shared=False)
            return self._each_model(x, shared=False)
        return vmap(self._call, in_dims=(0, 0, 0))(self.params, self.buffers, x)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is ``(B, *features)``, the same batch for every model; returns ``(M, B, C)``."""
        if self._mlp is not None:
            return self._mlp_forward(x.flatten(1))
        if self.conv_path is ConvPath.PER_MODEL:
            if self._cnn is not None:
                return cnn_forward(self._cnn, self.params, x, shared=True)
            return self._each_model(x, shared=True)
        return vmap(self._call, in_dims=(0, 0, None))(self.params, self.buffers, x)

    def example_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every model on its own batch: ``x`` is ``(M, B, *features)``,
        ``y`` is ``(M, B)`` labels; returns ``(M, B)``."""
        if self._mlp is not None:
            weight, bias = self._mlp_output()
            logits = _ClassMajorOutput.apply(self._mlp_hidden(x.flatten(2)), weight, bias)  # (M, C, B)
            return F.cross_entropy(logits, y, reduction="none")
        logits = self.forward_per_model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)


def steps_per_epoch(largest_train_set: int, batch_size: int) -> int:
    """Optimiser steps per epoch: enough batches of ``batch_size`` for the largest model."""
    return max(1, math.ceil(largest_train_set / batch_size))


def epoch_batches(
    train_indices: Sequence[np.ndarray], steps: int, rngs: Sequence[np.random.Generator]
) -> np.ndarray:
    """Index batches of one epoch for every model.

    Every model sees each of its training points exactly once per epoch, in its own random
    order, split into ``steps`` near-equal batches. Models have slightly different
    training-set sizes; giving all of them the same step count (set by the largest model of
    the whole experiment, not of this ensemble) keeps a model's batches independent of which
    models share its ensemble. The shortfall is padding marked -1.

    Returns:
        ``(steps, M, width)`` int64 indices into the training arrays, -1 for padding.
    """
    width = math.ceil(max(len(indices) for indices in train_indices) / steps)
    batches = np.full((steps, len(train_indices), width), -1, dtype=np.int64)
    for model, (indices, rng) in enumerate(zip(train_indices, rngs, strict=True)):
        for step, chunk in enumerate(np.array_split(rng.permutation(indices), steps)):
            batches[step, model, : len(chunk)] = chunk
    return batches


def make_optimizer(params: list[torch.Tensor], settings: TrainSettings) -> torch.optim.Optimizer:
    # fused: one pass over each stacked tensor per step instead of one per arithmetic operation;
    # with M models' parameters far outside the cache, the unfused update costs as much as the
    # matmuls of a small model's step
    if settings.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(
            params, lr=settings.learning_rate, momentum=settings.momentum,
            weight_decay=settings.weight_decay, fused=True,
        )
    return torch.optim.Adam(params, lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=True)


def lr_factor(schedule: Schedule, step: int, total_steps: int) -> float:
    if schedule is Schedule.COSINE:
        return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return 1.0


def set_learning_rate(optimizer: torch.optim.Optimizer, settings: TrainSettings, step: int, total_steps: int) -> None:
    """The schedule's learning rate for optimiser step ``step`` of ``total_steps``."""
    for group in optimizer.param_groups:
        group["lr"] = settings.learning_rate * lr_factor(settings.schedule, step, total_steps)


def check_finite_loss(mean_loss: float, epoch: int, *, what: str = "training") -> None:
    """Raise :class:`TrainingError` when an epoch's mean loss is NaN or infinite."""
    if not math.isfinite(mean_loss):
        raise TrainingError(f"{what} diverged (loss {mean_loss}) in epoch {epoch + 1}; lower train.learning_rate")


def uses_mixed_precision(settings: TrainSettings, device: torch.device) -> bool:
    """bfloat16 autocast only when asked for, on CUDA, on a GPU that has bfloat16 (Ampere or
    newer; older GPUs train in float32). Never on the CPU: CPU numbers stay reproducible."""
    return settings.mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported()


def forward_precision(settings: TrainSettings, device: torch.device) -> contextlib.AbstractContextManager:
    if uses_mixed_precision(settings, device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_ensemble(
    ensemble: Ensemble,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    train_indices: Sequence[np.ndarray],
    order_rngs: Sequence[np.random.Generator],
    settings: TrainSettings,
    steps: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    augment_rngs: Sequence[np.random.Generator] | None = None,
) -> None:
    """Train every model of ``ensemble`` in place on its own subset of ``(x, y)``.

    Args:
        ensemble: M stacked models.
        x, y: every training point any model uses (pool and poisons), on the ensemble's device.
        train_indices: per model, the rows of ``x`` it trains on.
        order_rngs: per model, the generator of its data order.
        settings: hyper-parameters.
        steps: optimiser steps per epoch; by default enough for the largest subset here.
            Pass the experiment-wide value so that shards do not change a model's training.
        on_epoch: called after each epoch with (epoch, mean training loss).
        augment_rngs: per model, the generator of its augmentation draws; required when
            ``settings.augment`` is on (a model's own stream, like its data order, so that it
            trains the same whichever models share its ensemble), unused otherwise.

    Raises:
        ConfigError: ``settings.augment`` is on but ``x`` holds no images large enough.
        TrainingError: the loss became NaN or infinite.
    """
    augmenting = settings.augment is not Augment.NONE
    if augmenting:
        check_augment_fits_data(settings.augment, tuple(x.shape[1:]))
        if augment_rngs is None or len(augment_rngs) != len(train_indices):
            raise ValueError("train.augment is on: pass one augmentation generator per model (augment_rngs)")
    params = list(ensemble.params.values())
    optimizer = make_optimizer(params, settings)
    if steps is None:
        steps = steps_per_epoch(max(len(i) for i in train_indices), settings.batch_size)
    total_steps = steps * settings.epochs
    step = 0
    gathered = torch.empty((0,), dtype=x.dtype, device=x.device)  # index_select(out=) sizes it
    for epoch in range(settings.epochs):
        index_batches = epoch_batches(train_indices, steps, order_rngs)
        batches = torch.from_numpy(index_batches).to(ensemble.device)
        if augmenting:
            assert augment_rngs is not None
            draws = draw_augmentations(index_batches, augment_rngs, settings.augment)
            flips, tops, lefts = (
                torch.from_numpy(a).to(ensemble.device) for a in (draws.flip, draws.top, draws.left)
            )
        epoch_loss = torch.zeros((), device=ensemble.device)  # summed on the device: no sync per step
        for index, batch in enumerate(batches):
            set_learning_rate(optimizer, settings, step, total_steps)
            valid = batch >= 0
            rows = batch.clamp(min=0)
            # into one buffer reused every step: a fresh tensor this large costs its page
            # faults again each time (the previous step's graph, the only other reader, is freed)
            torch.index_select(x, 0, rows.flatten(), out=gathered)
            inputs = gathered.view(*rows.shape, *x.shape[1:])
            if augmenting:
                inputs = augment_images(inputs, flips[index], tops[index], lefts[index])
            with forward_precision(settings, ensemble.device):
                losses = ensemble.example_losses(inputs, y[rows])
            per_model = (losses.float() * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            per_model.sum().backward()
            optimizer.step()
            epoch_loss += per_model.detach().mean()
            step += 1
        mean_loss = float(epoch_loss) / len(batches)
        check_finite_loss(mean_loss, epoch)
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
