"""The auditing bounds against independent computations, the cases we can reproduce, and small
soundness simulations (the full one, 1,000 repetitions, is experiments/audit_soundness.py)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import binom, binomtest, norm

from truthserum.metrics.attack import AttackMetrics, evaluate
from truthserum.metrics.bounds import ceiling_table, ceilings, epsilon_bounds
from truthserum.metrics.epsilon import epsilon_from_counts
from truthserum.metrics.gaussian_dp import (
    candidate_points, delta_of_gaussian, epsilon_of_gaussian, gaussian_mu_bound, gaussian_split_mu_bound,
    mu_from_counts, mu_from_rates,
)
from truthserum.metrics.one_run import (
    epsilon_one_run, fdp_rejects, guess_counts, guess_grid, mu_one_run_fdp, one_run_bounds, one_run_p_value,
)
from truthserum.metrics.roc import roc_curve
from truthserum.metrics.soundness import mu_of_epsilon, simulate_bounds, soundness_table


# --- Gaussian DP -------------------------------------------------------------------------------

def _hockey_stick(epsilon: float, mu: float) -> float:
    """delta(epsilon) of N(mu, 1) against N(0, 1) by numerical integration of the definition."""
    value, _ = quad(lambda x: max(0.0, norm.pdf(x, mu) - math.exp(epsilon) * norm.pdf(x)),
                    -12, mu + 12, points=[epsilon / mu + mu / 2], limit=200)
    return value


@pytest.mark.parametrize("mu, epsilon", [(0.5, 0.3), (1.0, 1.0), (2.0, 3.0), (3.0, 8.0)])
def test_delta_of_gaussian_is_the_hockey_stick_divergence(mu, epsilon):
    assert delta_of_gaussian(epsilon, mu) == pytest.approx(_hockey_stick(epsilon, mu), rel=1e-6, abs=1e-12)


def test_epsilon_of_gaussian_inverts_delta_and_matches_the_prv_accountant():
    from prv_accountant import PRVAccountant
    from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism

    for mu in (0.5, 1.0, 2.0):
        eps = epsilon_of_gaussian(mu, 1e-5)
        assert delta_of_gaussian(eps, mu) == pytest.approx(1e-5, rel=1e-6)
        # the Gaussian mechanism of noise 1/mu, once, without subsampling: an independent tool
        accountant = PRVAccountant(
            prvs=[PoissonSubsampledGaussianMechanism(sampling_probability=1.0, noise_multiplier=1.0 / mu)],
            max_self_compositions=[1], eps_error=1e-3, delta_error=1e-10)
        low, _, high = accountant.compute_epsilon(delta=1e-5, num_self_compositions=[1])
        assert low - 1e-3 <= eps <= high + 1e-3
    assert epsilon_of_gaussian(0.0, 1e-5) == 0.0
    with pytest.raises(ValueError, match="delta in"):
        epsilon_of_gaussian(1.0, 0.0)


def test_mu_from_rates_recovers_the_mu_of_the_optimal_test():
    # The likelihood-ratio test of N(mu, 1) against N(0, 1) at threshold t has
    # FPR = 1 - Phi(t) and FNR = Phi(t - mu), whatever t.
    for mu in (0.3, 1.0, 2.5):
        for t in (-1.0, 0.4, 2.0):
            assert mu_from_rates(1 - norm.cdf(t), norm.cdf(t - mu)) == pytest.approx(mu)


def test_mu_from_counts_matches_a_plain_loop_over_thresholds():
    rng = np.random.default_rng(3)
    positives, negatives = 300, 400
    tp = np.sort(rng.integers(0, positives + 1, 25))
    fp = np.sort(rng.integers(0, negatives + 1, 25))
    confidence = 0.9
    each = (1 - confidence) / (2 * tp.size)
    best = 0.0
    dist = NormalDist()
    for t, f in zip(tp, fp):  # scipy's own exact one-sided intervals, one threshold at a time
        fpr_high = binomtest(int(f), negatives, alternative="less").proportion_ci(1 - each).high
        fnr_high = binomtest(int(positives - t), positives, alternative="less").proportion_ci(1 - each).high
        if 0 < fpr_high < 1 and 0 < fnr_high < 1:
            best = max(best, dist.inv_cdf(1 - fpr_high) - dist.inv_cdf(fnr_high))
    assert mu_from_counts(tp, positives, fp, negatives, confidence=confidence) == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_gaussian_bound_is_tight_on_a_gaussian_mechanism_with_many_trials(mu):
    # 200,000 trials a side at 90% and delta 0.05: below the truth and within 10% of it
    rng = np.random.default_rng(11)
    members = np.r_[np.ones(200_000, bool), np.zeros(200_000, bool)]
    scores = rng.standard_normal(members.size) + mu * members
    bound = epsilon_of_gaussian(gaussian_mu_bound(roc_curve(scores, members), confidence=0.9), 0.05)
    truth = epsilon_of_gaussian(mu, 0.05)
    assert 0.9 * truth < bound <= truth


def test_a_long_roc_is_tried_at_geometric_grids_from_both_ends():
    tp = np.array([0, 1, 2, 3, 3, 4, 5.0])
    fp = np.array([0, 0, 1, 1, 2, 3, 4.0])
    # grids of 2: at most 0 and 1 false positives, the last such points 1 and 3; at most 1 and
    # 0 false negatives, the first such points 5 and 6
    assert candidate_points(tp, fp, 5, 4, limit=4).tolist() == [1, 3, 5, 6]
    assert candidate_points(tp, fp, 5, 4, limit=7).tolist() == list(range(7))
    rng = np.random.default_rng(2)
    members = rng.random(20_000) < 0.5
    roc = roc_curve(rng.standard_normal(20_000) + 2.0 * members, members)
    tp, fp = np.rint(roc.tpr[1:-1] * roc.members), np.rint(roc.fpr[1:-1] * roc.nonmembers)
    chosen = candidate_points(tp, fp, roc.members, roc.nonmembers)
    assert 1000 < chosen.size <= 4096 < tp.size
    assert gaussian_mu_bound(roc) == pytest.approx(
        mu_from_counts(tp[chosen], roc.members, fp[chosen], roc.nonmembers))


def test_gaussian_split_counts_only_the_held_out_half():
    rng = np.random.default_rng(0)
    members = rng.random((8, 200)) < 0.5
    scores = rng.standard_normal((8, 200)) + 3.0 * members
    mu = gaussian_split_mu_bound(scores, members, rng=np.random.default_rng(1))
    assert 1.0 < mu < 3.0
    # by hand: the same permutation, the threshold with the best bound on the first half (at
    # alpha / 2 per end), counted on the second half alone
    columns = np.random.default_rng(1).permutation(200)
    choose, count = columns[:100], columns[100:]
    dist = NormalDist()

    def bound(called, truth):
        fp_high = binomtest(int((called & ~truth).sum()), int((~truth).sum()), alternative="less").proportion_ci(0.975).high
        fn_high = binomtest(int((~called & truth).sum()), int(truth.sum()), alternative="less").proportion_ci(0.975).high
        return dist.inv_cdf(1 - fp_high) - dist.inv_cdf(fn_high)

    candidates = np.unique(scores[:, choose])[:-1]  # every threshold but the loosest (all called)
    best = max(candidates[1:], key=lambda t: bound(scores[:, choose] >= t, members[:, choose]))
    assert mu == pytest.approx(bound(scores[:, count] >= best, members[:, count]), rel=1e-6)
    # a half with no member at all leaves nothing to bound
    assert gaussian_split_mu_bound(scores[:, :2], np.zeros((8, 2), bool), rng=np.random.default_rng(1)) == 0.0


# --- one run (Steinke, Nasr, Jagielski 2023) ---------------------------------------------------

def _p_value_loop(m, r, v, eps, delta):
    """The p-value as the paper's appendix algorithm states it, a term at a time."""
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = sum(binom.pmf(i, r, q) for i in range(v, r + 1))
    alpha, partial = 0.0, 0.0
    for i in range(1, v + 1):
        partial += binom.pmf(v - i, r, q)
        alpha = max(alpha, partial / i)
    return min(1.0, tail + alpha * delta * 2 * m)


