"""End-to-end runs on small data: results, run-directory rules, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import SMALL_CONFIG, TINY_CONFIG, run_cli, run_main
from truthserum.config import parse_config
from truthserum.errors import RunDirError
from truthserum.metrics.accuracy import poison_fit
from truthserum.metrics.epsilon import epsilon_lower_bound
from truthserum.metrics.roc import roc_curve
from truthserum.tasks.membership import run_experiment


def metrics_of(results):
    return {name: {k: v for k, v in entry.items()} for name, entry in results["conditions"].items()}


@pytest.fixture(scope="module")
def finished_run(small_run):
    """SMALL_CONFIG's run, shared with tests/test_sweep.py (tests/conftest.py trains it once)."""
    return small_run


def test_results_json_has_the_documented_shape(finished_run):
    out, results = finished_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(on_disk) >= {"config", "conditions", "poison", "timing"}
    assert set(on_disk["conditions"]) == {"clean", "poisoned"}
    for entry in on_disk["conditions"].values():
        assert set(entry["accuracy"]) == {"train", "test"}
        assert set(entry["attacks"]) == {
            "lira-online", "lira-offline", "lira-online-fixed", "lira-offline-fixed", "rmia-online",
            "rmia-offline", "label-only", "global-threshold",
        }
        for metrics in entry["attacks"].values():
            assert set(metrics["tpr_at_fpr"]) == set(metrics["tpr_at_fpr_ci"]) == {"0.001", "0.01", "0.1"}
            assert metrics["members"] + metrics["nonmembers"] == 16 * 16
            assert metrics["auc_ci"][0] <= metrics["auc"] <= metrics["auc_ci"][1]
            assert metrics["low_support"] == {"0.001": True, "0.01": True, "0.1": False}  # 128 non-members
    assert on_disk["conditions"]["poisoned"]["replicas"] == 8
    assert on_disk["conditions"]["clean"]["poison_fit"] is None
    poison = on_disk["poison"]
    assert (poison["targets"], poison["replicas"], poison["total"]) == (16, 8, 128)
    assert poison["fraction"] == pytest.approx(128 / (128 + 500), abs=0.02)
    with np.load(out / "signals-poisoned.npz") as signals, np.load(out / "poisons.npz") as poisons:
        logits = np.load(out / "signals-poisoned-logits.npy")
        assert poison["fit"] == pytest.approx(
            poison_fit(logits, signals["keep"], signals["targets"], poisons["target_labels"]))
    assert poison["fit"] > 0.5  # 30 epochs fit most of the poisons
    # each attack's epsilon bound is the one its stored scores give
    for condition, entry in on_disk["conditions"].items():
        with np.load(out / f"scores-{condition}.npz") as scores:
            for name, metrics in entry["attacks"].items():
                bound = epsilon_lower_bound(roc_curve(scores[name], scores["members"]), delta=metrics["delta"],
                                            confidence=metrics["confidence"])
                assert metrics["epsilon_lower_bound"] == pytest.approx(bound), (condition, name)
    assert on_disk["conditions"]["poisoned"]["attacks"]["lira-online-fixed"]["epsilon_lower_bound"] > 0
    assert on_disk["timing"]["train_seconds"] > 0
    assert on_disk["config"] == parse_config(SMALL_CONFIG).to_json_dict()
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_signals_file_feeds_the_attack_command(finished_run, tmp_path):
    out, results = finished_run
    # the logits are a plain .npy that numpy can memory-map
    assert np.load(out / "signals-poisoned-logits.npy", mmap_mode="r").shape == (16, 1000, 1, 10)
    with np.load(out / "signals-poisoned.npz", allow_pickle=False) as signals:
        assert signals["keep"].shape == (16, 1000) and (signals["keep"].sum(axis=0) == 8).all()
    done = run_cli("attack", "--signals", str(out / "signals-poisoned.npz"), "--attack", "lira-online",
                   "--out", str(tmp_path / "scores.npz"))
    assert done.returncode == 0, done.stderr
    auc = results["conditions"]["poisoned"]["attacks"]["lira-online"]["auc"]
    assert f"AUC {auc:.3f}" in done.stdout
    with np.load(tmp_path / "scores.npz", allow_pickle=False) as scores:
        assert scores["scores"].shape == (16, 16)


def test_poisoning_amplifies_membership_inference(finished_run):
    """Even this small run shows the effect the project exists to measure."""
    _, results = finished_run
    clean = results["conditions"]["clean"]["attacks"]["lira-online-fixed"]["auc"]
    poisoned = results["conditions"]["poisoned"]["attacks"]["lira-online-fixed"]["auc"]
    assert poisoned > clean + 0.1


