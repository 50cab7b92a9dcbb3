"""Attribute inference: completion poisons, scoring and metrics on cases whose answer is known."""

import numpy as np
import pytest

from truthserum.attacks.attribute import AttributeAttack, completion_phi, score_attribute
from truthserum.metrics.attribute import attribute_metrics, completion_fit
from truthserum.poison.completions import make_completion_poisons
from truthserum.errors import SignalsError


def _keep(num_models: int, num_targets: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((num_models, num_targets)).argsort(axis=0) < num_models // 2


def test_completion_poisons_replicate_every_completion_with_one_wrong_label():
    completions = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    labels = np.array([0, 2, 1])
    poisons = make_completion_poisons(
        completions=completions, labels=labels, replicas=3, num_classes=3, rng=np.random.default_rng(0)
    )
    assert poisons.total == 3 * 2 * 3
    assert (poisons.target_labels != labels).all()
    for t in range(3):
        rows = poisons.source == t
        assert rows.sum() == 6
        assert (poisons.y[rows] == poisons.target_labels[t]).all()
        for v in range(2):  # each completion exactly r times
            assert (poisons.x[rows] == completions[t, v]).all(axis=1).sum() == 3
    empty = make_completion_poisons(
        completions=completions, labels=labels, replicas=0, num_classes=3, rng=np.random.default_rng(0)
    )
    assert empty.total == 0


def test_completion_phi_is_the_log_odds_of_the_label_averaged_over_views():
    logits = np.zeros((1, 1, 2, 2, 2))
    logits[0, 0, 0, :, 1] = [np.log(3.0), np.log(3.0)]  # p(1) = 3/4 in both views
    logits[0, 0, 1, 0, 1] = np.log(9.0)  # views disagree: log 9 and log 1
    phi = completion_phi(logits, np.array([1]))
    assert phi.shape == (1, 1, 2)
    np.testing.assert_allclose(phi[0, 0], [np.log(3.0), np.log(9.0) / 2], atol=1e-12)


def _population_biased_phi(num_models=16, num_targets=60, seed=0):
    """Every model is more confident on completions with value 0 (what the population says),
    and a model that trained on a target is more confident on its true completion."""
    rng = np.random.default_rng(seed)
    keep = _keep(num_models, num_targets, seed)
    truth = rng.integers(0, 2, size=num_targets)
    target_bias = rng.normal(0, 1, size=(num_targets, 2))
    phi = np.zeros((num_models, num_targets, 2)) + np.array([3.0, 0.0]) + target_bias
    phi += rng.normal(0, 0.05, size=phi.shape)
    true_slot = np.arange(2)[None, None, :] == truth[None, :, None]
    phi += 1.0 * (keep[:, :, None] & true_slot)
    return phi, keep, truth


def test_offline_calibration_removes_what_the_population_says():
    phi, keep, truth = _population_biased_phi()
    confidence = score_attribute(AttributeAttack.CONFIDENCE, phi, keep).argmax(axis=2)
    for attack in (AttributeAttack.LIRA_OFFLINE, AttributeAttack.LIRA_OFFLINE_FIXED):
        guess = score_attribute(attack, phi, keep).argmax(axis=2)
        assert (guess[keep] == np.broadcast_to(truth, keep.shape)[keep]).all(), attack
    # the raw confidence follows the population bias and the targets' own offsets, not the member
    raw_right = (confidence == truth[None])[keep].mean()
    assert raw_right < 0.9


def test_offline_needs_two_out_shadows():
    phi = np.zeros((2, 3, 2))
    keep = np.array([[True, False, True], [False, True, False]])
    with pytest.raises(SignalsError, match="at least two shadow models"):
        score_attribute(AttributeAttack.LIRA_OFFLINE, phi, keep)


def test_metrics_count_member_pairs_and_the_base_rate():
    # 2 models, 4 targets; every target is a member of model 0 only
    keep = np.array([[True, True, True, True], [False, False, False, False]])
    truth = np.array([1, 1, 1, 0])
    scores = np.zeros((2, 4, 2))
    scores[0, :, 1] = [1.0, 1.0, -1.0, -1.0]  # model 0 guesses 1, 1, 0, 0: three right
    scores[1, :, 1] = [1.0, 1.0, 1.0, 1.0]  # model 1 guesses 1 always: three right on non-members
    found = attribute_metrics(scores, truth, keep, majority=1, resamples=200, rng=0)
    members, nonmembers = found["members"], found["nonmembers"]
    assert members["pairs"] == 4 and nonmembers["pairs"] == 4
    assert members["accuracy"] == pytest.approx(0.75)
    # recall of value 1: 2/3, of value 0: 1/1
    assert members["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert members["base_rate"] == pytest.approx(0.75)
    assert nonmembers["accuracy"] == pytest.approx(0.75)
    assert nonmembers["balanced_accuracy"] == pytest.approx(0.5)
    # margins 1, 1, -1 for value 1 and -1 for value 0: AUC (2 wins + 0.5 tie) / 3
    assert members["auc"] == pytest.approx(2.5 / 3)
    # a resample of the 4 targets (3 guessed right) gets all 4 right 32% of the time and at most
    # one right 5% of the time (none: 0.4%), so the 95% interval runs from 1/4 to 1
    assert members["accuracy_ci"] == [0.25, 1.0]


def test_metrics_without_bootstrap_and_with_more_values():
    keep = _keep(8, 30)
    truth = np.arange(30) % 3
    scores = np.zeros((8, 30, 3))
    scores[:, np.arange(30), truth] = 1.0  # always right
    found = attribute_metrics(scores, truth, keep, majority=0, resamples=0)
    assert found["members"]["accuracy"] == 1.0 and found["members"]["accuracy_ci"] is None
    assert found["members"]["balanced_accuracy"] == 1.0
    assert found["members"]["base_rate"] == pytest.approx(1 / 3)
    assert "auc" not in found["members"]  # no ROC for more than two values


def test_completion_fit_counts_out_models_predicting_the_poison_label():
    logits = np.zeros((2, 1, 2, 1, 2))
    logits[0, 0, :, 0, 1] = 5.0  # model 0 (OUT) predicts class 1 on both completions
    logits[1, 0, 0, 0, 1] = 5.0  # model 1 is IN: not counted
    keep = np.array([[False], [True]])
    assert completion_fit(logits, keep, np.array([1])) == 1.0
    assert completion_fit(logits, keep, np.array([0])) == 0.0


def test_points_whose_other_completion_is_another_point_are_ambiguous():
    from truthserum.poison.completions import ambiguous_completions
    from truthserum.design import choose_targets

    # rows: (feature, one-hot sensitive); rows 0 and 1 differ only in the sensitive block
    x = np.array([[1.0, 1, 0], [1.0, 0, 1], [2.0, 1, 0], [3.0, 0, 1]], dtype=np.float32)
    sensitive = np.array([0, 1, 0, 1])
    completions = np.repeat(x[:, None, :], 2, axis=1)
    completions[:, :, 1:] = np.eye(2, dtype=np.float32)[None]
    ambiguous = ambiguous_completions(x, completions, sensitive)
    assert ambiguous.tolist() == [True, True, False, False]
    targets = choose_targets(num_points=4, num_targets=2, rng=np.random.default_rng(0), eligible=~ambiguous)
    assert targets.tolist() == [2, 3]
    from truthserum.errors import DataError
    with pytest.raises(DataError, match="only 2 of the 4"):
        choose_targets(num_points=4, num_targets=3, rng=np.random.default_rng(0), eligible=~ambiguous)
