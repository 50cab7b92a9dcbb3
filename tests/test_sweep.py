"""Sweeps over the poisoning budget and the shadow models, and re-scoring a run directory."""

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import SMALL_CONFIG, run_main
from test_cli import assert_one_line_error

from truthserum.attacks import AttackName
from truthserum.config import parse_config
from truthserum.tasks.membership import run_experiment
from truthserum.tasks.sweeps import parse_counts, run_replica_sweep, run_shadow_sweep


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def plain_run(small_run):
    """SMALL_CONFIG's run, shared with tests/test_runner.py: a test that changes it copies it."""
    return small_run


def test_replica_sweep_trains_only_the_budgets_a_run_lacks(plain_run, tmp_path):
    source, results = plain_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    messages = []
    summary = run_replica_sweep(parse_config(SMALL_CONFIG), out, [0, 2, 8], progress=False, log=messages.append)
    assert "clean: reused 4 of 4 finished shards" in messages
    assert "poisoned: reused 4 of 4 finished shards" in messages
    assert sum("replicas-2: trained models" in m for m in messages) == 4
    assert [p["replicas"] for p in summary["points"]] == [0, 2, 8]
    assert [p["condition"] for p in summary["points"]] == ["clean", "replicas-2", "poisoned"]
    # the budgets shared with the plain run give its numbers exactly
    for point, condition in ((summary["points"][0], "clean"), (summary["points"][2], "poisoned")):
        expected = results["conditions"][condition]
        assert point["test_accuracy"] == expected["accuracy"]["test"]
        for name, metrics in point["attacks"].items():
            assert metrics["tpr_at_fpr"] == expected["attacks"][name]["tpr_at_fpr"]
            assert metrics["tpr_at_fpr_ci"] == expected["attacks"][name]["tpr_at_fpr_ci"]
    on_disk = json.loads((out / "sweep-replicas.json").read_text())
    assert on_disk["points"][1]["poison_fraction"] == pytest.approx(32 / (32 + 500), abs=0.01)
    assert (out / "sweep-replicas.png").read_bytes()[:4] == b"\x89PNG"
    with np.load(out / "poisons.npz", allow_pickle=False) as poisons:
        assert poisons["y"].shape == (16 * 8,)  # the stored poisons stay the config's budget


def test_shadow_sweep_rescores_without_training(plain_run, tmp_path):
    source, results = plain_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("shards/*/*.npz")}
    summary = run_shadow_sweep(parse_config(SMALL_CONFIG), out, [2, 6, None], progress=False, log=quiet)
    assert {p: p.stat().st_mtime_ns for p in out.glob("shards/*/*.npz")} == stamps
    points = {(p["condition"], p["shadow_models"]): p for p in summary["points"]}
    assert set(points) == {(c, k) for c in ("clean", "poisoned") for k in (2, 6, 14)}
    # "all" is the default shadows: the numbers of the run itself
    for condition in ("clean", "poisoned"):
        for name, metrics in points[condition, 14]["attacks"].items():
            expected = results["conditions"][condition]["attacks"][name]
            assert metrics["auc"] == expected["auc"]
            assert metrics["tpr_at_fpr_ci"] == expected["tpr_at_fpr_ci"]  # same bootstrap draws
    # fewer shadow models change the numbers
    assert (points["poisoned", 2]["attacks"]["lira-online-fixed"]["auc"]
            != points["poisoned", 14]["attacks"]["lira-online-fixed"]["auc"])
    assert (out / "sweep-shadow-models.png").read_bytes()[:4] == b"\x89PNG"


def test_scoring_settings_may_change_without_retraining(plain_run, tmp_path):
    source, _ = plain_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    changed = parse_config({**SMALL_CONFIG, "attacks": ["rmia-offline", "label-only"],
                            "rmia": {"offline_a": 0.5}, "metrics": {"bootstrap": 0}})
    # a shadow sweep with other scoring settings records them in its own json, not config.yaml
    before = (out / "config.yaml").read_text()
    summary = run_shadow_sweep(changed, out, [4], progress=False, log=quiet)
    assert (out / "config.yaml").read_text() == before
    assert summary["config"]["rmia"]["offline_a"] == 0.5
    messages = []
    results = run_experiment(changed, out, progress=False, log=messages.append).to_json()
    assert "poisoned: reused 4 of 4 finished shards" in messages
    assert set(results["conditions"]["poisoned"]["attacks"]) == {"rmia-offline", "label-only"}
    assert results["conditions"]["poisoned"]["attacks"]["label-only"]["auc_ci"] is None
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["rmia"]["offline_a"] == 0.5 and stored["attacks"] == ["rmia-offline", "label-only"]


