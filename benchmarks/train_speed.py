"""Benchmark: training M small models as one vectorised ensemble against a plain sequential
PyTorch loop, on identical work, with the machine's float32 matmul peak for scale.

Run: ``.venv/bin/python benchmarks/train_speed.py`` (``--quick`` for a smoke test of a few
seconds; ``--arch mlp``, ``--models 8 32``, ``--epochs``, ``--batch-size``, ``--hidden``,
``--channels``, ``--out``). It prints a table and writes JSON (default
``benchmarks/results/train_speed.json``).

The two contestants
    * ensemble: ``Ensemble.initialise(make_model, seeds, cpu)`` and ``train_ensemble(...)``,
      called as the product's training stage calls them: M models stacked into one ensemble,
      Adam (fused: one pass per stacked tensor), a constant learning rate, the experiment-wide ``steps_per_epoch``.
    * sequential: what peer libraries write. For each model in turn an ordinary ``nn.Module``
      from the same ``build_model``, a ``DataLoader(TensorDataset(x_m, y_m), batch_size=B,
      shuffle=True, generator=seeded)``, its own ``torch.optim.Adam`` with the same learning
      rate, ``zero_grad / cross_entropy / backward / step`` for the same epochs.

Identical work
    Same architecture, hyper-parameters and number of models; model m starts from the same
    weights (``torch.manual_seed(seed_m)`` before ``build_model``) and trains on the same
    member subset in both: a seeded random ``--subset`` points (default 2,500, half of the
    5,000 MNIST digits). Every model gets exactly the same subset *size*, so the ensemble pads
    nothing. The script checks that ``steps_per_epoch(subset, B)`` equals ``len(DataLoader)``:
    both take the same number of optimiser steps and see every point once per epoch.
    (Only the batch shapes differ slightly: the ensemble splits an epoch into that many
    near-equal batches, 20 batches of 125 for 2,500 points and B=128; the DataLoader takes
    19 batches of 128 and one of 68. The examples, and so the FLOPs, per epoch are equal.)

What is timed
    Only training: the ``train_ensemble`` call, and for the sequential loop the construction
    of each model's DataLoader and optimiser plus its epochs. Loading the data, drawing the
    subsets, gathering each model's ``x_m, y_m`` and building the models are not timed. The
    per-step data handling of each approach is timed, because it is part of its loop: the
    ensemble's index batches and gathers ``x[rows]``, the DataLoader's sampling and collation.
    Before timing, each approach is run once on a tiny case to warm up allocators and kernels.
    Each row then runs the two contestants ``--repeats`` times (default 3), alternating, and
    keeps each one's fastest run (the JSON has every run): timings on a shared 2-core machine
    vary by 10% within one invocation and by up to a third between invocations (the
    sequential loop far more than the ensemble), and the minimum is the least disturbed
    measurement of either contestant.

FLOP counting (``training_flops_per_example``)
    A dummy forward of one example walks the module with forward hooks on every ``nn.Linear``
    and ``nn.Conv2d`` (so any ``build_model`` architecture is counted), and per example counts
        Linear  (in -> out):        forward 2*in*out, weight gradient 2*in*out,
                                    input gradient 2*in*out except for the first layer;
        Conv2d  (Cin -> Cout, k*k): forward 2*(Cin/groups)*Cout*k*k*Hout*Wout, the same for the
                                    weight gradient, and for the input gradient except for the
                                    first layer.
    "First layer" is detected, not assumed: a layer's input gradient is counted when its input
    requires a gradient, and the dummy input does not. Biases, activations, pooling, the loss
    and the optimiser update are ignored: they are elementwise, a few per cent at most. The
    count is the useful matrix-multiply work, so "% of peak" below is against the measured
    matmul peak and is a meaningful efficiency.

    Hand check, MLP 784 -> 256 -> 10 (the default): the layers hold 784*256 = 200,704 and
    256*10 = 2,560 multiply-adds. Forward 2*(200,704 + 2,560) = 406,528; weight gradients the
    same, 406,528; input gradient only for the second layer, 2*2,560 = 5,120. Total 818,176
    FLOP per example, so 8 models * 2,500 points * 1 epoch = 16.4 GFLOP.
    CNN (16, 32) on 1x28x28: conv1 1*16*9*28*28 = 112,896, conv2 16*32*9*14*14 = 903,168,
    linear 32*7*7*10 = 15,680 multiply-adds; total 2*(1,031,744)*2 + 2*(903,168 + 15,680)
    = 5,964,672 FLOP per example.

Floor (MLP rows)
    ``mlp_step_floor`` times, alone and hot in the cache, the batched matmuls of one ensemble
    step, shaped and oriented as the ensemble runs them, and one fused Adam update of its
    parameters. Their sum times the number of steps is the shortest the ensemble could train
    if gathering batches, biases, ReLUs, the loss and the loop's bookkeeping cost nothing: the
    table's "speed-up at most" and "% of peak at most" bound what this ensemble's kernels, in
    these layouts, with this machine's BLAS, can reach against this sequential loop. (Other
    layouts, fused kernels or lower precision could move it: the class-major output layer
    made one product 3-4 times faster.)

Peak
    ``torch.mm`` of square float32 matrices (default n = 1024, 2048, 4096): one warm-up, then
    the best of several repeats per size, FLOP = 2*n^3; the best size's GFLOP/s is the peak.
    It is measured before and after the training runs and the better of the two kept (the
    JSON has both), so a moment of contention on a shared machine does not deflate it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from truthserum import seeding
from truthserum.data.datasets import DataSource, load_dataset
from truthserum.train.architectures import Architecture, build_model
from truthserum.train.conv_ops import first_conv2d
from truthserum.train.ensemble import (
    ConvPath, Ensemble, OptimizerName, TrainSettings, default_conv_path, steps_per_epoch, train_ensemble,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_speed.json"
SEED = 0
LEARNING_RATE = 1e-3  # the product's default for Adam


@dataclass(frozen=True)
class Workload:
    """Everything both contestants share for one row of the table."""

    arch: str
    models: int
    epochs: int
    batch_size: int
    subset: int
    learning_rate: float
    hidden_sizes: tuple[int, ...]
    channels: tuple[int, ...]
    sequential_fused: bool = False


def measure_matmul_peak(sizes: tuple[int, ...], repeats: int) -> dict:
    """Best float32 ``torch.mm`` throughput over square sizes ``sizes``.

    Each size gets one untimed warm-up, then ``repeats`` timed products; a size's rate is its
    fastest repeat at 2*n^3 FLOP. Returns the per-size GFLOP/s and the best of them.
    """
    per_size = {}
    for n in sizes:
        generator = torch.Generator().manual_seed(n)
        a = torch.randn(n, n, generator=generator)
        b = torch.randn(n, n, generator=generator)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
        per_size[str(n)] = 2.0 * n**3 / best / 1e9
    return {"sizes": list(sizes), "repeats": repeats, "gflops_by_size": per_size,
            "peak_gflops": max(per_size.values())}


def combine_peaks(before: dict, after: dict) -> dict:
    """One peak from measurements before and after the training runs: per size the faster.

    On a shared machine a single measurement can catch another process; the better of two is
    closer to what the hardware can do, which is what "% of peak" should be measured against.
    """
    per_size = {n: max(before["gflops_by_size"][n], after["gflops_by_size"][n]) for n in before["gflops_by_size"]}
    return before | {"gflops_by_size": per_size, "peak_gflops": max(per_size.values()),
                     "before_gflops": before["peak_gflops"], "after_gflops": after["peak_gflops"]}


def training_flops_per_example(model: nn.Module, feature_shape: tuple[int, ...]) -> dict:
    """Training FLOPs of one example through ``model``: forward, weight and input gradients of
    every ``nn.Linear`` and ``nn.Conv2d`` (see the module docstring for the rules).

    A forward of one dummy example (no gradient needed for it) with hooks on those layers
    records each layer's shapes; a layer's input gradient counts when its input requires one.
    """
    counts = {"forward": 0, "weight_grad": 0, "input_grad": 0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            positions = output.numel() // module.out_features  # 1 unless extra leading axes
            flops = 2 * module.in_features * module.out_features * positions
        else:  # nn.Conv2d
            kh, kw = module.kernel_size
            per_output = 2 * (module.in_channels // module.groups) * kh * kw
            flops = per_output * output.numel()  # output.numel() = Cout * Hout * Wout
        counts["forward"] += flops
        counts["weight_grad"] += flops
        if inputs[0].requires_grad:
            counts["input_grad"] += flops

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        model(torch.zeros((1, *feature_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return counts | {"total": sum(counts.values())}


def _best_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def mlp_step_floor(models: int, width: int, layer_sizes: tuple[int, ...], repeats: int = 5) -> dict:
    """The shortest an MLP ensemble's optimiser step could take: its batched matmuls, shaped
    and oriented as the ensemble runs them, plus one fused Adam update of its parameters,
    each timed alone (best of ``repeats``, inputs hot in the cache) and summed.

    Everything else a step does (gathering the batch, bias, ReLU, the loss, the bookkeeping) is
    taken as free, so the ensemble as implemented cannot beat the floor on this machine.
    ``layer_sizes`` is ``(input, hidden..., classes)``; ``width`` the ensemble's batch width.
    """
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    products: list[tuple[torch.Tensor, torch.Tensor]] = []
    params = []
    last = len(layer_sizes) - 2
    for layer, (fan_in, fan_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:], strict=True)):
        if layer < last:  # hidden: weight (M, in, out), activations (M, B, features)
            products.append((rand(models, width, fan_in), rand(models, fan_in, fan_out)))  # forward
            activations = rand(models, width, fan_in).transpose(1, 2)
            products.append((activations, rand(models, width, fan_out)))  # weight gradient
            if layer > 0:  # input gradient
                products.append((rand(models, width, fan_out), rand(models, fan_in, fan_out).transpose(1, 2)))
            params.append(rand(models, fan_in, fan_out))
        else:  # output, class-major: weight (M, C, in), logits (M, C, B)
            products.append((rand(models, fan_out, fan_in), rand(models, width, fan_in).transpose(1, 2)))
            products.append((rand(models, fan_out, width), rand(models, width, fan_in)))
            if layer > 0:
                products.append((rand(models, fan_out, width).transpose(1, 2), rand(models, fan_out, fan_in)))
            params.append(rand(models, fan_out, fan_in))
        params.append(rand(models, fan_out))
    matmul_s = sum(_best_seconds(lambda a=a, b=b: torch.bmm(a, b), repeats) for a, b in products)
    for parameter in params:
        parameter.grad = torch.randn_like(parameter)
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE, fused=True)
    adam_s = _best_seconds(optimizer.step, repeats)
    return {"matmul_s": matmul_s, "adam_s": adam_s, "step_s": matmul_s + adam_s}


def cnn_step_floor(width: int, channels: tuple[int, ...], feature_shape: tuple[int, ...],
                   repeats: int = 5) -> dict:
    """The shortest one model's optimiser step could take in the per-model path: its
    convolutions alone, in the layouts and with the kernels that path uses (oneDNN's forward,
    the first layer's weight gradient as columns times output gradient, oneDNN's backward for
    the others), each timed alone (best of ``repeats``, hot) and summed. Pooling, ReLU, the
    output layer, the loss, Adam and the bookkeeping are taken as free."""
    generator = torch.Generator().manual_seed(0)
    in_channels, height, width_px = feature_shape
    total = {"forward_s": 0.0, "backward_s": 0.0}
    for position, out_channels in enumerate(channels):
        x = torch.randn(width, in_channels, height, width_px, generator=generator)
        weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator)
        bias = torch.zeros(out_channels)
        grad = torch.randn(width, out_channels, height, width_px, generator=generator)
        total["forward_s"] += _best_seconds(lambda x=x, w=weight, b=bias: F.conv2d(x, w, b, padding=1), repeats)
        if position == 0:  # no input gradient: the weight gradient as the per-model path computes it
            w = weight.clone().requires_grad_(True)
            b = bias.clone().requires_grad_(True)

            def first_backward(x=x, w=w, b=b, grad=grad):
                first_conv2d(x, w, b).backward(grad)
            total["backward_s"] += _best_seconds(first_backward, repeats) - total["forward_s"]
        else:
            total["backward_s"] += _best_seconds(lambda x=x, w=weight, grad=grad: torch.ops.aten.convolution_backward(
                grad, x, w, [out_channels], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]), repeats)
        in_channels, height, width_px = out_channels, height // 2, width_px // 2
    return total | {"step_s": total["forward_s"] + total["backward_s"]}


def model_factory(work: Workload, feature_shape: tuple[int, ...], num_classes: int) -> Callable[[], nn.Module]:
    """A ``make_model`` for ``work``'s architecture, as the product's training stage builds it."""

    def make_model() -> nn.Module:
        return build_model(
            Architecture(work.arch), feature_shape=feature_shape, num_classes=num_classes,
            hidden_sizes=work.hidden_sizes, channels=work.channels,
        )

    return make_model


def member_subsets(num_points: int, work: Workload) -> list[np.ndarray]:
    """Per model, a seeded random ``work.subset`` distinct rows of the pool (sorted)."""
    return [
        np.sort(seeding.rng(SEED, "members", m).choice(num_points, size=work.subset, replace=False))
        for m in range(work.models)
    ]


def init_seeds(work: Workload) -> list[int]:
    """Per model, the seed of its initial weights (the same for both contestants)."""
    return [seeding.int_seed(SEED, "init", m) for m in range(work.models)]


def run_ensemble(work: Workload, x: torch.Tensor, y: torch.Tensor, subsets: list[np.ndarray],
                 make_model: Callable[[], nn.Module], conv_path: ConvPath | None = None) -> tuple[float, float]:
    """Train ``work.models`` models as one ensemble (a convolutional one on ``conv_path``,
    default the product's choice for the CPU); returns (training seconds, final loss), the
    loss being the mean over models of the last epoch's mean training loss."""
    ensemble = Ensemble.initialise(make_model, init_seeds(work), torch.device("cpu"), conv_path=conv_path)
    settings = TrainSettings(
        optimizer=OptimizerName.ADAM, learning_rate=work.learning_rate,
        epochs=work.epochs, batch_size=work.batch_size,
    )
    losses: list[float] = []
    order_rngs = [seeding.rng(SEED, "order", m) for m in range(work.models)]
    started = time.perf_counter()
    train_ensemble(
        ensemble, x=x, y=y, train_indices=subsets, order_rngs=order_rngs, settings=settings,
        steps=steps_per_epoch(work.subset, work.batch_size),
        on_epoch=lambda epoch, loss: losses.append(loss),
    )
    return time.perf_counter() - started, losses[-1]


def run_sequential(work: Workload, x: torch.Tensor, y: torch.Tensor, subsets: list[np.ndarray],
                   make_model: Callable[[], nn.Module]) -> tuple[float, float]:
    """Train the same models one after another with a DataLoader and Adam each; returns
    (training seconds summed over models, mean over models of the last epoch's mean loss)."""
    seconds, final_losses = 0.0, []
    for m, (seed, rows) in enumerate(zip(init_seeds(work), subsets, strict=True)):
        torch.manual_seed(seed)
        model = make_model()
        model.train()
        dataset = TensorDataset(x[rows], y[rows])  # gathering the subset is data loading: untimed
        started = time.perf_counter()
        loader = DataLoader(dataset, batch_size=work.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seeding.int_seed(SEED, "order", m)))
        # torch's default Adam, as peers write it; --sequential-fused gives it the fused update
        # the ensemble uses (for one small model's parameters, which fit in the cache, the
        # difference is small)
        optimizer = torch.optim.Adam(model.parameters(), lr=work.learning_rate,
                                     fused=True if work.sequential_fused else None)
        for _ in range(work.epochs):
            epoch_loss = 0.0
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()
                epoch_loss += loss.item()
        seconds += time.perf_counter() - started
        final_losses.append(epoch_loss / len(loader))
    return seconds, float(np.mean(final_losses))


