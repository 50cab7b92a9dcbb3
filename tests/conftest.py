import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# One torch (OpenMP) thread, in this process and in the commands it starts, unless the caller
# chose otherwise. Set before anything imports torch. The tests train small models that gain
# little from a second thread, and on a 2-core machine busy with other work the threads wait for
# each other: SMALL_CONFIG's run took 97 s with 2 threads and 7 s with 1 under the same load.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A small experiment on scikit-learn's digits: seconds per run, still every stage.
SMALL_CONFIG = {
    "seed": 3,
    "data": {"source": "digits", "pool_size": 1000},
    "design": {"num_models": 16, "num_targets": 16},
    "poison": {"replicas": 8},
    "model": {"architecture": "mlp", "hidden_sizes": [128]},
    "train": {"optimizer": "adam", "learning_rate": 0.01, "epochs": 30, "batch_size": 64, "shard_size": 4},
}

# A tiny one, for tests of the wiring rather than of the numbers: 4 models in 2 shards, 2 epochs.
TINY_CONFIG = {
    "seed": 3,
    "data": {"source": "digits", "pool_size": 300},
    "design": {"num_models": 4, "num_targets": 8},
    "poison": {"replicas": 2},
    "model": {"architecture": "mlp", "hidden_sizes": [32]},
    "train": {"optimizer": "adam", "learning_rate": 0.01, "epochs": 2, "batch_size": 64, "shard_size": 2},
    "metrics": {"bootstrap": 20},
}


@pytest.fixture
def small_config_file(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_CONFIG))
    return path


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """SMALL_CONFIG run once for the session (tests/test_runner.py and tests/test_sweep.py):
    ``(run directory, results.json as a dict)``. A test that writes to the run (resumes or
    reruns it) works on a copy."""
    from truthserum.config import parse_config
    from truthserum.tasks.membership import run_experiment

    out = tmp_path_factory.mktemp("small-run") / "run"
    results = run_experiment(parse_config(SMALL_CONFIG), out, progress=False, log=lambda _: None).to_json()
    return out, results


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `truthserum` entry point in a child process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "truthserum.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=600,
    )


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """``truthserum.cli.main`` in this process (no interpreter to start, no torch to import again):
    its exit status and what it printed, in the shape :func:`run_cli` returns. An exception that
    main lets through (a traceback) fails the test where it is raised."""
    from truthserum.cli import main

    capsys.readouterr()  # only what this command prints
    returncode = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["truthserum", *args], returncode, out, err)


@pytest.fixture(scope="session")
def task_runs(tmp_path_factory):
    """One tiny finished run of every task (tests/report_fixtures.py), made once for the whole
    session even across pytest-xdist workers: the first worker makes them under a file lock
    and the others read them (the pattern pytest-xdist documents). Read-only for the tests:
    a test that writes into a run works on a copy."""
    from filelock import FileLock

    from report_fixtures import make_task_runs

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's folder lies in the session's
        shared = shared.parent
    root = shared / "task-runs"
    with FileLock(str(shared / "task-runs.lock")):
        if not (root / "done").is_file():
            if root.exists():
                import shutil

                shutil.rmtree(root)
            root.mkdir()
            make_task_runs(root)
            (root / "done").write_text("")
    return {task: root / task for task in ("membership", "attribute", "untargeted", "lm", "defenses", "attack")}