def test_augmented_queries_reach_every_attack(tmp_path):
    config = parse_config({**SMALL_CONFIG, "design": {"num_models": 8, "num_targets": 16},
                           "query": {"count": 5}, "train": {**SMALL_CONFIG["train"], "epochs": 5}})
    results = run_experiment(config, tmp_path / "run", progress=False, log=quiet).to_json()
    assert np.load(tmp_path / "run" / "signals-poisoned-logits.npy").shape == (8, 1000, 5, 10)
    assert set(results["conditions"]["poisoned"]["attacks"]) == {name.value for name in AttackName}


def test_sweep_command_and_its_errors(plain_run, tmp_path, capsys):
    source, _ = plain_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_CONFIG))
    done = run_main(capsys, "sweep", str(config), "--shadow-models", "4,all", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "TPR at 1% FPR, by shadow models per target point" in done.stdout
    assert "poisoned rmia-online" in done.stdout
    assert_one_line_error(run_main(capsys, "sweep", str(config), "--replicas", "0,x", "--out", str(out)),
                          "--replicas: 'x' is not a whole number")
    assert_one_line_error(run_main(capsys, "sweep", str(config), "--shadow-models", "3", "--out", str(out)),
                          "--shadow-models 3: the number of shadow models must be even")
    assert_one_line_error(run_main(capsys, "sweep", str(config), "--shadow-models", "16", "--out", str(out)),
                          "at most 14")
    assert_one_line_error(run_main(capsys, "sweep", str(config), "--replicas", "0,20000", "--out", str(out)),
                          "--replicas: 20000 is more than 10000")
    # checked before anything is trained: an empty directory stays empty
    assert_one_line_error(run_main(capsys, "sweep", str(config), "--shadow-models", "100", "--out",
                                           str(tmp_path / "fresh")), "--shadow-models 100")
    assert not (tmp_path / "fresh").exists()
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(out / "signals-clean.npz"), "--attack",
                                   "lira-online", "--seed", "-1"), "the seed must be an integer in 0..")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SMALL_CONFIG, "seed": 9}))
    assert_one_line_error(run_main(capsys, "sweep", str(other), "--shadow-models", "4", "--out", str(out)),
                          "different config (seed: 3 != 9)")


def test_parse_counts():
    assert parse_counts("8,0, 2", option="--replicas") == [0, 2, 8]
    assert parse_counts("all,4", option="--shadow-models", allow_all=True) == [4, None]
    for bad in ("1,1", "-1", "", "all"):
        with pytest.raises(Exception, match="--replicas"):
            parse_counts(bad, option="--replicas")


@pytest.mark.parametrize("attack", [name.value for name in AttackName])
def test_every_attack_runs_on_a_run_through_the_attack_command(plain_run, capsys, attack):
    out, results = plain_run
    # the run's seed draws RMIA's tuning halves, so the command gets the same seed
    done = run_main(capsys, "attack", "--signals", str(out / "signals-poisoned.npz"), "--attack", attack,
                    "--seed", str(SMALL_CONFIG["seed"]))
    assert done.returncode == 0, done.stderr
    metrics = results["conditions"]["poisoned"]["attacks"][attack]
    low, high = metrics["auc_ci"]
    assert f"AUC {metrics['auc']:.3f} [{low:.3f}, {high:.3f}]" in done.stdout  # the run's interval
    assert f"epsilon >= {metrics['epsilon_lower_bound']:.2f}" in done.stdout


def test_attack_command_takes_all_or_one_shadow_count(plain_run, capsys):
    out, results = plain_run
    signals = str(out / "signals-poisoned.npz")
    done = run_main(capsys, "attack", "--signals", signals, "--attack", "lira-online-fixed",
                    "--shadow-models", "all", "--seed", str(SMALL_CONFIG["seed"]))
    assert done.returncode == 0, done.stderr
    assert f"AUC {results['conditions']['poisoned']['attacks']['lira-online-fixed']['auc']:.3f}" in done.stdout
    assert_one_line_error(run_main(capsys, "attack", "--signals", signals, "--attack", "lira-online",
                                   "--shadow-models", "2,4"), "give one number")