@pytest.mark.parametrize("m, r, v", [(1000, 100, 90), (1000, 1000, 700), (200, 40, 40), (50, 10, 3)])
@pytest.mark.parametrize("eps, delta", [(0.5, 0.0), (1.5, 1e-5), (3.0, 1e-3)])
def test_one_run_p_value_matches_the_papers_algorithm(m, r, v, eps, delta):
    assert one_run_p_value(m, r, v, epsilon=eps, delta=delta) == pytest.approx(
        _p_value_loop(m, r, v, eps, delta), rel=1e-7, abs=1e-14)


def test_one_run_reproduces_the_reference_examples():
    # all of 1,000 guesses right: about 5.8; all of 100: about 3.5; 900 of 1,000: about 2.0
    # (95% confidence, delta 0; the examples recorded in the project's notes)
    assert epsilon_one_run(1000, 1000, 1000) == pytest.approx(5.81, abs=0.01)
    assert epsilon_one_run(100, 100, 100) == pytest.approx(3.49, abs=0.01)
    assert epsilon_one_run(1000, 1000, 900) == pytest.approx(2.02, abs=0.01)
    # the bound is the largest epsilon whose p-value is at the significance
    eps = epsilon_one_run(1000, 600, 560, delta=1e-5)
    assert one_run_p_value(1000, 600, 560, epsilon=eps, delta=1e-5) == pytest.approx(0.05, rel=1e-4)
    assert epsilon_one_run(100, 10, 5) == 0.0


