"""Untargeted poisoning: the pool split, the adversary's strategies and precision at recall."""

import numpy as np
import pytest

from truthserum.metrics.precision import precision_at_recall
from truthserum.poison.adversary import AdversaryStrategy, adversary_share, split_pool


def test_split_is_a_seeded_partition():
    split = split_pool(num_points=101, adversary_fraction=0.3, rng=np.random.default_rng(4))
    assert split.adversary.size == 30 and split.victims.size == 71
    assert np.array_equal(np.sort(np.r_[split.victims, split.adversary]), np.arange(101))
    again = split_pool(num_points=101, adversary_fraction=0.3, rng=np.random.default_rng(4))
    assert np.array_equal(again.victims, split.victims)
    with pytest.raises(ValueError, match="one side empty"):
        split_pool(num_points=3, adversary_fraction=0.1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_pool(num_points=10, adversary_fraction=1.0, rng=np.random.default_rng(0))


def _own(n=11, classes=4):
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    y = np.arange(n) % classes
    return x, y


def test_clean_share_is_the_adversary_data_unchanged():
    x, y = _own()
    share_x, share_y = adversary_share(x=x, y=y, num_classes=4, strategy=AdversaryStrategy.CLEAN,
                                       rng=np.random.default_rng(0))
    assert np.array_equal(share_x, x) and np.array_equal(share_y, y)


def test_dirty_label_gets_every_label_wrong():
    x, y = _own()
    share_x, share_y = adversary_share(x=x, y=y, num_classes=4, strategy=AdversaryStrategy.DIRTY_LABEL,
                                       rng=np.random.default_rng(0))
    assert np.array_equal(share_x, x)
    assert (share_y != y).all() and share_y.min() >= 0 and share_y.max() < 4


@pytest.mark.parametrize("n", [10, 11])
def test_paired_flip_contributes_true_and_wrong_copies_at_equal_share(n):
    x, y = _own(n)
    share_x, share_y = adversary_share(x=x, y=y, num_classes=4, strategy=AdversaryStrategy.PAIRED_FLIP,
                                       rng=np.random.default_rng(1))
    assert share_y.size == n  # the same number of rows as the other strategies
    point = share_x[:, 0].astype(int)  # which adversary point each row copies
    true_label = y[point]
    wrong = share_y != true_label
    assert wrong.sum() == (n + 1) // 2 and (~wrong).sum() == n // 2
    # every point with a true copy also has a wrong one; the wrong copies are distinct points
    assert set(point[~wrong]) <= set(point[wrong])
    assert len(set(point[wrong])) == wrong.sum()


def test_precision_at_recall_on_a_hand_counted_ranking():
    # descending scores 8..1, members at ranks 1, 2, 4, 7
    scores = np.array([[8.0, 7, 6, 5, 4, 3, 2, 1]])
    members = np.array([[True, True, False, True, False, False, True, False]])
    found = precision_at_recall(scores, members, levels=(0.25, 0.5, 0.75, 1.0), resamples=0)
    np.testing.assert_allclose(found["precision"], [1.0, 1.0, 3 / 4, 4 / 7])
    assert found["precision_ci"] is None and found["member_share"] == 0.5


def test_precision_takes_tied_scores_together():
    # the second member ties with a non-member: both are called together
    scores = np.array([[3.0, 2.0, 2.0, 1.0]])
    members = np.array([[True, True, False, False]])
    found = precision_at_recall(scores, members, levels=(0.5, 1.0), resamples=0)
    np.testing.assert_allclose(found["precision"], [1.0, 2 / 3])


def test_precision_interval_is_seeded_and_holds_the_estimate():
    rng = np.random.default_rng(0)
    members = rng.random((8, 200)) < 0.5
    scores = rng.normal(size=members.shape) + 1.5 * members
    first = precision_at_recall(scores, members, resamples=300, rng=7)
    second = precision_at_recall(scores, members, resamples=300, rng=7)
    assert first == second
    for value, (low, high) in zip(first["precision"], first["precision_ci"]):
        assert low <= value <= high
        assert high - low < 0.3


def test_false_positive_ratio_at_equal_recall_is_the_odds_ratio():
    from truthserum.metrics.precision import false_positive_ratio

    # 100 members called by both; 0.6 precision: 66.7 false positives; 0.95: 5.26 -> 12.7x
    assert false_positive_ratio(0.6, 0.95) == pytest.approx((100 / 0.6 - 100) / (100 / 0.95 - 100))
    assert false_positive_ratio(0.8, 0.8) == pytest.approx(1.0)
    assert false_positive_ratio(0.9, 0.6) < 1
    assert false_positive_ratio(0.9, 1.0) == float("inf")
