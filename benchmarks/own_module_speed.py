"""Benchmark: a user's own stackable ``nn.Module`` trained by ``audit_membership``'s module
trainer, vectorized (the path it takes by itself) against one model after another (the path
it takes for modules that cannot stack), on identical work.

Run: ``.venv/bin/python benchmarks/own_module_speed.py`` (``--quick``: a smoke test of a few
seconds; ``--models``, ``--epochs``, ``--repeats``, ``--out``). Prints a table and writes JSON
(default ``benchmarks/results/own_module_speed.json``).

Identical work
    Both contestants are :class:`truthserum.train.own.ModuleTrainer` code: the vectorized
    path (``train_stacked_shard`` over an ``Ensemble`` of the modules) and the one-by-one path
    (``ModuleTrainer._one_by_one``: each module trained as a plain module, then queried). The
    same factory, the same seeds (so the same initial weights), the same keep matrix, data
    order, batches, optimizer and epochs, and both query every model on every pool point. The
    script checks that the two reach the same logits (up to float rounding) before it reports
    a time: a fast path that trained something else would not count.

The module
    User modules on the 5,000 MNIST digits: ``UserMLP`` (784 -> 256 -> 10), a subclass of
    ``nn.Module`` with its own ``forward`` (it trains through ``vmap`` over
    ``functional_call``); the same layers as an ``nn.Sequential`` (which the ensemble
    recognises and runs as explicit batched matmuls); and a narrow ``UserMLP`` (784 -> 32 -> 10),
    whose steps are small enough that per-step overhead, which stacking pays once, dominates.

What is timed
    Building the modules, training and querying, per contestant (what a shard costs). Each
    contestant runs ``--repeats`` times (default 3), alternating within one process, and each
    one's fastest run counts: the machine is shared and noisy, and the minimum is the least
    disturbed measurement. Every run is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from truthserum.config import parse_config
from truthserum.data.datasets import load_mnist5k
from truthserum.train.ensemble import Ensemble
from truthserum.train.own import ModuleTrainer, build_modules
from truthserum.train.shard import TrainingJob, model_seed, train_stacked_shard


class UserMLP(nn.Module):
    """A user's module as one might write it: layers as attributes, a forward of its own."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def sequential_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def small_user_mlp() -> nn.Module:
    return UserMLP(hidden=32)


FACTORIES = {
    "UserMLP 784-256-10 (vmap)": UserMLP,
    "nn.Sequential 784-256-10 (matmuls)": sequential_mlp,
    "UserMLP 784-32-10 (vmap)": small_user_mlp,
}


def one_run(factory, config, job, models, vectorized: bool) -> tuple[float, np.ndarray]:
    device = torch.device("cpu")
    started = time.perf_counter()
    modules = build_modules(factory, [model_seed(config, m) for m in models])
    if vectorized:
        shard = train_stacked_shard(config, job, models, Ensemble(modules, device), device, None, started=started)
    else:
        shard = ModuleTrainer(factory)._one_by_one(config, job, models, modules, device, None, started)
    return time.perf_counter() - started, shard["logits"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 models, 1 epoch, 1,000 points, 1 repeat")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/own_module_speed.json"))
    args = parser.parse_args()
    if args.quick:
        args.models, args.epochs, args.repeats = 4, 1, 1
    pool = load_mnist5k()
    points = 1000 if args.quick else pool.num_points
    x, y = pool.x[:points], pool.y[:points]
    config = parse_config({"train": {"epochs": args.epochs, "batch_size": 128}})
    keep = np.random.default_rng(0).random((args.models, points)) < 0.5
    job = TrainingJob(condition="clean", x=x, y=y, keep=keep, extra_x=x[:0], extra_y=y[:0], queries=x,
                      num_classes=10)
    models = range(args.models)
    one_run(sequential_mlp, parse_config({"train": {"epochs": 1}}), job, range(2), True)  # warm-up
    rows = []
    for name, factory in FACTORIES.items():
        runs = {"vectorized": [], "one-by-one": []}
        logits = {}
        for _ in range(args.repeats):
            for contestant in ("vectorized", "one-by-one"):
                seconds, logits[contestant] = one_run(factory, config, job, models, contestant == "vectorized")
                runs[contestant].append(seconds)
        gap = float(np.abs(logits["vectorized"] - logits["one-by-one"]).max())
        if gap > 1e-2:
            raise SystemExit(f"{name}: the two paths trained different models (largest logit gap {gap:.3g})")
        best = {contestant: min(times) for contestant, times in runs.items()}
        rows.append({"module": name, "runs": runs, "best": best, "speedup": best["one-by-one"] / best["vectorized"],
                     "largest_logit_gap": gap})
        print(f"{name:36s} vectorized {best['vectorized']:7.2f} s   one by one {best['one-by-one']:7.2f} s   "
              f"speed-up {rows[-1]['speedup']:.2f}x   (logits agree to {gap:.1e})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "models": args.models, "epochs": args.epochs, "points": points, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "machine": platform.platform(), "torch": torch.__version__,
        "rows": rows,
    }, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
