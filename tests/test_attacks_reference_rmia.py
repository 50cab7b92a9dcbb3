"""RMIA, label-only and shadow budgets against plain loop-based readings of docs/attacks.md.

As in test_attacks_reference.py, the references share no code with the package: Python loops,
scalars, and mpmath for probabilities that underflow in float64.
"""

import mpmath
import numpy as np
import pytest
from test_attacks_reference import all_but_one, random_signals, reference_scores

from truthserum.attacks import AttackInputs, AttackName, AttackOptions, RmiaOptions, ShadowPlan, score_attacks
from truthserum.attacks.rmia import tune_offline_a
from truthserum.cli import main
from truthserum.errors import SignalsError
from truthserum.metrics.attack import evaluate

mpmath.mp.dps = 50


def plain_probability(z, y):
    """Softmax probability of class y, exactly."""
    exps = [mpmath.exp(mpmath.mpf(float(v))) for v in z]
    return exps[y] / mpmath.fsum(exps)


def reference_rmia(logits, labels, keep, targets, population, *, gamma, a, shadows):
    """Score of (m, x): mean over queries of the fraction of z with LR(x, z) >= gamma."""
    M, N, A, _ = logits.shape
    prob = {(k, p, v): plain_probability(logits[k, p, v], labels[p])
            for k in range(M) for p in [*targets, *population] for v in range(A)}

    def reference(m, p, v):
        refs = [k for k in shadows(m, p) if a is None or not keep[k, p]]
        mean = mpmath.fsum(prob[k, p, v] for k in refs) / len(refs)
        return mean if a is None else (1 + a) / 2 * mean + (1 - a) / 2

    scores = np.zeros((M, len(targets)))
    for m in range(M):
        for t, x in enumerate(targets):
            fractions = []
            for v in range(A):
                ratio_x = prob[m, x, v] / reference(m, x, v)
                dominated = 0
                for z in population:
                    ratio_z = prob[m, z, v] / reference(m, z, v)
                    if ratio_x / ratio_z >= gamma:
                        dominated += 1
                fractions.append(dominated / len(population))
            scores[m, t] = sum(fractions) / A
    return scores


def reference_label_only(logits, labels, keep, targets, *, shadows):
    M, _, A, _ = logits.shape

    def count(k, j):
        total = 0
        for v in range(A):
            row = list(logits[k, j, v])
            total += row.index(max(row)) == labels[j]
        return total

    scores = np.zeros((M, len(targets)))
    for m in range(M):
        for t, j in enumerate(targets):
            observed = count(m, j)
            ratio = []
            for member in (True, False):
                group = [count(k, j) for k in shadows(m, j) if bool(keep[k, j]) == member]
                hits = sum(1 for c in group if c == observed)
                ratio.append((hits + 0.5) / (len(group) + 0.5 * (A + 1)))
            scores[m, t] = float(mpmath.log(ratio[0]) - mpmath.log(ratio[1]))
    return scores


TARGETS = np.array([0, 1, 2, 4, 5, 7, 9])
POPULATION = [3, 6, 8, 10, 11]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("attack", "gamma", "a"), [
    ("rmia-online", 2.0, None), ("rmia-online", 1.0, None),
    ("rmia-offline", 2.0, 0.3), ("rmia-offline", 1.5, 1.0), ("rmia-offline", 2.0, 0.0),
])
def test_cli_rmia_matches_plain_reference(tmp_path, seed, attack, gamma, a):
    logits, labels, keep = random_signals(seed)
    signals = tmp_path / "signals.npz"
    np.savez(signals, logits=logits, labels=labels, keep=keep, targets=TARGETS)
    out = tmp_path / "scores.npz"
    args = ["attack", "--signals", str(signals), "--attack", attack, "--out", str(out), "--rmia-gamma", str(gamma)]
    if a is not None:
        args += ["--rmia-offline-a", str(a)]
    assert main(args) == 0
    with np.load(out, allow_pickle=False) as result:
        scores = result["scores"]
    expected = reference_rmia(logits.astype(np.float64), labels, keep, TARGETS, POPULATION,
                              gamma=gamma, a=a, shadows=all_but_one(keep))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cli_label_only_matches_plain_reference(tmp_path, seed):
    logits, labels, keep = random_signals(seed, num_models=8, views=3)
    signals = tmp_path / "signals.npz"
    np.savez(signals, logits=logits, labels=labels, keep=keep, targets=TARGETS)
    out = tmp_path / "scores.npz"
    assert main(["attack", "--signals", str(signals), "--attack", "label-only", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as result:
        scores = result["scores"]
    expected = reference_label_only(logits, labels, keep, TARGETS, shadows=all_but_one(keep))
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-12)


def test_shadow_plan_draws_half_in_half_out_without_the_target_model():
    rng = np.random.default_rng(0)
    keep = rng.random((12, 30)).argsort(axis=0) < 6
    plan = ShadowPlan(keep=keep, count=4, seed=7)
    columns = np.arange(30)
    for m in range(12):
        mask = plan.mask(m, columns)
        assert not mask[m].any()
        assert ((mask & keep).sum(axis=0) == 2).all() and ((mask & ~keep).sum(axis=0) == 2).all()
        # a point's draw does not depend on the other points asked for
        np.testing.assert_array_equal(plan.mask(m, columns[5:9]), mask[:, 5:9])
    np.testing.assert_array_equal(ShadowPlan(keep=keep, count=4, seed=7).mask(3, columns), plan.mask(3, columns))
    assert not np.array_equal(ShadowPlan(keep=keep, count=4, seed=8).mask(3, columns), plan.mask(3, columns))


@pytest.mark.parametrize("attack", ["lira-online", "lira-offline-fixed", "rmia-online", "rmia-offline", "label-only"])
def test_shadow_budget_matches_reference_on_the_drawn_shadows(attack):
    logits, labels, keep = random_signals(3, num_models=10, views=2)
    plan = ShadowPlan(keep=keep, count=4, seed=5)
    columns = np.arange(keep.shape[1])
    masks = [plan.mask(m, columns) for m in range(10)]

    def shadows(m, j):
        return [k for k in range(10) if masks[m][k, j]]

    inputs = AttackInputs.from_arrays(logits=logits, labels=labels, keep=keep, targets=TARGETS)
    name = AttackName(attack)
    scores = score_attacks(inputs, [name], AttackOptions(shadow_models=4, seed=5, rmia=RmiaOptions(offline_a=0.3)))[name]
    x = logits.astype(np.float64)
    if attack.startswith("rmia"):
        a = None if attack == "rmia-online" else 0.3
        expected = reference_rmia(x, labels, keep, TARGETS, POPULATION, gamma=2.0, a=a, shadows=shadows)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    elif attack == "label-only":
        np.testing.assert_allclose(scores, reference_label_only(logits, labels, keep, TARGETS, shadows=shadows))
    else:
        expected = reference_scores(x, labels, keep, TARGETS, attack, shadows=shadows)
        np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)


