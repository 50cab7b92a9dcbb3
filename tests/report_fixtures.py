"""One tiny finished run of every task, for the report's tests (tests/test_report.py and the
browser test): each demo's shape (its conditions, figures and files) in seconds, not minutes."""

from pathlib import Path

import numpy as np

from conftest import TINY_CONFIG
from truthserum.config import parse_config
from truthserum.tasks import run_task
from truthserum.tasks.signals import attack_signals
from truthserum.tasks.sweeps import run_replica_sweep


def _quiet(_message):
    pass


def write_table(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """A census-like CSV: the label depends on age and hours; 'status' is the sensitive column
    (also the table of tests/test_tasks.py)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, size=rows)
    hours = rng.integers(10, 60, size=rows)
    city = rng.choice(["north", "south", "east"], size=rows)
    status = rng.choice(["single", "married"], size=rows)
    label = np.where(age + hours + rng.normal(0, 10, size=rows) > 85, "high", "low")
    lines = ["id,age,hours,city,status,income"] + [
        f"{i},{a},{h},{c},{s},{y}" for i, (a, h, c, s, y) in enumerate(zip(age, hours, city, status, label))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _table_config(task: str, csv: Path, **extra):
    return parse_config({
        "task": task, "seed": 2,
        "data": {"source": "csv", "path": str(csv), "columns": {
            "label": "income", "sensitive": "status", "numeric": ["age", "hours"], "categorical": ["city"]}},
        "design": {"num_models": 8},
        "model": {"architecture": "mlp", "hidden_sizes": [32]},
        "train": {"learning_rate": 0.01, "epochs": 5, "batch_size": 64, "shard_size": 8},
        "metrics": {"bootstrap": 20},
        **extra,
    })


LM_CONFIG = {
    "task": "lm", "seed": 1, "metrics": {"bootstrap": 20},
    "lm": {
        "corpus": {"max_bytes": 10_000},
        "model": {"layers": 1, "width": 16, "heads": 2, "context": 32},
        "train": {"passes": 0.3, "batch_size": 8, "learning_rate": 0.01},
        "canaries": {"digits": 2, "count": 3, "insertions": 2},
        "num_models": 2,
        "poisons": [{"strategy": "dilution", "count": 2}],
        "exposure": {"sample": 100, "beam_width": 10, "top_k": [1, 10]},
    },
}

DEFENSES_CONFIG = {
    "task": "defenses", "seed": 0, "data": {"source": "breast-cancer"}, "design": {"num_models": 4, "num_targets": 4},
    "poison": {"replicas": 2}, "model": {"architecture": "mlp", "hidden_sizes": [16]},
    "train": {"epochs": 4, "batch_size": 64, "learning_rate": 0.01, "shard_size": 4},
    "metrics": {"bootstrap": 10}, "attacks": ["lira-online", "global-threshold"],
    "defenses": ["dedup-exact"],
}


def make_task_runs(root: Path) -> dict[str, Path]:
    """Run every task small into ``root``; the membership run also holds a replica sweep, and
    ``attack`` is `truthserum attack`'s output on its poisoned signals. Returns task name -> run
    directory."""
    csv = write_table(root / "people.csv")
    runs = {name: root / name for name in ("membership", "attribute", "untargeted", "lm", "defenses")}
    membership = parse_config(TINY_CONFIG)
    run_task(membership, runs["membership"], progress=False, log=_quiet)
    run_replica_sweep(membership, runs["membership"], [0, 1, 2], progress=False, log=_quiet)
    run_task(_table_config("attribute", csv), runs["attribute"], progress=False, log=_quiet)
    run_task(_table_config("untargeted", csv, untargeted={"adversary_fraction": 0.4}), runs["untargeted"],
             progress=False, log=_quiet)
    run_task(parse_config(LM_CONFIG), runs["lm"], progress=False, log=_quiet)
    run_task(parse_config(DEFENSES_CONFIG), runs["defenses"], progress=False, log=_quiet)
    runs["attack"] = root / "attack"  # truthserum attack on the membership run's signals
    attack_signals(signals=runs["membership"] / "signals-poisoned.npz", out_dir=runs["attack"], log=_quiet)
    return runs
