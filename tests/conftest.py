import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# A small experiment on scikit-learn's digits: seconds per run, still every stage.
SMALL_CONFIG = {
    "seed": 3,
    "data": {"source": "digits", "pool_size": 1000},
    "design": {"num_models": 16, "num_targets": 16},
    "poison": {"replicas": 8},
    "model": {"architecture": "mlp", "hidden_sizes": [128]},
    "train": {"optimizer": "adam", "learning_rate": 0.01, "epochs": 30, "batch_size": 64, "shard_size": 4},
}


@pytest.fixture
def small_config_file(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_CONFIG))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `truthserum` entry point in a child process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "truthserum.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=600,
    )