def test_shadow_budget_is_checked():
    logits, labels, keep = random_signals(0)
    inputs = AttackInputs.from_arrays(logits=logits, labels=labels, keep=keep, targets=TARGETS)
    for count, message in [(3, "even"), (6, "at most 4")]:
        with pytest.raises(SignalsError, match=message):
            score_attacks(inputs, [AttackName.LIRA_ONLINE], AttackOptions(shadow_models=count))


def test_tuned_offline_a_never_reads_the_target_model():
    """The target model's outputs and membership are replaced by garbage: a is unchanged."""
    logits, labels, keep = random_signals(4, num_models=10, num_points=40, views=1, saturate=False)
    log_p = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    log_p = np.take_along_axis(log_p, labels[None, :, None, None].repeat(10, 0), -1)[..., 0].astype(np.float64)
    mask = ShadowPlan(keep=keep).mask(0, np.arange(40))
    kwargs = dict(num_targets=20, gamma=2.0)
    a = tune_offline_a(log_p, keep, mask, rng=np.random.default_rng(1), **kwargs)
    garbage_p, garbage_keep = log_p.copy(), keep.copy()
    garbage_p[0] = np.nan
    garbage_keep[0] = ~garbage_keep[0]
    assert tune_offline_a(garbage_p, garbage_keep, mask, rng=np.random.default_rng(1), **kwargs) == a
    assert a in np.round(np.linspace(0, 1, 11), 2)
    # through the registry, "tune" gives finite scores in [0, 1]
    inputs = AttackInputs.from_arrays(logits=logits, labels=labels, keep=keep, targets=np.arange(20))
    scores = score_attacks(inputs, [AttackName.RMIA_OFFLINE], AttackOptions(rmia=RmiaOptions(offline_a="tune")))
    assert ((scores[AttackName.RMIA_OFFLINE] >= 0) & (scores[AttackName.RMIA_OFFLINE] <= 1)).all()


def test_rmia_needs_population_points():
    logits, labels, keep = random_signals(0)
    inputs = AttackInputs.from_arrays(logits=logits, labels=labels, keep=keep)  # every point a target
    with pytest.raises(SignalsError, match="population"):
        score_attacks(inputs, [AttackName.RMIA_ONLINE])


def test_default_shadow_groups_do_not_reveal_membership():
    """Every (target model, point) gets M/2 - 1 IN and M/2 - 1 OUT shadows on a balanced design;
    with all shadows dropped but one per group the sizes would otherwise differ by membership."""
    rng = np.random.default_rng(2)
    keep = rng.random((10, 25)).argsort(axis=0) < 5
    plan = ShadowPlan(keep=keep)
    for m in range(10):
        mask = plan.mask(m, np.arange(25))
        assert not mask[m].any()
        assert ((mask & keep).sum(axis=0) == 4).all() and ((mask & ~keep).sum(axis=0) == 4).all()


