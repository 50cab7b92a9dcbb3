"""The user's own PyTorch model: a factory returning an ``nn.Module``, trained under the
config's ``train`` settings with the same seeds, data order and queries as the built-in
architectures.

Modules that can be stacked train as one vectorized ensemble (``torch.func.stack_module_state``
and ``functional_call`` under ``vmap``, :class:`~truthserum.train.ensemble.Ensemble`); the
others train one after another as plain modules. The user does not choose: a module stacks
when it has no buffers (BatchNorm's running statistics are updated in place, which a stacked
ensemble cannot do) and one trial forward and backward pass of two stacked copies runs (dropout
in training mode, for one, does not run under ``vmap``). The results record which path ran.
Both paths draw a model's initialisation, data order and augmentation from (seed, model index)
alone, so a stackable module trained either way reaches the same weights up to float rounding.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from truthserum import seeding
from truthserum.config import RunConfig
from truthserum.errors import ConfigError, TrainingError
from truthserum.query.probabilities import looks_like_probabilities
from truthserum.query.views import View, apply_view, batch_rows
from truthserum.train.augment import Augment, augment_images, draw_augmentations
from truthserum.train.ensemble import (
    Ensemble, TrainSettings, check_finite_loss, epoch_batches, forward_precision, make_optimizer, set_learning_rate,
)
from truthserum.train.shard import EpochReport, TrainingJob, model_seed, shard_training_set, train_stacked_shard

ModuleFactory = Callable[[], nn.Module]


class TrainingPath(str, Enum):
    """How a shard's models were trained."""

    VECTORIZED = "vectorized"  # one stacked ensemble
    ONE_BY_ONE = "one-by-one"  # plain modules, one after another
    TRAINER = "trainer"  # the user's own training code (truthserum.train.trainers)


def architecture_of(module: nn.Module) -> tuple:
    """What must agree for two modules to be the same architecture: every submodule's type and
    every parameter's and buffer's name, shape and dtype."""
    return (
        tuple((name, type(sub).__qualname__) for name, sub in module.named_modules()),
        tuple((name, tuple(p.shape), str(p.dtype)) for name, p in module.named_parameters()),
        tuple((name, tuple(b.shape), str(b.dtype)) for name, b in module.named_buffers()),
    )


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _source_of(module: nn.Module) -> str:
    """The source of the module's class (its forward), where Python can find it."""
    try:
        return inspect.getsource(type(module))
    except (OSError, TypeError):  # defined in an interactive session: the other records remain
        return type(module).__qualname__


def describe_module(module: nn.Module, *, initial: bool = False) -> dict:
    """The module's class, trainable parameter count and fingerprints: of its architecture
    (submodule types, parameter and buffer shapes), its ``repr`` (hyper-parameters such as a
    dropout rate) and its class's source. With ``initial``, of its initial weights too (model
    0's: they reflect the factory's initialisation code). A run directory records them, so a
    resumed run never mixes the shards of two models."""
    described = {
        "kind": "torch.nn.Module",
        "class": type(module).__qualname__,
        "parameters": int(sum(p.numel() for p in module.parameters() if p.requires_grad)),
        "architecture_sha256": _sha256(repr(architecture_of(module))),
        "repr_sha256": _sha256(repr(module)),
        "source_sha256": _sha256(_source_of(module)),
    }
    if initial:
        digest = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        described["initial_weights_sha256"] = digest.hexdigest()
    return described


