"""Benchmark: scoring a large audit in bounded memory, M = 256 models on N = 50,000 points with
2 query views and 10 classes (1 GB of float32 logits), with logits stored as float32 and as
float16.

Run: ``.venv/bin/python benchmarks/scoring_memory.py`` (``--models``, ``--points``,
``--targets``, ``--bootstrap``, ``--attacks``, ``--workdir``, ``--out``; ``--quick`` for a
smoke test of a few seconds). It prints a table and writes JSON (default
``benchmarks/results/scoring_memory.json``).

What it does
    1. Writes synthetic signals once per dtype, ``signals.npz`` (labels, keep, targets) and
       ``signals-logits.npy`` (a :class:`~truthserum.store.logits.LogitStore`), model by model,
       never holding all logits. Every point is in exactly half of the models. A member's
       logit of its true class is raised by a per-point amount (some points leak, most barely),
       so the attacks have something to find. ``--targets`` points are targets; the others
       are RMIA's population.
    2. For each dtype, in a fresh child process: ``load_signals`` and the run's own scoring
       stage, :func:`truthserum.tasks.stages.attack_metrics` with a scores file, every attack (or
       ``--attacks``), metrics with ``--bootstrap`` resamples. Peak resident memory is the
       child's ``ru_maxrss`` (which Linux starts from the parent's at the fork, so the parent
       stays small: its own peak is under 700 MB here); the memory of the interpreter with
       numpy, scipy and torch imported (what the product's scoring module loads) is reported
       separately.
    3. Compares the float16 scores with the float32 ones, per attack: the largest and the
       median absolute score difference, the mean shift of a pair's rank among all pairs (as a
       fraction of the pairs, in the JSON), and the change in AUC and TPR at 0.1% FPR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD_FLAG = "--child"


def write_synthetic(workdir: Path, *, models: int, points: int, targets: int, dtype: str, seed: int) -> float:
    """The signals of one audit in ``workdir``; returns the seconds it took."""
    from truthserum.store.logits import LogitDtype, LogitStore

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    keep = rng.random((models, points)).argsort(axis=0) < models // 2
    labels = rng.integers(0, 10, points)
    chosen = np.sort(rng.permutation(points)[:targets])
    leak = rng.exponential(0.3, points)  # how much training on a point raises its true logit
    difficulty = rng.normal(0.0, 1.5, points)
    store = LogitStore.create(workdir / "signals-logits.npy", (models, points, 2, 10), LogitDtype(dtype))
    batch = 16
    for first in range(0, models, batch):
        count = min(batch, models - first)
        model_rng = np.random.default_rng([seed, first])
        logits = model_rng.normal(0.0, 1.0, (count, points, 2, 10)).astype(np.float32)
        boost = difficulty[None, :] + keep[first:first + count] * leak[None, :] + 2.0
        logits[np.arange(count)[:, None], np.arange(points)[None, :], :, labels[None, :]] += boost[..., None]
        store.write_models(first, logits)
    np.savez(workdir / "signals.npz", labels=labels, keep=keep, targets=chosen)
    return time.perf_counter() - started


def _current_rss_kb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def child(args: argparse.Namespace) -> None:
    """Score one dtype's signals; prints one JSON line."""
    import torch  # noqa: F401  (the product's scoring module imports it; count it in the baseline)

    from truthserum.attacks import load_signals
    from truthserum.config import parse_config
    from truthserum.tasks.stages import attack_metrics

    # current, not peak: a child's ru_maxrss starts from its parent's at the fork
    baseline = _current_rss_kb()
    config = parse_config({"attacks": args.attacks, "metrics": {"bootstrap": args.bootstrap}}, source="benchmark")
    workdir = Path(args.workdir)
    started = time.perf_counter()
    inputs = load_signals(workdir / "signals.npz")
    loaded = time.perf_counter()
    metrics, _, _ = attack_metrics(config, inputs, config.attack_options(), scores_file=workdir / "scores.npz")
    finished = time.perf_counter()
    print(json.dumps({
        "load_and_validate_seconds": loaded - started,
        "score_and_measure_seconds": finished - loaded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": baseline / 1024,
        "metrics": {name: {"auc": m["auc"], "tpr_at_0.1%": m["tpr_at_fpr"]["0.001"]} for name, m in metrics.items()},
    }))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Each value's position in the sorted flattened ``values`` (ties in storage order)."""
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[np.argsort(values.ravel(), kind="stable")] = np.arange(values.size)
    return ranks