def test_default_shadows_are_membership_blind_on_an_unbalanced_design_too():
    """Members drawn independently per model: no model is dropped (dropping one would tie the
    group sizes to the column count, which members make larger), and signal-free outputs give
    AUC 0.5 for label-only, whose smoothing sees group sizes (measured 0.490-0.507 over seeds
    0-5; with the drop applied here it is biased upwards)."""
    rng = np.random.default_rng(3)
    keep = rng.random((32, 1200)) < 0.5
    plan = ShadowPlan(keep=keep)
    assert not plan.balanced
    mask = plan.mask(5, np.arange(1200))
    assert (mask.sum(axis=0) == 31).all() and not mask[5].any()
    logits = np.zeros((32, 1200, 1, 3))
    logits[..., 1] = 5.0  # every model predicts class 1; every label is 0
    inputs = AttackInputs.from_arrays(logits=logits, labels=np.zeros(1200, dtype=int), keep=keep,
                                      targets=np.arange(1000))
    scores = score_attacks(inputs, [AttackName.LABEL_ONLY])[AttackName.LABEL_ONLY]
    assert abs(evaluate(scores, inputs.members, resamples=0).auc - 0.5) < 0.02


def test_label_only_is_blind_when_every_label_is_wrong():
    """All counts 0: nothing distinguishes members, so every score must be equal (AUC 0.5).
    Before the default shadows balanced the groups, members scored systematically lower
    (AUC 0.14 on the poisoned demo) because the smoothing saw one OUT shadow more."""
    rng = np.random.default_rng(0)
    keep = rng.random((16, 40)).argsort(axis=0) < 8
    logits = np.zeros((16, 40, 1, 3))
    logits[..., 1] = 5.0  # every model predicts class 1; every label is 0
    inputs = AttackInputs.from_arrays(logits=logits, labels=np.zeros(40, dtype=int), keep=keep)
    scores = score_attacks(inputs, [AttackName.LABEL_ONLY])[AttackName.LABEL_ONLY]
    assert np.ptp(scores) == 0.0


def test_tuning_a_works_with_a_single_target_and_four_models():
    """No pseudo-target can rank one target against itself: the population points join in."""
    rng = np.random.default_rng(0)
    keep = rng.random((4, 40)).argsort(axis=0) < 2
    inputs = AttackInputs.from_arrays(logits=rng.normal(size=(4, 40, 1, 3)), labels=rng.integers(0, 3, 40),
                                      keep=keep, targets=np.array([0]))
    scores = score_attacks(inputs, [AttackName.RMIA_OFFLINE], AttackOptions(rmia=RmiaOptions(offline_a="tune")))
    assert scores[AttackName.RMIA_OFFLINE].shape == (4, 1)


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("balanced", [False, True])
def test_downdated_reference_sums_equal_direct_sums(offline, balanced):
    """Without a shadow budget RMIA sums each point's references once over every model (or
    every OUT model) and takes the target model's left-out shadows away. It must give the
    scores of summing each target model's shadows directly, also where one model holds nearly
    all of a point's probability, so that the subtraction cancels (summed directly instead)."""
    from truthserum.attacks.rmia import rmia_scores, target_model_log_ratios

    rng = np.random.default_rng(4)
    num_models, num_points, num_targets = 12, 60, 25
    if balanced:
        keep = rng.random((num_models, num_points)).argsort(axis=0) < 6
    else:
        keep = rng.random((num_models, num_points)) < 0.5
    models = np.arange(num_models)
    keep[:, :10] = ((models >= 4) & (models < 10))[:, None]  # 6 IN; OUT: models 0-3, 10 and 11
    keep[:, 10:] &= ~keep[:, 10:].all(axis=0)  # offline needs an OUT model in every column
    keep[:, 10:] |= ~keep[:, 10:].any(axis=0)  # and online an IN one, for the balance below
    log_p = rng.normal(scale=3.0, size=(num_models, num_points, 2)) - 3.0
    # model 3 holds almost all the probability of the first 10 points: 1 against 1e-15 for each
    # other model, so a sum less model 3 keeps 2 of float64's 16 digits
    log_p[:, :10] = np.where(models == 3, 0.0, np.log(1e-15))[:, None, None]
    plan = ShadowPlan(keep=keep)
    assert plan.balanced == balanced
    # a = 1: P(p) is the OUT mean itself, so an error in it is not hidden under (1 - a)/2
    a = [1.0] * num_models if offline else None
    mask = lambda m, positions: plan.mask(m, positions)  # noqa: E731
    fast = rmia_scores(log_p, keep, mask, num_targets=num_targets, gamma=2.0, offline_a=a, downdate=True)
    direct = rmia_scores(log_p, keep, mask, num_targets=num_targets, gamma=2.0, offline_a=a, downdate=False)
    np.testing.assert_array_equal(fast, direct)
    assert np.ptp(fast) > 0
    for m in range(num_models):
        ratios = [
            target_model_log_ratios(log_p, keep, mask, m, num_targets=num_targets, offline_a=a and a[m],
                                    totals=totals)
            for totals in (_totals(log_p, keep, offline=offline), None)
        ]
        np.testing.assert_allclose(ratios[0], ratios[1], rtol=1e-9, atol=1e-9)


def _totals(log_p, keep, *, offline):
    from truthserum.attacks.rmia import _shifted_totals

    candidates = ~keep if offline else np.ones(keep.shape, dtype=bool)
    return [_shifted_totals(log_p, candidates)]  # one chunk: fewer points than chunk_points()
