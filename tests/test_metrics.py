import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from truthserum.errors import SignalsError
from truthserum.metrics.epsilon import epsilon_lower_bound
from truthserum.metrics.roc import roc_curve, tpr_at_fpr
from truthserum.metrics.attack import evaluate


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    members = rng.random(500) < 0.4
    scores = np.round(rng.normal(size=500) + members, 1)  # many ties
    assert evaluate(scores, members).auc == pytest.approx(roc_auc_score(members, scores), abs=1e-12)


def test_roc_points_match_sklearn():
    rng = np.random.default_rng(1)
    members = rng.random(300) < 0.5
    scores = rng.normal(size=300) + 2 * members
    ours = roc_curve(scores, members)
    fpr, tpr, _ = sklearn_roc_curve(members, scores, drop_intermediate=False)
    np.testing.assert_allclose(ours.fpr, fpr)
    np.testing.assert_allclose(ours.tpr, tpr)


def test_tpr_is_read_strictly_below_the_fpr_level():
    # 10 non-members, 4 members; scores in descending order: M M N M N N N N N N N M N N
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
    scores = -np.arange(labels.size, dtype=float)
    roc = roc_curve(scores, labels)
    assert tpr_at_fpr(roc, 0.1) == 0.5    # FPR 0.1 is not strictly below 0.1
    assert tpr_at_fpr(roc, 0.1001) == 0.75
    assert tpr_at_fpr(roc, 0.001) == 0.5  # zero false positives
    metrics = evaluate(scores, labels)
    assert (metrics.members, metrics.nonmembers) == (4, 10)


def test_metrics_refuse_a_single_class_and_nan():
    with pytest.raises(SignalsError, match="both members and non-members"):
        evaluate(np.arange(4.0), np.ones(4, dtype=bool))
    with pytest.raises(SignalsError, match="NaN"):
        evaluate(np.array([0.0, np.nan]), np.array([True, False]))


def test_infinite_scores_tie_with_each_other():
    roc = roc_curve(np.array([np.inf, np.inf, 0.0, -np.inf]), np.array([True, False, True, False]))
    np.testing.assert_allclose(roc.fpr, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(roc.tpr, [0.0, 0.5, 1.0, 1.0])


def test_evaluate_keeps_its_two_argument_form():
    rng = np.random.default_rng(2)
    members = rng.random(400) < 0.5
    scores = rng.normal(size=400) + members
    metrics = evaluate(scores, members)
    assert metrics.resamples == 1000 and metrics.confidence == 0.95 and metrics.delta == 1e-5
    assert metrics.auc_ci[0] <= metrics.auc <= metrics.auc_ci[1]
    assert set(metrics.tpr_at_fpr) == set(metrics.tpr_at_fpr_ci) == set(metrics.low_support)
    # the bound at the defaults (delta 1e-5, 95% confidence); a shift of 1 shows some privacy loss
    assert metrics.epsilon_lower_bound == epsilon_lower_bound(roc_curve(scores, members), delta=1e-5) > 0.0
    assert metrics.bounds.gaussian is not None  # the default delta states the Gaussian epsilons