def test_guess_counts_guesses_in_at_the_top_and_out_at_the_bottom():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, False, True, False, True, False])
    assert guess_counts(scores, included, 2) == 2   # 5.0 in (right), 0.0 out (right)
    assert guess_counts(scores, included, 4) == 2   # plus 4.0 in (wrong), 1.0 out (wrong)
    assert guess_counts(scores, included, 6) == 4   # plus 3.0 in (right), 2.0 out (right)


# --- one run, f-DP (Mahloujifar, Melis, Chaudhuri 2025) ----------------------------------------

def _fdp_rejects_loop(mu, m, k, c, confidence):
    """The recursive test restated with scalars and the standard library's normal distribution."""
    dist = NormalDist()
    sig = 1 - confidence
    right, wrong = sig * c / m, sig * (k - c) / m
    for i in range(c - 1, -1, -1):
        inverse = 0.0 if right <= 0 else 1.0 if right >= 1 else dist.cdf(dist.inv_cdf(right) - mu)
        raised = max(wrong, inverse)
        if raised == wrong:
            break
        right = min(right + i / (k - i) * (raised - wrong), 1.0)
        wrong = raised
    return right + wrong > k / m


@pytest.mark.parametrize("m, k, c", [(1000, 1000, 1000), (1000, 200, 180), (100, 100, 80), (500, 50, 30)])
def test_fdp_test_matches_a_scalar_loop(m, k, c):
    grid = np.linspace(0.05, 6.0, 40)
    expected = [_fdp_rejects_loop(mu, m, k, c, 0.95) for mu in grid]
    assert fdp_rejects(grid, m, k, c, confidence=0.95).tolist() == expected


# mu and epsilon (delta 1e-5) that Meta's PrivacyGuard (facebookresearch/PrivacyGuard at
# fb9c26c, FDPAnalysisNode.audit_rh_with_cap, the authors' organisation's implementation)
# rejects at 95%, bisected finely and rounded to three decimals
PRIVACY_GUARD_FDP = [
    ((1000, 1000, 1000), 2.368, 12.335), ((1000, 200, 190), 0.908, 3.916), ((100, 100, 100), 1.703, 8.216),
    ((1000, 100, 93), 0.703, 2.923), ((500, 50, 30), 0.0, 0.0), ((100, 20, 10), 0.0, 0.0),
]


@pytest.mark.parametrize("case, mu, eps", PRIVACY_GUARD_FDP)
def test_fdp_bound_matches_the_authors_organisations_implementation(case, mu, eps):
    found = mu_one_run_fdp(*case)
    assert found == pytest.approx(mu, abs=6e-4)
    assert (epsilon_of_gaussian(found, 1e-5) if found else 0.0) == pytest.approx(eps, abs=3e-3)


