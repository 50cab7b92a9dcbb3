import numpy as np
import pytest

from truthserum.design import make_design, make_keep_matrix
from truthserum.errors import ConfigError, DataError
from truthserum.poison.label_flip import flip_labels, make_label_flip_poisons


@pytest.mark.parametrize("num_models", [4, 16, 64])
def test_every_point_is_a_member_of_exactly_half_the_models(num_models):
    keep = make_keep_matrix(num_models=num_models, num_points=1000, rng=np.random.default_rng(0))
    assert keep.dtype == np.bool_ and keep.shape == (num_models, 1000)
    assert (keep.sum(axis=0) == num_models // 2).all()
    # rows are random, not a fixed pattern: each model holds about half the points
    assert np.abs(keep.mean(axis=1) - 0.5).max() < 0.1
    assert len({row.tobytes() for row in keep}) == num_models


def test_keep_matrix_is_seeded():
    first = make_keep_matrix(num_models=8, num_points=50, rng=np.random.default_rng(3))
    again = make_keep_matrix(num_models=8, num_points=50, rng=np.random.default_rng(3))
    other = make_keep_matrix(num_models=8, num_points=50, rng=np.random.default_rng(4))
    assert (first == again).all() and (first != other).any()


@pytest.mark.parametrize("num_models", [2, 5])
def test_odd_or_too_few_models_are_refused(num_models):
    with pytest.raises(ConfigError, match="even and at least 4"):
        make_keep_matrix(num_models=num_models, num_points=10, rng=np.random.default_rng(0))


def test_targets_are_distinct_pool_points():
    design = make_design(num_models=4, num_points=100, num_targets=30, rng=np.random.default_rng(0))
    assert design.targets.shape == (30,)
    assert np.unique(design.targets).size == 30
    assert design.targets.min() >= 0 and design.targets.max() < 100


def test_pool_too_small_for_targets_or_models():
    with pytest.raises(DataError, match="too few for 11 targets"):
        make_design(num_models=4, num_points=10, num_targets=11, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="too few for 64 models"):
        make_design(num_models=64, num_points=1, num_targets=1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_poison_labels_never_equal_the_true_label_and_cover_all_wrong_labels(num_classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, size=20_000)
    flipped = flip_labels(labels=labels, num_classes=num_classes, rng=rng)
    assert (flipped != labels).all()
    assert flipped.min() >= 0 and flipped.max() < num_classes
    shifts = np.bincount((flipped - labels) % num_classes, minlength=num_classes)
    assert shifts[0] == 0
    expected = labels.size / (num_classes - 1)
    assert np.abs(shifts[1:] - expected).max() < 0.05 * expected  # uniform over 1..C-1


def test_poisons_are_replicas_of_their_targets_with_one_wrong_label_each():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 5, size=50)
    targets = np.array([3, 10, 42])
    poisons = make_label_flip_poisons(x=x, y=y, targets=targets, replicas=4, num_classes=5, rng=rng)
    assert poisons.total == 12 and poisons.x.shape == (12, 1, 4, 4)
    for t, target in enumerate(targets):
        rows = poisons.source == target
        assert rows.sum() == 4
        assert (poisons.x[rows] == x[target]).all()
        assert (poisons.y[rows] == poisons.target_labels[t]).all()
        assert poisons.target_labels[t] != y[target]
    empty = make_label_flip_poisons(x=x, y=y, targets=targets, replicas=0, num_classes=5, rng=rng)
    assert empty.total == 0 and empty.x.shape == (0, 1, 4, 4)