def benchmark_row(work: Workload, x: torch.Tensor, y: torch.Tensor, num_classes: int, repeats: int) -> dict:
    """Time both contestants ``repeats`` times each on ``work`` and return the row's settings
    and measurements, each contestant's time being its fastest run."""
    feature_shape = tuple(x.shape[1:])
    make_model = model_factory(work, feature_shape, num_classes)
    subsets = member_subsets(x.shape[0], work)
    steps = steps_per_epoch(work.subset, work.batch_size)
    loader_steps = len(DataLoader(TensorDataset(x[:work.subset]), batch_size=work.batch_size))
    if steps != loader_steps:
        raise AssertionError(f"ensemble takes {steps} steps an epoch, the DataLoader {loader_steps}")
    flops = training_flops_per_example(make_model(), feature_shape)
    total_flops = flops["total"] * work.subset * work.epochs * work.models

    # alternate the contestants and keep each one's fastest run: on a shared 2-core machine
    # one run can lose 10% to a neighbour, and alternating spreads that over both
    sequential_runs, ensemble_runs, candidate_runs = [], [], []
    cnn = work.arch == Architecture.CNN.value
    # the path the ensemble did not choose, once a row: vmap's grouped convolutions at 64 models
    # take minutes a run on 2 cores
    other = next(path for path in ConvPath if path is not default_conv_path(torch.device("cpu")))
    for repeat in range(repeats):
        sequential_runs.append(run_sequential(work, x, y, subsets, make_model))
        ensemble_runs.append(run_ensemble(work, x, y, subsets, make_model))
        if cnn and repeat == 0:
            candidate_runs.append(run_ensemble(work, x, y, subsets, make_model, conv_path=other))
    sequential_s, sequential_loss = min(sequential_runs)
    ensemble_s, ensemble_loss = min(ensemble_runs)
    sequential_gflops = total_flops / sequential_s / 1e9
    ensemble_gflops = total_flops / ensemble_s / 1e9
    width = -(-work.subset // steps)
    floor = None
    if cnn:
        floor = cnn_step_floor(width, work.channels, feature_shape)
        floor["training_s"] = floor["step_s"] * work.models * steps * work.epochs
        floor["speedup"] = sequential_s / floor["training_s"]
        floor["gflops"] = total_flops / floor["training_s"] / 1e9
    if work.arch == Architecture.MLP.value:
        sizes = (int(np.prod(feature_shape)), *work.hidden_sizes, num_classes)
        floor = mlp_step_floor(work.models, width, sizes)
        floor["training_s"] = floor["step_s"] * steps * work.epochs
        floor["speedup"] = sequential_s / floor["training_s"]
        floor["gflops"] = total_flops / floor["training_s"] / 1e9
    return asdict(work) | {
        "steps_per_epoch": steps,
        "ensemble_batch_width": width,
        "examples_per_model": work.subset * work.epochs,
        "flops_per_example": flops,
        "total_training_gflop": total_flops / 1e9,
        "repeats": repeats,
        "sequential_s": sequential_s,
        "ensemble_s": ensemble_s,
        "sequential_runs_s": [seconds for seconds, _ in sequential_runs],
        "ensemble_runs_s": [seconds for seconds, _ in ensemble_runs],
        "speedup": sequential_s / ensemble_s,
        "sequential_gflops": sequential_gflops,
        "ensemble_gflops": ensemble_gflops,
        "sequential_final_loss": sequential_loss,
        "ensemble_final_loss": ensemble_loss,
        "floor": floor,
        "conv_path": default_conv_path(torch.device("cpu")).value if cnn else None,
        "candidates": {other.value: min(seconds for seconds, _ in candidate_runs)} if candidate_runs else {},
    }


def warm_up(work: Workload, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Run both contestants once, untimed, on two models and a few batches."""
    tiny = Workload(**(asdict(work) | {"models": 2, "epochs": 1, "subset": min(work.subset, 2 * work.batch_size)}))
    make_model = model_factory(tiny, tuple(x.shape[1:]), num_classes)
    subsets = member_subsets(x.shape[0], tiny)
    run_sequential(tiny, x, y, subsets, make_model)
    run_ensemble(tiny, x, y, subsets, make_model)


def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(rows: list[dict], peak: dict, threads: int) -> None:
    """The results as a fixed-width table."""
    sizes = ", ".join(f"{n}: {g:.0f}" for n, g in peak["gflops_by_size"].items())
    print(f"float32 matmul peak: {peak['peak_gflops']:.1f} GFLOP/s (by size {sizes}); {threads} threads")
    header = ("arch", "models", "sequential s", "ensemble s", "speed-up",
              "sequential GFLOP/s", "ensemble GFLOP/s", "ensemble % of peak")
    print("  ".join(f"{h:>{max(6, len(h))}}" for h in header))
    for row in rows:
        cells = (row["arch"], row["models"], f"{row['sequential_s']:.2f}", f"{row['ensemble_s']:.2f}",
                 f"{row['speedup']:.2f}x", f"{row['sequential_gflops']:.2f}", f"{row['ensemble_gflops']:.2f}",
                 f"{row['ensemble_pct_of_peak']:.1f}")
        print("  ".join(f"{c:>{max(6, len(h))}}" for c, h in zip(cells, header, strict=True)))
    floors = [row for row in rows if row["floor"] is not None and row["arch"] == Architecture.MLP.value]
    if floors:
        print("MLP floor (the ensemble's matmuls and Adam update alone, everything else free):")
        print("  models  matmuls ms/step  Adam ms/step  floor s  speed-up at most  % of peak at most")
        for row in floors:
            floor = row["floor"]
            print(f"  {row['models']:>6}  {1e3 * floor['matmul_s']:>15.2f}  {1e3 * floor['adam_s']:>12.2f}  "
                  f"{floor['training_s']:>7.2f}  {floor['speedup']:>15.2f}x  {floor['pct_of_peak']:>17.1f}")
    cnns = [row for row in rows if row["arch"] == Architecture.CNN.value]
    if cnns:
        print(f"CNN paths (the ensemble runs {cnns[0]['conv_path']}; the other path timed once a row) and floor "
              "(one model's convolutions alone, per step, everything else free):")
        print("  models  other path s  conv fwd ms/step  conv bwd ms/step  floor s  speed-up at most")
        for row in cnns:
            floor, other = row["floor"], ", ".join(f"{name} {s:.2f}" for name, s in row["candidates"].items())
            print(f"  {row['models']:>6}  {other:>12}  {1e3 * floor['forward_s']:>16.2f}  "
                  f"{1e3 * floor['backward_s']:>16.2f}  {floor['training_s']:>7.2f}  {floor['speedup']:>15.2f}x")
    if rows:
        first = rows[0]
        print(f"each model: {first['epochs']} epochs x {first['steps_per_epoch']} Adam steps, "
              f"{first['subset']:,} points, batch {first['batch_size']} (ensemble batches of "
              f"{first['ensemble_batch_width']}); times are training only")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=[Architecture.MLP.value, Architecture.CNN.value], action="append",
                        help="architecture family to run (repeatable; default both)")
    parser.add_argument("--models", type=int, nargs="+", default=[8, 32, 64], help="ensemble sizes M")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per model (default 2: the default grid then takes about 20 minutes "
                             "on 2 cores, 7 with --repeats 1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--subset", type=int, default=2_500, help="training points per model (default half the pool)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256], help="MLP hidden widths")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32], help="CNN convolution widths")
    parser.add_argument("--sequential-fused", action="store_true",
                        help="give the sequential loop's Adam the fused update too (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each contestant per row, alternating; the fastest counts (default 3)")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 epoch, 2 models, 512 points, small matmuls")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.models, args.subset, args.repeats = 1, [2], 512, 1
        args.matmul_sizes, args.matmul_repeats = [256, 512], 3
    return args


def main() -> None:
    args = parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    dataset = load_dataset(DataSource.MNIST5K)
    if not 0 < args.subset <= dataset.num_points:
        raise SystemExit(f"--subset must lie in 1..{dataset.num_points}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    x, y = torch.from_numpy(dataset.x), torch.from_numpy(dataset.y)
    peak = measure_matmul_peak(tuple(args.matmul_sizes), args.matmul_repeats)

    rows = []
    for arch in args.arch or [Architecture.MLP.value, Architecture.CNN.value]:
        for models in args.models:
            work = Workload(
                arch=arch, models=models, epochs=args.epochs, batch_size=args.batch_size,
                subset=args.subset, learning_rate=LEARNING_RATE,
                hidden_sizes=tuple(args.hidden), channels=tuple(args.channels),
                sequential_fused=args.sequential_fused,
            )
            if models == args.models[0]:
                warm_up(work, x, y, dataset.num_classes)
            rows.append(benchmark_row(work, x, y, dataset.num_classes, args.repeats))
    peak = combine_peaks(peak, measure_matmul_peak(tuple(args.matmul_sizes), args.matmul_repeats))
    for row in rows:
        for contestant in ("sequential", "ensemble"):
            row[f"{contestant}_pct_of_peak"] = 100.0 * row[f"{contestant}_gflops"] / peak["peak_gflops"]
        if row["floor"] is not None:
            row["floor"]["pct_of_peak"] = 100.0 * row["floor"]["gflops"] / peak["peak_gflops"]
    print_table(rows, peak, threads)

    record = {
        "benchmark": "train_speed",
        "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "platform": platform.platform(), "processor": cpu_model()},
        "dataset": {"name": dataset.name, "points": dataset.num_points, "feature_shape": list(dataset.feature_shape)},
        "matmul_peak": peak,
        "quick": args.quick,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
