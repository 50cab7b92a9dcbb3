"""Each attack on constructed signals whose answer is known in closed form."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from truthserum.attacks import AttackInputs, AttackName, phi_from_logits, score_attacks
from truthserum.attacks.lira import SCALE_FLOOR, check_group_sizes, lira, location_scale
from truthserum.attacks.shadows import ShadowPlan
from truthserum.errors import SignalsError
from truthserum.metrics.attack import evaluate


def test_phi_matches_log_odds_on_moderate_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 2, 4))
    labels = rng.integers(0, 4, size=5)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p_true = np.take_along_axis(p, labels[None, :, None, None].repeat(3, 0).repeat(2, 2), -1)[..., 0]
    np.testing.assert_allclose(phi_from_logits(logits, labels), np.log(p_true / (1 - p_true)), rtol=1e-10)


def test_phi_on_extreme_logits_is_finite_and_exact():
    labels = np.array([0, 0, 1, 2])
    logits = np.array([
        [1000.0, 0.0, 0.0],      # p_y == 1 in floating point
        [-1000.0, 0.0, 0.0],     # p_y == 0 in floating point
        [3.0e4, -3.0e4, 3.0e4],  # two saturated classes
        [-5.0, -5.0, -5.0],      # uniform
    ])[None, :, None, :]
    phi = phi_from_logits(logits, labels)[0, :, 0]
    assert np.isfinite(phi).all()
    np.testing.assert_allclose(phi, [1000.0 - math.log(2), -1000.0 - math.log(2), -6.0e4 - math.log(2), -math.log(2)])


def test_phi_two_classes_is_logit_difference():
    logits = np.array([[[[700.0, -700.0]], [[-3.0, 4.0]]]])
    np.testing.assert_allclose(phi_from_logits(logits, np.array([0, 1]))[0, :, 0], [1400.0, 7.0])


def _separable_inputs(num_models=8, num_points=100, gap=6.0, seed=0):
    """Members have phi near +gap/2, non-members near -gap/2, per point; the first 20 points
    are targets, the rest RMIA's population."""
    rng = np.random.default_rng(seed)
    keep = rng.random((num_models, num_points)).argsort(axis=0) < num_models // 2
    phi = np.where(keep, gap / 2, -gap / 2) + rng.normal(0, 0.3, size=keep.shape)
    # two classes: phi = z_0 - z_1 with label 0
    logits = np.stack([phi, np.zeros_like(phi)], axis=-1)[:, :, None, :]
    return AttackInputs.from_arrays(
        logits=logits, labels=np.zeros(num_points, dtype=int), keep=keep, targets=np.arange(20)
    )


@pytest.mark.parametrize("attack", list(AttackName))
def test_every_attack_is_perfect_on_separated_signals(attack):
    inputs = _separable_inputs()
    scores = score_attacks(inputs, [attack])[attack]
    metrics = evaluate(scores, inputs.members)
    assert metrics.auc == 1.0
    assert metrics.tpr_at_fpr[0.001] == 1.0
    assert metrics.members == metrics.nonmembers == 4 * 20


@pytest.mark.parametrize("attack", list(AttackName))
def test_every_attack_is_blind_when_membership_leaves_no_trace(attack):
    """Signals independent of membership: AUC near 0.5 (a sign flip would show as ~0)."""
    rng = np.random.default_rng(1)
    keep = rng.random((16, 400)).argsort(axis=0) < 8
    logits = rng.normal(size=(16, 400, 1, 3))
    inputs = AttackInputs.from_arrays(
        logits=logits, labels=rng.integers(0, 3, 400), keep=keep, targets=np.arange(200)
    )  # the other 200 points are RMIA's population
    auc = evaluate(score_attacks(inputs, [attack])[attack], inputs.members).auc
    assert 0.45 < auc < 0.55


