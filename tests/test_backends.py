"""The Ray backend: shards as Ray tasks on a local Ray instance with 2 CPUs, and runs that
resume across backends without training a finished shard again."""

import sys

import numpy as np
import pytest
import yaml

from truthserum.train.executors import BackendName, LocalBackend, RayBackend, make_backend
from truthserum.cli import main
from truthserum.config import parse_config
from truthserum.errors import ConfigError
from truthserum.tasks import run_task


# Tiny: 4 models in shards of 2, both conditions, a few seconds per run.
CONFIG = {
    "seed": 5,
    "data": {"source": "digits", "pool_size": 300},
    "design": {"num_models": 4, "num_targets": 8},
    "poison": {"replicas": 2},
    "model": {"architecture": "mlp", "hidden_sizes": [32]},
    "train": {"optimizer": "adam", "learning_rate": 0.01, "epochs": 2, "batch_size": 64, "shard_size": 2},
    "attacks": ["lira-offline", "global-threshold"],
    "metrics": {"bootstrap": 20},
}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module; the backend uses it as it is."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _config():
    return parse_config(CONFIG, source="test")


class Interrupt:
    """A log that records messages and raises KeyboardInterrupt after the n-th trained shard."""

    def __init__(self, after: int | None):
        self.after, self.trained, self.messages = after, 0, []

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        if "trained models" in message:
            self.trained += 1
            if self.after is not None and self.trained >= self.after:
                raise KeyboardInterrupt


def _shard_files(out):
    return {path.relative_to(out): path.read_bytes() for path in sorted((out / "shards").rglob("*.npz"))}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    log = Interrupt(after=None)
    results = run_task(_config(), out, progress=False, log=log).to_json()
    return out, results


def _logits(out, condition):
    return np.load(out / f"signals-{condition}-logits.npy")


def test_ray_backend_gives_the_local_results(local_ray, local_run, tmp_path):
    local_out, local_results = local_run
    log = Interrupt(after=None)
    results = run_task(_config(), tmp_path, progress=False, log=log, backend=RayBackend()).to_json()
    assert sum("trained models" in m for m in log.messages) == 4  # 2 conditions x 2 shards
    assert sorted(_shard_files(tmp_path)) == sorted(_shard_files(local_out))
    for condition in ("clean", "poisoned"):
        # same seeds, same models; a Ray task uses 1 thread, so allow float rounding
        np.testing.assert_allclose(_logits(tmp_path, condition), _logits(local_out, condition), atol=1e-4)
    for condition in ("clean", "poisoned"):
        ours = results["conditions"][condition]["attacks"]["lira-offline"]["auc"]
        theirs = local_results["conditions"][condition]["attacks"]["lira-offline"]["auc"]
        assert abs(ours - theirs) < 0.01


def _interrupted(out, backend, after):
    log = Interrupt(after=after)
    with pytest.raises(KeyboardInterrupt):
        run_task(_config(), out, progress=False, log=log, backend=backend)
    return _shard_files(out)


def test_a_run_interrupted_locally_finishes_on_ray(local_ray, local_run, tmp_path):
    done = _interrupted(tmp_path, LocalBackend(), after=1)
    assert len(done) == 1
    log = Interrupt(after=None)
    run_task(_config(), tmp_path, progress=False, log=log, backend=RayBackend())
    assert "clean: reused 1 of 2 finished shards" in log.messages
    assert sum("trained models" in m for m in log.messages) == 3  # the finished shard is not retrained
    finished = _shard_files(tmp_path)
    assert all(finished[name] == data for name, data in done.items())  # untouched
    np.testing.assert_allclose(_logits(tmp_path, "poisoned"), _logits(local_run[0], "poisoned"), atol=1e-4)


def test_a_run_interrupted_on_ray_finishes_locally(local_ray, local_run, tmp_path):
    done = _interrupted(tmp_path, RayBackend(), after=1)
    assert len(done) == 1  # written as it came back; the task still running was cancelled
    log = Interrupt(after=None)
    run_task(_config(), tmp_path, progress=False, log=log)
    assert "clean: reused 1 of 2 finished shards" in log.messages
    assert sum("trained models" in m for m in log.messages) == 3
    finished = _shard_files(tmp_path)
    assert all(finished[name] == data for name, data in done.items())
    for condition in ("clean", "poisoned"):
        np.testing.assert_allclose(_logits(tmp_path, condition), _logits(local_run[0], condition), atol=1e-4)


def test_cli_runs_on_ray(local_ray, tmp_path, capsys):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    # without --quiet: the epochs reported by the tasks through a Ray queue move the bar
    assert main(["run", str(config_file), "--out", str(tmp_path / "run"), "--backend", "ray"]) == 0
    assert "lira-offline" in capsys.readouterr().out
    assert local_ray.is_initialized()  # a Ray instance the backend did not start is left running


def test_a_training_error_on_ray_is_one_line(local_ray, tmp_path, capsys):
    rng = np.random.default_rng(0)  # features of size 1e12 and SGD at rate 10 overflow at once
    np.savez(tmp_path / "huge.npz", x=rng.normal(size=(300, 16)).astype(np.float32) * 1e12,
             y=rng.integers(0, 3, 300))
    config_file = tmp_path / "diverges.yaml"
    config_file.write_text(yaml.safe_dump({
        **CONFIG, "data": {"source": "npz", "path": str(tmp_path / "huge.npz")},
        "train": {**CONFIG["train"], "optimizer": "sgd", "learning_rate": 10.0},
    }))
    assert main(["run", str(config_file), "--out", str(tmp_path / "run"), "--quiet", "--backend", "ray"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("truthserum:")]
    assert errors == ["truthserum: error: training diverged (loss nan) in epoch 1; lower train.learning_rate"]


def test_without_ray_the_ray_backend_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(config_file), "--out", str(tmp_path / "r"), "--quiet", "--backend", "ray"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("truthserum:")]
    assert errors == ["truthserum: error: --backend ray needs Ray, which is not installed: "
                      "pip install 'truthserum[ray]'"]
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_backend_options_are_checked(tmp_path, capsys):
    with pytest.raises(ConfigError, match="address is for the Ray backend"):
        make_backend(BackendName.LOCAL, address="auto")
    with pytest.raises(ConfigError, match="cpus_per_shard must be at least 1"):
        RayBackend(cpus_per_shard=0)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(config_file), "--out", str(tmp_path / "r"), "--cpus-per-shard", "2"]) == 2
    assert "--cpus-per-shard is for --backend ray" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_task_lm_refuses_the_ray_backend(tmp_path):
    config = parse_config({"task": "lm"}, source="test")
    with pytest.raises(ConfigError, match="task 'lm' trains in this process"):
        run_task(config, tmp_path / "lm", progress=False, backend=RayBackend())
    assert not (tmp_path / "lm").exists()
