"""The attack registry is open: a user's attack registered in Python runs from a config and
appears in results, the printed table and the shadow-model sweep like a built-in one."""

import numpy as np
import pytest

from truthserum.attacks import (
    AttackInputs, AttackName, get_attack, register_attack, registered_attacks, score_attacks, unregister_attack,
)
from truthserum.config import parse_config
from truthserum.errors import ConfigError, SignalsError
from truthserum.tasks import run_task
from truthserum.tasks.sweeps import run_shadow_sweep

TINY = {
    "seed": 1, "data": {"source": "digits", "pool_size": 200}, "design": {"num_models": 4, "num_targets": 8},
    "poison": {"replicas": 2}, "model": {"hidden_sizes": [16]}, "train": {"epochs": 2, "shard_size": 4},
    "metrics": {"bootstrap": 20},
}


@pytest.fixture
def mean_phi():
    """A user's attack: the target model's own phi, averaged over views (a loss attack)."""
    register_attack("mean-phi", lambda scoring: scoring.phi.mean(axis=-1), signal="phi")
    yield "mean-phi"
    unregister_attack("mean-phi")


def test_built_in_attacks_go_through_the_registry():
    assert registered_attacks()[:8] == tuple(name.value for name in AttackName)
    assert get_attack("rmia-online").needs_population and not get_attack("lira-online").needs_population
    with pytest.raises(SignalsError, match="unknown attack 'nope'; registered: lira-online"):
        get_attack("nope")


def test_a_users_attack_scores_like_a_built_in_one(mean_phi):
    rng = np.random.default_rng(0)
    keep = np.zeros((4, 6), dtype=bool)
    keep[:2, :3] = keep[2:, 3:] = True
    logits = rng.normal(size=(4, 6, 1, 3))
    inputs = AttackInputs.from_arrays(logits=logits, labels=rng.integers(0, 3, size=6), keep=keep)
    scores = score_attacks(inputs, [mean_phi, AttackName.GLOBAL_THRESHOLD])
    # global-threshold is phi itself, so the user's attack, its mean over the one view, is equal
    np.testing.assert_array_equal(scores[mean_phi], scores[AttackName.GLOBAL_THRESHOLD])


def test_each_scored_attack_is_announced_once_as_it_ends(mean_phi):
    """What the scoring progress bar counts: one call per attack, in the order they ran,
    after its scores exist (the sink has them)."""
    from truthserum.attacks.registry import score_attacks_with_details

    rng = np.random.default_rng(0)
    keep = np.zeros((4, 6), dtype=bool)
    keep[:2, :3] = keep[2:, 3:] = True
    inputs = AttackInputs.from_arrays(logits=rng.normal(size=(4, 6, 1, 3)), labels=rng.integers(0, 3, size=6),
                                      keep=keep)
    sunk, announced = [], []
    score_attacks_with_details(inputs, [AttackName.LIRA_ONLINE, mean_phi, AttackName.LABEL_ONLY],
                               sink=lambda name, _: sunk.append(name),
                               on_scored=lambda name: announced.append((name, name in sunk)))
    assert sorted(announced) == sorted((name, True) for name in sunk) and len(sunk) == 3


def test_registering_checks_its_name_and_signal(mean_phi):
    with pytest.raises(ValueError, match="'mean-phi' is taken"):
        register_attack(mean_phi, lambda scoring: scoring.phi)
    with pytest.raises(ValueError, match="'lira-online' is taken"):
        register_attack("lira-online", lambda scoring: scoring.phi)
    with pytest.raises(ValueError, match="unknown signal 'logits'"):
        register_attack("other", lambda scoring: scoring.phi, signal="logits")
    with pytest.raises(ValueError, match="built-in"):
        unregister_attack("lira-online")


def test_a_config_names_only_registered_attacks():
    with pytest.raises(ConfigError, match="attacks: unknown attack 'mean-phi'"):
        parse_config({**TINY, "attacks": ["lira-online", "mean-phi"]})


def test_a_users_attack_appears_in_results_the_table_and_sweeps(mean_phi, tmp_path):
    config = parse_config({**TINY, "attacks": ["lira-online", mean_phi]})
    results = run_task(config, tmp_path / "run", progress=False, log=lambda _: None)
    for condition in ("clean", "poisoned"):
        assert list(results.conditions[condition].attacks) == ["lira-online", mean_phi]
        assert results.attack(condition, mean_phi).metrics.members == 16
    assert f"{mean_phi} AUC" in results.summary()
    summary = run_shadow_sweep(config, tmp_path / "run", [2, None], progress=False, log=lambda _: None)
    assert [point["label"] for point in summary["points"]] == ["2", "all (2)"] * 2  # clean, poisoned
    assert all(mean_phi in point["attacks"] for point in summary["points"])