def test_fdp_bound_is_the_edge_of_the_rejected_mus_and_beats_the_epsilon_bound():
    for m, k, c in [(1000, 1000, 1000), (1000, 200, 190), (100, 100, 100)]:
        mu = mu_one_run_fdp(m, k, c)
        assert fdp_rejects(np.array([mu]), m, k, c, confidence=0.95)[0]
        assert not fdp_rejects(np.array([mu + 1e-5]), m, k, c, confidence=0.95)[0]
        # the paper's point: the Gaussian curve gives a higher epsilon from the same guesses
        assert epsilon_of_gaussian(mu, 1e-5) > epsilon_one_run(m, k, c, delta=1e-5)
    assert mu_one_run_fdp(100, 20, 10) == 0.0  # half right is no evidence at all


def test_one_run_bounds_take_the_best_of_the_grid_at_a_corrected_level():
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    scores = rng.standard_normal(400) + 4.0 * included
    bounds = one_run_bounds(scores, included, delta=1e-5)
    assert bounds.canaries == 400 and 0 < bounds.correct <= bounds.guesses
    # the best grid point, at the confidence split over the six grid points
    assert bounds.epsilon == pytest.approx(
        epsilon_one_run(400, bounds.guesses, bounds.correct, delta=1e-5, confidence=1 - 0.05 / 6))
    assert bounds.epsilon < epsilon_one_run(400, bounds.guesses, bounds.correct, delta=1e-5)
    assert bounds.mu_fdp > 0
    # the grid: at most six distinct even counts, 2 to m; fewer where fractions round alike
    assert guess_grid(400) == [8, 20, 40, 80, 200, 400]
    assert guess_grid(103) == [2, 6, 10, 20, 52, 102] and guess_grid(10) == [2, 4, 10] and guess_grid(1) == []


# --- Clopper-Pearson ceiling, all bounds on an attack, planning --------------------------------

def test_clopper_pearson_ceiling_of_a_thousand_pairs_each_way():
    # The figure, 5.6 for 1,000 members and 1,000 non-members and a perfect attack, is
    # the closed form with one-sided 97.5% ends: TPR >= 0.025^(1/1000), FPR <= 1 - 0.025^(1/1000).
    low = 0.025 ** (1 / 1000)
    assert math.log(low / (1 - low)) == pytest.approx(5.60, abs=0.01)
    # Ours takes each end from a two-sided interval at 97.5% (tails of 1.25%): a little lower.
    low = 0.0125 ** (1 / 1000)
    assert epsilon_from_counts(1000, 1000, 0, 1000) == pytest.approx(math.log(low / (1 - low)), rel=1e-9)
    assert epsilon_from_counts(1000, 1000, 0, 1000) == pytest.approx(5.43, abs=0.01)


def test_ceilings_rise_with_the_trials_and_order_as_expected():
    rows = [ceilings(n, delta=1e-5) for n in (100, 1000, 10_000)]
    for low, high in zip(rows, rows[1:]):
        assert high.clopper_pearson > low.clopper_pearson and high.one_run > low.one_run
        assert high.gaussian > low.gaussian and high.one_run_fdp > low.one_run_fdp
    assert rows[1].clopper_pearson == pytest.approx(epsilon_from_counts(500, 500, 0, 500, delta=1e-5))
    assert rows[1].one_run == pytest.approx(epsilon_one_run(1000, 1000, 1000, delta=1e-5))
    table = ceiling_table((100, 1000), delta=1e-5)
    assert "| 1,000 |" in table and "one-run-fdp" in table
    with pytest.raises(ValueError, match="delta"):
        ceiling_table((100,), delta=0.0)


def test_every_attack_result_carries_every_bound_and_reads_back():
    rng = np.random.default_rng(5)
    members = rng.random((16, 64)) < 0.5
    scores = rng.standard_normal((16, 64)) + 2.5 * members
    metrics = evaluate(scores, members, resamples=0, delta=1e-5)
    bounds = metrics.bounds
    assert bounds.clopper_pearson == metrics.epsilon_lower_bound > 0
    assert bounds.gaussian > 0 and bounds.gaussian_split is not None and bounds.one_run_canaries == 64
    assert set(bounds.by_label()) == {"clopper-pearson", "gaussian", "gaussian-split", "one-run", "one-run-fdp"}
    assert AttackMetrics.from_dict(metrics.to_dict()) == metrics
    # at delta 0 the Gaussian bounds keep their mu and state no epsilon
    at_zero = epsilon_bounds(scores, members, roc_curve(scores, members), delta=0.0, confidence=0.95)
    assert at_zero.gaussian is None and at_zero.gaussian_mu == pytest.approx(bounds.gaussian_mu)