def test_online_and_offline_scores_by_hand():
    """Six models, one point, one query: every quantity can be written down, the default
    shadows included (every other model, less the last model after m, cyclically, of the
    group m is not in)."""
    phi = np.array([1.0, 3.0, 5.0, -2.0, -4.0, -9.0])[:, None, None]  # (M, T, A)
    keep = np.array([True, True, True, False, False, False])[:, None]
    mask_for = lambda m, columns: ShadowPlan(keep=keep).mask(m, columns)  # noqa: E731
    online = lira(phi, keep, mask_for, online=True, fixed_variance=False)[:, 0]
    offline = lira(phi, keep, mask_for, online=False, fixed_variance=False)[:, 0]
    # model 0 (IN): IN = {3, 5}: median 4, std 1; OUT drops model 5 (farthest after 0):
    # {-2, -4}: median -3, std 1
    assert mask_for(0, np.arange(1))[:, 0].tolist() == [False, True, True, True, True, False]
    assert online[0] == pytest.approx(norm.logpdf(1.0, 4.0, 1.0) - norm.logpdf(1.0, -3.0, 1.0), rel=1e-12)
    assert offline[0] == pytest.approx(norm.logcdf((1.0 + 3.0) / 1.0), rel=1e-12)
    # model 4 (OUT): IN drops model 2 ((2 - 4) mod 6 = 4 is the farthest): {1, 3}: median 2,
    # std 1; OUT = {-2, -9}: median -5.5, std 3.5
    assert mask_for(4, np.arange(1))[:, 0].tolist() == [True, True, False, True, False, True]
    assert online[4] == pytest.approx(norm.logpdf(-4.0, 2.0, 1.0) - norm.logpdf(-4.0, -5.5, 3.5))
    assert offline[4] == pytest.approx(norm.logcdf((-4.0 + 5.5) / 3.5))


def test_a_single_shadow_gets_the_floored_scale():
    phi = np.array([1.0, 3.0, -2.0, -4.0])[:, None, None]
    keep = np.array([True, True, False, False])[:, None]
    mask_for = lambda m, columns: ShadowPlan(keep=keep).mask(m, columns)  # noqa: E731
    online = lira(phi, keep, mask_for, online=True, fixed_variance=False)[:, 0]
    # model 0: IN = {3}, OUT = {-2} (model 3 dropped): both scales floored
    expected = norm.logpdf(1.0, 3.0, SCALE_FLOOR) - norm.logpdf(1.0, -2.0, SCALE_FLOOR)
    assert online[0] == pytest.approx(expected, rel=1e-12)


def loo_location_scale(phi, group, *, fixed_variance, name="IN"):
    """location_scale with every model in turn left out: (M, T, A) each."""
    location, scale = np.empty_like(phi), np.empty_like(phi)
    for m in range(phi.shape[0]):
        shadows = group & (np.arange(phi.shape[0]) != m)[:, None]
        check_group_sizes(shadows, name=name, target_model=m)
        location[m], scale[m] = location_scale(phi, shadows, fixed_variance=fixed_variance)
    return location, scale


def test_fixed_variance_is_root_mean_square_around_each_location():
    # three shadows per group after leaving out model 0; two points with different spreads
    phi = np.array([
        [0.0, 0.0],
        [1.0, 10.0],
        [2.0, 20.0],
        [3.0, 30.0],
        [-1.0, -1.0],
        [-2.0, -2.0],
    ])[:, :, None]
    keep = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [0, 0], [0, 0]], dtype=bool)
    location, scale = loo_location_scale(phi, keep, fixed_variance=True)
    # model 0 out: point 0 IN = {1, 2, 3} (median 2), point 1 IN = {10, 20, 30} (median 20)
    deviations = [1, 0, 1, 100, 0, 100]
    assert location[0, :, 0].tolist() == [2.0, 20.0]
    assert scale[0, 0, 0] == pytest.approx(math.sqrt(sum(deviations) / 6))
    assert scale[0, 1, 0] == scale[0, 0, 0]


def test_global_threshold_is_mean_phi_over_queries():
    logits = np.zeros((4, 2, 3, 2))
    logits[..., 0] = np.arange(24).reshape(4, 2, 3)
    keep = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=bool)
    inputs = AttackInputs.from_arrays(logits=logits, labels=np.zeros(2, dtype=int), keep=keep)
    scores = score_attacks(inputs, [AttackName.GLOBAL_THRESHOLD])[AttackName.GLOBAL_THRESHOLD]
    np.testing.assert_allclose(scores, logits[..., 0].mean(axis=-1))


def test_online_attack_needs_an_in_shadow_for_every_target():
    keep = np.array([[1, 0], [0, 1], [0, 0], [0, 1]], dtype=bool)  # point 0: one IN model only
    inputs = AttackInputs.from_arrays(logits=np.zeros((4, 2, 1, 2)), labels=np.zeros(2, dtype=int), keep=keep)
    with pytest.raises(SignalsError, match="no IN shadow"):
        score_attacks(inputs, [AttackName.LIRA_ONLINE])
    # the offline attack only needs OUT shadows
    assert score_attacks(inputs, [AttackName.LIRA_OFFLINE])[AttackName.LIRA_OFFLINE].shape == (4, 2)
