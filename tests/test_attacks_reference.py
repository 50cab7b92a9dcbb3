"""`truthserum attack` against a deliberately plain, loop-based reading of the definitions.

The reference below follows the issue's wording line by line, in Python scalars and mpmath
(arbitrary precision), sharing no code with the package.
"""

import math
import statistics

import mpmath
import numpy as np
import pytest

from truthserum.cli import main

SCALE_FLOOR = 1e-6  # documented in docs/attacks.md
mpmath.mp.dps = 50


def plain_phi(z, y):
    """log p_y - log sum_{c != y} p_c, with exact arithmetic."""
    total = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in z)
    p_true = mpmath.exp(mpmath.mpf(float(z[y]))) / total
    p_rest = mpmath.fsum(mpmath.exp(mpmath.mpf(float(z[c]))) for c in range(len(z)) if c != y) / total
    return float(mpmath.log(p_true) - mpmath.log(p_rest))


def all_but_one(keep):
    """The default shadows (docs/attacks.md): every model but m; on a balanced design (every
    point in the same number of models) less the model of the other group (the one m is not
    in) that comes last in cyclic order after m."""
    M, N = keep.shape
    balanced = len({sum(bool(keep[k, j]) for k in range(M)) for j in range(N)}) == 1

    def shadows(m, j):
        others = [k for k in range(M) if k != m]
        other_group = [k for k in others if bool(keep[k, j]) != bool(keep[m, j])]
        if balanced and other_group:
            others.remove(max(other_group, key=lambda k: (k - m) % M))
        return others

    return shadows


def plain_log_normal(x, mu, s):
    return -0.5 * ((x - mu) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def plain_log_cdf(z):
    return float(mpmath.log(mpmath.ncdf(mpmath.mpf(z))))


def reference_scores(logits, labels, keep, targets, attack, shadows=None):
    """``shadows(m, j)``: the shadow models of target model m for point j (default: all others)."""
    M, N, A, C = logits.shape
    if shadows is None:
        shadows = all_but_one(keep)
    phi = {}
    for k in range(M):
        for j in targets:
            for a in range(A):
                phi[k, j, a] = plain_phi(logits[k, j, a], labels[j])
    fixed = attack.endswith("-fixed")

    def group(m, j, a, want_in):
        return [phi[k, j, a] for k in shadows(m, j) if bool(keep[k, j]) == want_in]

    scores = np.zeros((M, len(targets)))
    for m in range(M):
        params = {}
        for want_in in (True, False):
            for a in range(A):
                locations = {j: statistics.median(group(m, j, a, want_in)) for j in targets}
                if fixed:
                    deviations = [
                        (value - locations[j]) ** 2 for j in targets for value in group(m, j, a, want_in)
                    ]
                    shared = math.sqrt(sum(deviations) / len(deviations))
                for j in targets:
                    spread = shared if fixed else statistics.pstdev(group(m, j, a, want_in))
                    params[want_in, j, a] = (locations[j], max(spread, SCALE_FLOOR))
        for t, j in enumerate(targets):
            per_query = []
            for a in range(A):
                x = phi[m, j, a]
                mu_in, s_in = params[True, j, a]
                mu_out, s_out = params[False, j, a]
                if attack.startswith("lira-online"):
                    per_query.append(plain_log_normal(x, mu_in, s_in) - plain_log_normal(x, mu_out, s_out))
                elif attack.startswith("lira-offline"):
                    per_query.append(plain_log_cdf((x - mu_out) / s_out))
                else:
                    per_query.append(x)
            scores[m, t] = sum(per_query) / A
    return scores


def random_signals(seed, *, num_models=6, num_points=12, views=2, classes=4, saturate=True):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(num_models, num_points, views, classes))
    if saturate:
        # a few saturated softmaxes: p_y = 1 or 0 in floating point
        logits[0, :3, :, :] *= 200
        logits[1, 2, 0, :] = [900.0, -900.0, 0.0, 5.0][:classes]
        logits[2, 4, :, :] = -700.0
        logits[3, 5, -1, :] = 0.0
    labels = rng.integers(0, classes, size=num_points)
    keep = rng.random((num_models, num_points)).argsort(axis=0) < num_models // 2
    return logits.astype(np.float32), labels, keep


ATTACKS = ["lira-online", "lira-offline", "lira-online-fixed", "lira-offline-fixed", "global-threshold"]
# RMIA and label-only: test_attacks_reference_rmia.py


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_cli_attack_matches_plain_reference(tmp_path, attack, seed):
    logits, labels, keep = random_signals(seed)
    targets = np.array([0, 1, 2, 4, 5, 7, 9])
    signals = tmp_path / "signals.npz"
    np.savez(signals, logits=logits, labels=labels, keep=keep, targets=targets)
    out = tmp_path / "scores.npz"
    assert main(["attack", "--signals", str(signals), "--attack", attack, "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as result:
        scores, members = result["scores"], result["members"]
    expected = reference_scores(logits.astype(np.float64), labels, keep, targets, attack)
    assert scores.shape == (6, len(targets))
    np.testing.assert_array_equal(members, keep[:, targets])
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("attack", ["lira-online-fixed", "lira-offline"])
def test_cli_attack_three_dimensional_logits_and_default_targets(tmp_path, attack):
    """(M, N, C) logits mean one query; without `targets` every point is a target; keep
    need not be balanced as long as every target has IN and OUT shadows."""
    logits, labels, keep = random_signals(5, num_models=8, num_points=9, views=1, classes=3)
    keep[0, :] = True  # unbalanced columns
    signals = tmp_path / "signals.npz"
    np.savez(signals, logits=logits[:, :, 0, :], labels=labels, keep=keep)
    out = tmp_path / "scores.npz"
    assert main(["attack", "--signals", str(signals), "--attack", attack, "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as result:
        scores = result["scores"]
    expected = reference_scores(logits.astype(np.float64), labels, keep, list(range(9)), attack)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