def test_a_run_directory_from_another_config_is_refused_untouched(finished_run):
    out, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    changed = {**SMALL_CONFIG, "train": {**SMALL_CONFIG["train"], "epochs": 31}}
    with pytest.raises(RunDirError, match=r"different config \(train.epochs: 30 != 31\)"):
        run_experiment(parse_config(changed), out, progress=False, log=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a truthserum run directory"):
        run_experiment(parse_config(SMALL_CONFIG), tmp_path, progress=False, log=lambda _: None)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_sigkill_during_training_then_resume(finished_run, small_config_file, tmp_path, capsys):
    """Kill the real command after its first shard, rerun the command (in this process): no
    finished shard is trained again and the metrics equal those of the uninterrupted run."""
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "truthserum.cli", "run", str(small_config_file), "--out", str(out), "--quiet"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_shard = out / "shards" / "clean" / "models-0000-0003.npz"
    deadline = time.monotonic() + 300
    while not first_shard.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "results.json").exists()
    done_before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shards/*/*.npz")}
    assert 1 <= len(done_before) < 8  # 4 shards a condition, 2 conditions

    resumed = run_main(capsys, "run", str(small_config_file), "--out", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"reused {len([p for p in done_before if p.parent.name == 'clean'])} of 4 finished shards" in resumed.stderr
    for path, stamp in done_before.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{path.name} was trained again"
    assert not list(out.rglob(".tmp-*"))

    full_out, full_results = finished_run
    resumed_results = json.loads((out / "results.json").read_text())
    assert metrics_of(resumed_results) == metrics_of(json.loads(json.dumps(full_results)))
    assert resumed_results["poison"] == json.loads(json.dumps(full_results))["poison"]


def test_rerunning_a_finished_run_trains_nothing(finished_run, tmp_path):
    import shutil

    out, results = finished_run
    out = shutil.copytree(out, tmp_path / "copy")  # the rerun writes results.json again: not the shared run's
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("shards/*/*.npz")}
    messages = []
    again = run_experiment(parse_config(SMALL_CONFIG), out, progress=False, log=messages.append).to_json()
    assert {p: p.stat().st_mtime_ns for p in out.glob("shards/*/*.npz")} == stamps
    assert "clean: reused 4 of 4 finished shards" in messages
    assert metrics_of(again) == metrics_of(results)


def test_same_seed_same_numbers_different_seed_different_numbers(tmp_path):
    """Two fresh runs of the tiny config with one seed agree to the last bit; another seed differs."""

    def run(seed, name):
        config = parse_config({**TINY_CONFIG, "seed": seed})
        return metrics_of(run_experiment(config, tmp_path / name, progress=False, log=lambda _: None).to_json())

    first = run(3, "first")
    assert run(3, "again") == first
    assert run(4, "other") != first


def test_shard_size_does_not_change_the_models(tmp_path):
    """A model trains identically whichever shard it falls in (up to float rounding): the tiny
    config's 4 models in shards of 2, then in one shard, each for SMALL_CONFIG's 30 epochs."""
    logits = []
    for shard_size in (2, 4):
        config = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "epochs": 30, "shard_size": shard_size}}
        out = tmp_path / f"shards-of-{shard_size}"
        run_experiment(parse_config(config), out, progress=False, log=lambda _: None)
        logits.append(np.load(out / "signals-poisoned-logits.npy"))
    first, second = logits
    # Batched matmuls of another width round differently; 30 epochs of Adam let the last bits
    # drift, but the models stay the same models.
    assert np.abs(first - second).max() <= 1e-3 * np.abs(second).max()
    assert (first.argmax(-1) == second.argmax(-1)).mean() > 0.999


def _npz_config(tmp_path, x, y):
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    config = {**SMALL_CONFIG, "data": {"source": "npz", "path": str(data)},
              "design": {"num_models": 4, "num_targets": 8}, "poison": {"replicas": 2},
              "train": {**SMALL_CONFIG["train"], "epochs": 2}}
    return parse_config(config), data


def test_changed_data_behind_the_same_config_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)).astype(np.float32), np.arange(200) % 3
    config, data = _npz_config(tmp_path, x, y)
    out = tmp_path / "run"
    run_experiment(config, out, progress=False, log=lambda _: None)
    np.savez(data, x=x + 1.0, y=y)  # same shape, other contents
    before = (out / "results.json").read_bytes()
    with pytest.raises(RunDirError, match="data differ from those this run was started on"):
        run_experiment(config, out, progress=False, log=lambda _: None)
    assert (out / "results.json").read_bytes() == before


def test_a_damaged_stage_file_is_computed_again(finished_run, tmp_path):
    import shutil

    out, results = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    np.savez(copy / "design.npz", keep=np.zeros(3))  # wrong shape
    (copy / "shards" / "poisoned" / "models-0004-0007.npz").write_bytes(b"garbage")
    messages = []
    again = run_experiment(parse_config(SMALL_CONFIG), copy, progress=False, log=messages.append).to_json()
    assert any("design.npz is unreadable or damaged" in m for m in messages)
    assert any("models-0004-0007.npz is unreadable or damaged" in m for m in messages)
    assert metrics_of(again) == metrics_of(results)


def test_run_files_are_written_with_the_usual_permissions(finished_run):
    out, _ = finished_run
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "results.json").stat().st_mode & 0o777 == 0o666 & ~mask
