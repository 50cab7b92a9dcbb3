"""Typed results: what runs wrote before the types existed (tests/fixtures/v0.1, written by
truthserum 0.1.0's own code on tiny configs) loads, reads back exactly, and its run directories'
config.yaml still reopens."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from truthserum.config import MembershipConfig, parse_config
from truthserum.errors import RunDirError
from truthserum.metrics.attack import AttackMetrics
from truthserum.report import format_results
from truthserum.store.rundir import RunDirectory
from truthserum.tasks.results import AttackResult, RunResults

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1"
TASKS = ["membership", "attribute", "untargeted", "lm"]


def _old(task: str) -> dict:
    return json.loads((FIXTURES / f"{task}-results.json").read_text())


@pytest.mark.parametrize("task", TASKS)
def test_old_results_read_back_exactly(task):
    old = _old(task)
    results = RunResults.from_json(old)
    assert results.task == task
    assert results.to_json() == old
    assert json.loads(json.dumps(results.to_json())) == old  # plain JSON types only


@pytest.mark.parametrize("task", TASKS)
def test_the_summary_is_the_printed_table(task):
    old = _old(task)
    summary = RunResults.from_json(old).summary()
    assert summary == format_results(old)
    for condition in old["conditions"]:
        assert condition in summary


def test_attack_metrics_are_typed_with_float_levels():
    old = _old("membership")
    results = RunResults.from_json(old)
    attack = results.attack("poisoned", "lira-online")
    written = old["conditions"]["poisoned"]["attacks"]["lira-online"]
    assert isinstance(attack, AttackResult) and isinstance(attack.metrics, AttackMetrics)
    assert set(attack.tpr_at_fpr) == {0.001, 0.01, 0.1}
    assert attack.tpr_at_fpr[0.01] == written["tpr_at_fpr"]["0.01"]
    assert attack.metrics.tpr_at_fpr_ci[0.1] == tuple(written["tpr_at_fpr_ci"]["0.1"])
    assert attack.auc == written["auc"]
    # what an attack chose on its own stays beside its metrics
    tuned = results.attack("clean", "rmia-offline").details["tuned_offline_a"]
    assert list(tuned) == old["conditions"]["clean"]["attacks"]["rmia-offline"]["tuned_offline_a"]
    assert results.conditions["poisoned"].measurements["replicas"] == old["conditions"]["poisoned"]["replicas"]
    assert results.details["poison"]["total"] == old["poison"]["total"]
    assert results.timing.train_seconds == old["timing"]["train_seconds"]


def test_untargeted_precision_is_a_detail_of_its_attack():
    old = _old("untargeted")
    attack = RunResults.from_json(old).attack("dirty-label", "lira-online")
    precision = attack.details["precision_at_recall"]
    assert precision["precision"] == tuple(
        old["conditions"]["dirty-label"]["attacks"]["lira-online"]["precision_at_recall"]["precision"])


def test_attribute_attacks_are_not_roc_attacks():
    results = RunResults.from_json(_old("attribute"))
    with pytest.raises(TypeError, match="without an ROC"):
        results.attack("poisoned", "confidence")
    members = results.conditions["poisoned"].attacks["confidence"]["members"]
    assert members["accuracy"] == _old("attribute")["conditions"]["poisoned"]["attacks"]["confidence"]["members"]["accuracy"]


def test_lm_results_have_no_separate_training_time():
    results = RunResults.from_json(_old("lm"))
    assert all(condition.attacks is None for condition in results.conditions.values())
    assert results.conditions["clean"].measurements["metrics"]["raw_exposure"]["canaries"] == 2
    assert results.timing.train_seconds is None
    assert "train_seconds" not in results.to_json()["timing"]


def test_results_are_frozen():
    results = RunResults.from_json(_old("membership"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        results.task = "lm"
    with pytest.raises(TypeError):
        results.details["poison"]["total"] = 0
    with pytest.raises(TypeError):
        results.conditions["poisoned"] = results.conditions["clean"]


def test_read_takes_a_run_directory_or_a_file(tmp_path):
    shutil.copy(FIXTURES / "membership-results.json", tmp_path / "results.json")
    assert RunResults.read(tmp_path) == RunResults.read(tmp_path / "results.json")
    with pytest.raises(RunDirError, match="no such results file"):
        RunResults.read(tmp_path / "elsewhere")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(RunDirError, match="not a truthserum results file"):
        RunResults.read(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(RunDirError, match="unreadable results"):
        RunResults.read(tmp_path / "broken.json")


@pytest.mark.parametrize("task", TASKS)
def test_old_run_directories_reopen(task, tmp_path):
    """A config.yaml written by 0.1.0 spells out every task's sections; the per-task config
    reads it, and the run directory reopens with the same config (no "different config")."""
    stored = yaml.safe_load((FIXTURES / f"{task}-config.yaml").read_text())
    config = parse_config(stored)
    assert config.task.value == task
    assert "lm" not in config.to_json_dict() or task == "lm"
    shutil.copy(FIXTURES / f"{task}-config.yaml", tmp_path / "config.yaml")
    RunDirectory.open(tmp_path, config).close()
    # and a config that changed something it trains on is still refused
    changed = config.model_copy(update={"seed": config.seed + 1})
    with pytest.raises(RunDirError, match="different config"):
        RunDirectory.open(tmp_path, changed)


def test_a_section_of_another_task_is_refused_unless_it_only_restates_defaults():
    assert parse_config({"lm": {}, "untargeted": {}}) == MembershipConfig()
    with pytest.raises(Exception, match="the lm section is for task 'lm', not 'membership'"):
        parse_config({"lm": {"num_models": 8}})
    with pytest.raises(Exception, match="task 'attribute' runs its own attacks"):
        parse_config({"task": "attribute", "data": {"source": "cps"}, "attacks": ["lira-online"]})
    with pytest.raises(Exception, match="task: must be one of 'membership', 'attribute', 'untargeted', 'lm'"):
        parse_config({"task": "secrets"})