def compare(float32_scores: Path, float16_scores: Path) -> dict:
    """How far float16 storage moves each attack's scores from float32's."""
    from truthserum.metrics.roc import area_under_curve, roc_curve, tpr_at_fpr

    out = {}
    with np.load(float32_scores) as a, np.load(float16_scores) as b:
        members = a["members"]
        for name in a.files:
            if name == "members":
                continue
            x, y = a[name], b[name]
            finite = np.isfinite(x) & np.isfinite(y)
            ranks_x, ranks_y = _ranks(x), _ranks(y)
            roc_x, roc_y = roc_curve(x, members), roc_curve(y, members)
            out[name] = {
                "max_abs_difference": float(np.abs(x - y)[finite].max()),
                "median_abs_difference": float(np.median(np.abs(x - y)[finite])),
                "mean_rank_shift": float(np.abs(ranks_x - ranks_y).mean() / x.size),
                "auc_change": area_under_curve(roc_y) - area_under_curve(roc_x),
                "tpr_at_0.1%_change": tpr_at_fpr(roc_y, 0.001) - tpr_at_fpr(roc_x, 0.001),
            }
    return out


def run_case(args: argparse.Namespace, dtype: str) -> dict:
    workdir = Path(args.workdir) / dtype
    workdir.mkdir(parents=True, exist_ok=True)
    write_seconds = write_synthetic(workdir, models=args.models, points=args.points, targets=args.targets,
                                    dtype=dtype, seed=args.seed)
    command = [sys.executable, __file__, CHILD_FLAG, "--workdir", str(workdir), "--bootstrap", str(args.bootstrap),
               "--attacks", *args.attacks]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"scoring {dtype} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(dtype=dtype, write_seconds=write_seconds,
                  logits_mb=(workdir / "signals-logits.npy").stat().st_size / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=256)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--targets", type=int, default=40_000, help="the rest are RMIA's population")
    parser.add_argument("--bootstrap", type=int, default=100, help="resamples per attack (the config default is 1000)")
    parser.add_argument("--attacks", nargs="+", default=None, help="default: every attack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/truthserum-scoring-benchmark")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring_memory.json"))
    parser.add_argument("--quick", action="store_true", help="16 models, 2,000 points: a smoke test")
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacks is None:
        from truthserum.attacks import AttackName

        args.attacks = [name.value for name in AttackName]
    if args.child:
        child(args)
        return
    if args.quick:
        args.models, args.points, args.targets, args.bootstrap = 16, 2_000, 1_500, 20
    rows = [run_case(args, dtype) for dtype in ("float32", "float16")]
    effect = compare(Path(args.workdir) / "float32" / "scores.npz", Path(args.workdir) / "float16" / "scores.npz")
    float32_mb = args.models * args.points * 2 * 10 * 4 / 2**20
    print(f"M = {args.models} models, N = {args.points:,} points ({args.targets:,} targets), 2 views, "
          f"10 classes: {float32_mb:,.0f} MB of float32 logits; {len(args.attacks)} attacks, "
          f"{args.bootstrap} bootstrap resamples each; {os.cpu_count()} cores")
    print(f"{'logits':>8} {'file MB':>8} {'load+check s':>13} {'score+measure s':>16} {'peak RSS MB':>12} "
          f"{'of which imports':>17}")
    for row in rows:
        print(f"{row['dtype']:>8} {row['logits_mb']:8.0f} {row['load_and_validate_seconds']:13.1f} "
              f"{row['score_and_measure_seconds']:16.1f} {row['peak_rss_mb']:12.0f} {row['baseline_rss_mb']:17.0f}")
    print("\nfloat16 against float32 storage, per attack:")
    print(f"{'attack':>20} {'max |diff|':>11} {'median |diff|':>14} {'AUC change':>11} {'TPR@0.1% change':>16}")
    for name, change in effect.items():
        print(f"{name:>20} {change['max_abs_difference']:11.2e} {change['median_abs_difference']:14.2e} "
              f"{change['auc_change']:+11.5f} {change['tpr_at_0.1%_change']:+16.5f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "settings": {"models": args.models, "points": args.points, "targets": args.targets, "views": 2,
                     "classes": 10, "bootstrap": args.bootstrap, "attacks": args.attacks, "seed": args.seed},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "runs": rows, "float16_effect": effect,
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