def _call_factory(factory: ModuleFactory) -> nn.Module:
    try:
        return factory()
    except Exception as exc:  # noqa: BLE001 - the user's code: one line, not a traceback
        raise ConfigError(f"model: the factory raised {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_modules(factory: ModuleFactory, seeds: Sequence[int]) -> list[nn.Module]:
    """One module per seed, each built right after ``torch.manual_seed(seed)``; all must be
    ``nn.Module`` instances of one architecture with parameters to train.

    Raises:
        ConfigError: the factory returned something else, a module without parameters, or
            different architectures on different calls.
    """
    modules = []
    for seed in seeds:
        torch.manual_seed(seed)
        module = _call_factory(factory)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model: the factory must return a torch.nn.Module, got {type(module).__name__}")
        if not any(p.requires_grad for p in module.parameters()):
            raise ConfigError(f"model: the factory's {type(module).__name__} has no parameters to train")
        modules.append(module)
    first = architecture_of(modules[0])
    for call, module in enumerate(modules[1:], start=2):
        if architecture_of(module) != first:
            raise ConfigError(
                f"model: the factory returned different architectures on different calls (call 1: "
                f"{describe_module(modules[0])['class']} with {describe_module(modules[0])['parameters']} parameters, "
                f"call {call}: {describe_module(module)['class']} with {describe_module(module)['parameters']}); "
                "it must build the same architecture every time"
            )
    return modules


def check_outputs(module: nn.Module, sample: torch.Tensor, num_classes: int) -> None:
    """One forward pass of a fresh module on a few points: ``(B, num_classes)`` finite outputs.

    Raises:
        ConfigError: another output shape, or NaN or inf outputs.
    """
    try:
        with torch.no_grad():
            out = module.eval()(sample)
    except Exception as exc:  # noqa: BLE001 - the user's module: one line, not a traceback
        hint = " (images arrive as (C, H, W): a dense model starts with nn.Flatten())" if sample.dim() == 4 else ""
        raise ConfigError(f"model: the module cannot take the data's {tuple(sample.shape[1:])} points{hint}: "
                          f"{type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        module.train()
    if not isinstance(out, torch.Tensor) or out.shape != (sample.shape[0], num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model: the module maps {tuple(sample.shape)} inputs to {shape}; it must return "
            f"({sample.shape[0]}, {num_classes}) logits, one per class of the data"
        )
    if not torch.isfinite(out).all():
        raise ConfigError("model: the freshly built module outputs NaN or inf on the data")
    if num_classes > 1 and looks_like_probabilities(out.double().numpy()):
        raise ConfigError("model: the module returns probabilities (every row in [0, 1] sums to 1: a Softmax at the "
                          "end?); return logits: the training's cross-entropy applies the softmax")


def stacking_obstacle(modules: Sequence[nn.Module], sample: torch.Tensor) -> str | None:
    """Why these modules cannot train as one stacked ensemble, or None when they can."""
    buffers = [name for name, _ in modules[0].named_buffers()]
    if buffers:
        return f"it has buffers ({', '.join(buffers[:3])}{', ...' if len(buffers) > 3 else ''}) updated in training"
    frozen = [name for name, p in modules[0].named_parameters() if not p.requires_grad]
    if frozen:  # a stacked ensemble trains every parameter it stacks
        return f"it has frozen parameters ({', '.join(frozen[:3])}{', ...' if len(frozen) > 3 else ''})"
    try:
        trial = Ensemble([copy.deepcopy(module) for module in modules[:2]], torch.device("cpu"))
        out = trial.forward_per_model(sample.unsqueeze(0).expand(trial.num_models, *sample.shape))
        out.float().sum().backward()
    except Exception as exc:  # noqa: BLE001 - any failure to stack means: train one by one
        if "randomness" in str(exc):  # vmap's words for dropout and other random draws in training
            return "it draws random numbers in training (dropout?), which stacked models cannot share"
        return f"stacked training failed ({_first_line(exc)})"
    return None


def train_module(
    module: nn.Module, *, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, order_rng: np.random.Generator,
    augment_rng: np.random.Generator, settings: TrainSettings, steps: int,
    on_epoch: EpochReport | None = None,
) -> list[float]:
    """Train one plain module in place: the batches, learning rates and augmentation draws the
    stacked ensemble would give it (:func:`~truthserum.train.ensemble.train_ensemble`).

    Returns:
        The mean training loss of each epoch.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    device = x.device
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, settings)
    total_steps = steps * settings.epochs
    step = 0
    losses = []
    module.train()
    for epoch in range(settings.epochs):
        batches = epoch_batches([indices], steps, [order_rng])  # (steps, 1, width)
        draws = (draw_augmentations(batches, [augment_rng], settings.augment)
                 if settings.augment is not Augment.NONE else None)
        epoch_loss = 0.0
        for index in range(steps):
            set_learning_rate(optimizer, settings, step, total_steps)
            valid = batches[index, 0] >= 0
            optimizer.zero_grad(set_to_none=True)
            if valid.any():
                rows = torch.from_numpy(batches[index, 0][valid]).to(device)
                inputs = x[rows]
                if draws is not None:
                    flip, top, left = (torch.from_numpy(a[index, 0][valid][None]).to(device)
                                       for a in (draws.flip, draws.top, draws.left))
                    inputs = augment_images(inputs.unsqueeze(0), flip, top, left)[0]
                with forward_precision(settings, device):
                    loss = F.cross_entropy(module(inputs).float(), y[rows])
                loss.backward()
                epoch_loss += loss.item()
            else:  # an empty batch still steps, as a stacked model with only padding does
                for p in params:
                    p.grad = torch.zeros_like(p)
            optimizer.step()
            step += 1
        mean_loss = epoch_loss / steps
        check_finite_loss(float(mean_loss), epoch)
        losses.append(mean_loss)
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    return losses


@torch.no_grad()
def query_module(module: nn.Module, x: torch.Tensor, views: Sequence[View], *, batch_size: int = 1024,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """``(N, A, C)`` float32 logits of one module (in eval mode) on every point under every view
    (``rows`` numbers the points for noise views, as in :func:`~truthserum.query.views.query_logits`)."""
    module.eval()
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        numbers = batch_rows(rows, start, chunk.shape[0])
        outputs.append(torch.stack([module(apply_view(chunk, view, rows=numbers)) for view in views],
                                   dim=1).float().cpu())
    return torch.cat(outputs).numpy()


def check_finite_logits(logits: np.ndarray, models: range) -> None:
    """Raise :class:`TrainingError` naming the first model whose outputs hold NaN or inf."""
    bad = ~np.isfinite(logits).reshape(len(models), -1).all(axis=1)
    if bad.any():
        model = models[int(np.argmax(bad))]
        raise TrainingError(f"model {model}: the trained module outputs NaN or inf; lower train.learning_rate")


@dataclass
class ModuleTrainer:
    """A shard trainer (:data:`~truthserum.train.shard.ShardTrainer`) for a factory of the user's
    ``nn.Module``; it records which path trained the shards and why."""

    factory: ModuleFactory
    trained: dict[TrainingPath, int] = field(default_factory=dict)  # models trained on each path
    reason: str | None = None  # why the modules trained one by one
    described: dict = field(default_factory=dict)

    @property
    def path(self) -> TrainingPath | None:
        """The path every model trained in this process took (None: none trained, or several)."""
        return next(iter(self.trained)) if len(self.trained) == 1 else None

    def describe(self, config: RunConfig, sample: np.ndarray, num_classes: int) -> dict:
        """Build models 0 and 1 and check them on ``sample`` (a few of the data's points) before
        anything is written; their description."""
        modules = build_modules(self.factory, [model_seed(config, 0), model_seed(config, 1)])
        sample = torch.from_numpy(np.ascontiguousarray(sample))
        check_outputs(modules[0], sample, num_classes)
        self.described = describe_module(modules[0], initial=True)
        self.reason = stacking_obstacle(modules, sample)
        return self.described

    def progress(self, config: RunConfig, models: range) -> tuple[int, str]:
        """What a shard reports: epochs of the stacked ensemble, or one report per model."""
        return (config.train.epochs, "epoch") if self.reason is None else (len(models), "model")

    def __call__(
        self, config: RunConfig, job: TrainingJob, models: range, device: torch.device,
        on_epoch: EpochReport | None = None,
    ) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        modules = build_modules(self.factory, [model_seed(config, m) for m in models])
        built = describe_module(modules[0])
        if self.described and built["architecture_sha256"] != self.described["architecture_sha256"]:
            raise ConfigError(
                f"model: the factory returned different architectures on different calls ({self.described['class']} "
                f"with {self.described['parameters']} parameters, then {built['class']} with {built['parameters']}); "
                "it must build the same architecture every time"
            )
        self.described = self.described or built
        sample = torch.from_numpy(job.x[:2])
        check_outputs(modules[0], sample, job.num_classes)
        # a property of the architecture, so every shard (one of a single model too) takes the same path
        obstacle = stacking_obstacle([modules[0], modules[-1]], sample)
        if obstacle is None:
            path = TrainingPath.VECTORIZED
            shard = train_stacked_shard(config, job, models, Ensemble(modules, device), device, on_epoch,
                                        started=started)
        else:
            path, self.reason = TrainingPath.ONE_BY_ONE, obstacle
            shard = self._one_by_one(config, job, models, modules, device, on_epoch, started)
        self.trained[path] = self.trained.get(path, 0) + len(models)
        check_finite_logits(shard["logits"], models)
        return shard

    def _one_by_one(
        self, config: RunConfig, job: TrainingJob, models: range, modules: list[nn.Module], device: torch.device,
        on_epoch: EpochReport | None, started: float,
    ) -> dict[str, np.ndarray]:
        if job.private is not None:
            raise ConfigError(f"defense dp-sgd needs modules that train stacked; these train one by one "
                              f"({self.reason})")
        x, y, train_indices = shard_training_set(job, models)
        x_t, y_t = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        queries = torch.from_numpy(job.queries).to(device)
        views = config.query.resolved_views()
        steps = job.steps_per_epoch(config.train.batch_size)
        logits, losses = [], np.zeros(config.train.epochs)
        for position, (m, module) in enumerate(zip(models, modules, strict=True)):
            module.to(device)
            model_losses = train_module(
                module, x=x_t, y=y_t, indices=train_indices[position],
                order_rng=seeding.rng(config.seed, "order", m), augment_rng=seeding.rng(config.seed, "augment", m),
                settings=config.train.settings(), steps=steps,
            )
            losses += np.asarray(model_losses) / len(models)
            logits.append(query_module(module, queries, views, rows=job.query_rows))
            if on_epoch is not None:  # one report per model: the bar counts models here
                on_epoch(position, model_losses[-1])
        return {
            "logits": np.stack(logits).astype(np.float32),
            "models": np.array(list(models), dtype=np.int64),
            "loss": losses,
            "train_seconds": np.float64(time.perf_counter() - started),
        }