# --- soundness by simulation -------------------------------------------------------------------

def test_mu_of_epsilon_inverts_epsilon_of_gaussian():
    for eps in (1.0, 4.0):
        assert epsilon_of_gaussian(mu_of_epsilon(eps, 1e-5), 1e-5) == pytest.approx(eps, rel=1e-8)


def test_no_bound_exceeds_the_true_epsilon_more_often_than_its_alpha():
    # A sanity check against gross inflation (the exact definitions are pinned by the reference
    # computations above): 200 repetitions, in which a sound bound violates in at most 5% in
    # expectation, so more than binom.isf(1e-3, 200, 0.05) = 21 would be a one-in-a-thousand event.
    allowed = int(binom.isf(1e-3, 200, 0.05))
    rows = simulate_bounds(4.0, repetitions=200, pairs=200, canaries=200, seed=1)
    assert len(rows) == 5 and "one-run-fdp" in soundness_table(rows)
    for row in rows:
        assert row.violations <= allowed, row
    assert max(row.median_fraction for row in rows) > 0.2  # and they say something


# --- the command and the report ----------------------------------------------------------------

def test_audit_plan_prints_the_ceilings_and_refuses_bad_input_in_one_line(capsys):
    from truthserum import cli

    assert cli.main(["audit-plan", "--trials", "100,1000"]) == 0
    out = capsys.readouterr().out
    assert f"| 1,000 | {ceilings(1000, delta=1e-5).clopper_pearson:.2f} |" in out
    for argv, message in [(["--trials", "10,x"], "--trials must be whole numbers"),
                          (["--trials", "1"], "between 2 and"), (["--delta", "0"], "--delta must be in (0, 1)"),
                          (["--confidence", "1.5"], "--confidence must be in")]:
        assert cli.main(["audit-plan", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def _condition(bounds: dict | None, privacy: dict | None) -> dict:
    attack = {"epsilon_bounds": bounds} if bounds else {}
    return {"attacks": {"lira-online": attack}, "privacy": privacy}


def test_the_audit_block_sets_every_bound_beside_the_accountant():
    from truthserum.report.audit import audit_lines, bounds_row
    from truthserum.report.blocks import render_text

    def block_lines(conditions):  # the block as the terminal prints it
        return render_text(audit_lines(conditions)).split("\n")

    rng = np.random.default_rng(5)
    members = rng.random((8, 40)) < 0.5
    scores = rng.standard_normal((8, 40)) + 3.0 * members
    bounds = evaluate(scores, members, resamples=0, delta=1e-5).bounds.to_dict()
    privacy = {"epsilon": 4.0, "delta": 1e-5, "accountant": "prv"}
    lines = block_lines({"clean": _condition(bounds, privacy), "poisoned": _condition(bounds, privacy)})
    text = "\n".join(lines)
    largest = max(v for v in (bounds[k] for k in ("clopper_pearson", "gaussian", "gaussian_split",
                                                    "one_run", "one_run_fdp")) if v is not None)
    assert "beside the accountant's epsilon" in text and "clean lira-online" in text and "poisoned lira-online" in text
    assert lines[3].rstrip().endswith("4.00")  # the first row, its accountant column
    assert largest > 1.0
    # each condition is judged against its own accountant
    lines = block_lines({"clean": _condition(bounds, privacy | {"epsilon": 1e3}),
                         "poisoned": _condition(bounds, privacy | {"epsilon": 1.0})})
    exceeding = [line for line in lines if "EXCEEDS the accountant's 1.00" in line]
    assert exceeding and all("poisoned" in line for line in exceeding)
    assert not any("largest bound" in line for line in lines)
    below = block_lines({"clean": _condition(bounds, privacy | {"epsilon": 1e3})})
    assert f"largest bound {largest:.2f}" in below[-1]
    assert "below the accountant's 1000.00: no evidence against the accounting" in below[-1]
    # no DP-SGD, or results older than the bounds: no block; the compact row needs the bounds
    assert audit_lines({"clean": _condition(bounds, None)}) == []
    assert audit_lines({"clean": _condition(None, privacy)}) == []
    assert bounds_row({}) is None and bounds_row({"epsilon_bounds": bounds})[1].count(" / ") == 3
