"""Defenses and the poisons that try to get past them: each filter on hand-made data, the
evasive strategies' geometry, refusals before training, and the defense matrix end to end."""

import json

import numpy as np
import pytest

from truthserum.config import parse_config
from truthserum.config.defense import ConflictingLabels, DedupExact, DpSgd, LossFilter, NearDuplicates
from truthserum.defense import filters
from truthserum.defense.stage import filter_masks, filtered_job, private_job, survivors
from truthserum.errors import ConfigError
from truthserum.poison.evasive import blended_poisons, perturbed_poisons
from truthserum.poison.label_flip import replicate_poisons
from truthserum.tasks import run_task
from truthserum.train.shard import TrainingJob, shard_training_set


def _job(x, y, keep, extra_x, extra_y):
    return TrainingJob(condition="c", x=x, y=y, keep=keep, extra_x=extra_x, extra_y=extra_y, queries=x, num_classes=3)


def _pool(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32) * 10, rng.integers(0, 3, n)


def test_identical_groups_and_dedup_keep_the_first_copy():
    x = np.array([[0, 1], [2, 3], [0, 1], [0, 1], [5, 5]], dtype=np.float32)
    groups = filters.identical_groups(x)
    assert groups[0] == groups[2] == groups[3] and len(set(groups[[0, 1, 4]])) == 3
    kept = filters.dedup_exact(groups, np.array([3, 1, 0, 4, 2]))  # in this model's order: row 3 first
    assert kept.tolist() == [True, True, False, True, False]


def test_conflicting_labels_drop_every_copy_of_a_disputed_input():
    x = np.array([[0, 1], [0, 1], [2, 3], [2, 3], [7, 7]], dtype=np.float32)
    y = np.array([0, 1, 2, 2, 1])
    groups = filters.identical_groups(x)
    assert filters.conflicting_labels(groups, y, np.arange(5)).tolist() == [False, False, True, True, True]
    # a model holding one copy of the disputed input only: no conflict in its set
    assert filters.conflicting_labels(groups, y, np.array([1, 4])).tolist() == [True, True]


def test_near_duplicates_keep_one_per_neighbourhood_in_order():
    x = np.array([[0.0, 0], [0.5, 0], [10, 0], [10.4, 0], [20, 0], [0.9, 0]], dtype=np.float32)
    graph = filters.neighbour_graph(x, radius=0.6)
    kept = filters.near_duplicates(graph, np.arange(6))
    # 0 kept, 1 within 0.5 of it; 5 is 0.9 from 0 but 0.4 from 1, which was dropped: kept (greedy)
    assert kept.tolist() == [True, False, True, False, True, True]
    # the same graph serves a model without row 0: then row 1 is the first of its neighbourhood
    assert filters.near_duplicates(graph, np.array([1, 5, 2])).tolist() == [True, False, True]


def test_near_duplicates_match_the_pairwise_definition_on_random_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    rows = rng.permutation(300)[:200]
    kept = filters.near_duplicates(filters.neighbour_graph(x, 1.0), rows)
    distances = np.linalg.norm(x[rows][:, None] - x[rows][None], axis=2)
    for at in range(len(rows)):  # the greedy rule, by brute force
        earlier_kept = np.nonzero(kept[:at])[0]
        assert kept[at] == (not (distances[at, earlier_kept] <= 1.0).any())
    assert 0 < kept.sum() < len(rows)


def test_highest_loss_drops_the_worst_fraction():
    kept = filters.highest_loss(np.array([0.1, 5.0, 0.2, 3.0, 0.0, 0.3, 0.4, 0.5, 0.6, 0.7]), 0.2)
    assert kept.tolist() == [True, False, True, False, True, True, True, True, True, True]


def test_exact_replicas_against_dedup_and_conflicting_labels():
    """A member target keeps its own label and loses its replicas to both filters; a
    non-member's replicas all agree, so conflicting-labels keeps them and dedup keeps one."""
    x, y = _pool()
    targets = np.array([2, 7])
    poisons = replicate_poisons(x=x, targets=targets, target_labels=(y[targets] + 1) % 3, replicas=4)
    keep = np.zeros((2, 12), dtype=bool)
    keep[0, :6] = True  # model 0: target 2 in, target 7 out
    keep[1, 6:] = True  # model 1: target 2 out, target 7 in
    job = _job(x, y, keep, poisons.x, poisons.y)
    dedup = filtered_job(job, filter_masks(DedupExact(), job), defense_name="dedup-exact")
    conflicting = filtered_job(job, filter_masks(ConflictingLabels(), job), defense_name="conflicting-labels")
    member = {0: poisons.source == 2, 1: poisons.source == 7}
    for model in (0, 1):
        assert not dedup.extra_keep[model, member[model]].any() and dedup.keep[model, targets].sum() == 1
        assert dedup.extra_keep[model, ~member[model]].sum() == 1  # one replica stands in for the absent target
        assert not conflicting.extra_keep[model, member[model]].any()
        assert conflicting.extra_keep[model, ~member[model]].all()
        assert conflicting.keep[model].sum() == job.keep[model].sum() - 1  # the member target itself is dropped
    report = survivors(job, conflicting, sources=poisons.source, targets=targets)
    assert report["poisons_surviving_target_member"] == 0 and report["poisons_surviving_target_nonmember"] == 1
    assert report["member_targets_kept"] == 0
    # the rows each model trains on follow the masks
    _, _, rows = shard_training_set(dedup, range(2))
    assert len(rows[0]) == 6 + 1


def test_a_filter_that_takes_most_of_the_data_is_refused():
    x, y = _pool(n=10)
    x[:] = 0  # every point identical
    keep = np.ones((2, 10), dtype=bool)
    job = _job(x, y, keep, x[:0], y[:0])
    with pytest.raises(ConfigError, match="would remove 90.0% of model 0's training set"):
        filtered_job(job, filter_masks(DedupExact(), job), defense_name="dedup-exact")
    with pytest.raises(ConfigError, match="near-duplicates would remove"):
        filtered_job(job, filter_masks(NearDuplicates(radius=1.0), job), defense_name="near-duplicates")


def test_loss_filter_needs_losses_and_drops_per_model():
    x, y = _pool(n=20)
    job = _job(x, y, np.ones((2, 20), dtype=bool), x[:0], y[:0])
    with pytest.raises(ValueError, match="first pass"):
        filter_masks(LossFilter(), job)
    losses = np.tile(np.arange(20.0), (2, 1))
    losses[1] = losses[1][::-1]
    masks = filter_masks(LossFilter(fraction=0.1), job, losses=losses)
    assert np.nonzero(~masks[0])[0].tolist() == [18, 19] and np.nonzero(~masks[1])[0].tolist() == [0, 1]


def test_private_job_uses_the_largest_set_for_the_sample_rate():
    x, y = _pool(n=40)
    keep = np.zeros((2, 40), dtype=bool)
    keep[0, :30] = True
    keep[1, :20] = True
    job = private_job(_job(x, y, keep, x[:0], y[:0]), DpSgd(), batch_size=10, epochs=2, noise_multiplier=1.5)
    assert job.private.sample_rate == pytest.approx(10 / 30) and job.private.noise_multiplier == 1.5


def test_perturbed_replicas_are_distinct_at_the_stated_norm():
    x, y = _pool()
    targets = np.array([1, 4])
    poisons = perturbed_poisons(x=x, targets=targets, target_labels=np.array([0, 2]), replicas=3, norm=0.5,
                                rng=np.random.default_rng(0))
    offsets = poisons.x - x[poisons.source]
    np.testing.assert_allclose(np.linalg.norm(offsets.reshape(6, -1), axis=1), 0.5, rtol=1e-5)
    assert len(np.unique(filters.identical_groups(np.concatenate([x, poisons.x])))) == 18  # no duplicate at all
    assert poisons.y.tolist() == [0, 0, 0, 2, 2, 2]


def test_blended_replicas_mix_the_target_with_distinct_points_of_the_wrong_label():
    x, y = _pool(n=60)
    targets = np.array([0, 1])
    labels = (y[targets] + 1) % 3
    poisons = blended_poisons(x=x, y=y, targets=targets, target_labels=labels, replicas=3, blend=0.25,
                              rng=np.random.default_rng(1))
    for at in range(6):
        partner = (poisons.x[at] - 0.75 * x[poisons.source[at]]) / 0.25
        match = np.nonzero(np.abs(x - partner).max(axis=1) < 1e-4)[0]
        assert len(match) == 1 and y[match[0]] == poisons.y[at] and match[0] not in targets
    assert len(np.unique(filters.identical_groups(poisons.x))) == 6


BASE = {
    "seed": 0, "data": {"source": "breast-cancer"}, "design": {"num_models": 8, "num_targets": 6},
    "poison": {"replicas": 4}, "model": {"architecture": "mlp", "hidden_sizes": [16]},
    "train": {"epochs": 12, "batch_size": 64, "learning_rate": 0.01, "shard_size": 8},
    "metrics": {"bootstrap": 10}, "attacks": ["lira-online", "global-threshold"],
}


@pytest.mark.parametrize("change, message", [
    ({"defenses": ["none"]}, "'none' is the baseline"),
    ({"defenses": [{"kind": "near-duplicates", "radius": -1}]}, "radius: Input should be greater than 0"),
    ({"defenses": [{"kind": "dp-sgd", "epsilon": 0}]}, "epsilon: Input should be greater than 0"),
    ({"defenses": [{"kind": "loss-filter", "fraction": 0.9}]}, "fraction: Input should be less than 0.5"),
    ({"defenses": ["dedup-exact", "dedup-exact"]}, "each defense kind at most once"),
    ({"defenses": ["sanitize"]}, "unknown defense 'sanitize'; one of: none, dedup-exact"),
    ({"defenses": ["dedup-exact"], "strategies": [{"kind": "perturbed"}]}, "norm: Field required"),
    ({"defenses": ["dedup-exact"], "poison": {"strategy": "blended"}}, "lists its poison strategies in strategies"),
    ({"defenses": ["dedup-exact"], "strategies": ["clean"]}, "'clean' is the baseline and always runs"),
    ({"defenses": [{"kind": "dp-sgd"}], "train": {**BASE["train"], "mixed_precision": True}}, "trains in float32"),
    ({"defenses": ["dedup-exact"], "poison": {"replicas": 0}}, "needs poison.replicas >= 1"),
])
def test_bad_defense_settings_are_one_line_errors(change, message):
    """Each refused while the config is read, before anything loads or trains."""
    with pytest.raises(ConfigError, match=message) as raised:
        parse_config({**BASE, "task": "defenses", **change}, source="cfg")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("task", ["membership", "defenses"])
def test_a_refused_filter_leaves_no_run_directory_behind(tmp_path, task):
    """The refusal comes before the run directory exists, so the corrected config can use it."""
    too_wide = {"kind": "near-duplicates", "radius": 1000}
    change = {"defense": too_wide} if task == "membership" else {"task": "defenses", "defenses": [too_wide]}
    with pytest.raises(ConfigError, match=r"near-duplicates would remove 99\.\d% of model 0's training set"):
        run_task(parse_config({**BASE, **change}, source="cfg"), tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_the_columns_default_to_exact_replicas():
    config = parse_config({**BASE, "task": "defenses", "defenses": ["dedup-exact"]}, source="cfg")
    assert [strategy.kind.value for strategy in config.strategies] == ["exact"]


def test_dp_sgd_on_a_model_it_cannot_train_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from torch import nn

    from truthserum.config.sections import ModelConfig

    def with_batchnorm(self, *, feature_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(30, 8), nn.BatchNorm1d(8), nn.Linear(8, num_classes))

    monkeypatch.setattr(ModelConfig, "build", with_batchnorm)
    config = parse_config({**BASE, "task": "defenses", "defenses": ["dp-sgd"]}, source="cfg")
    with pytest.raises(ConfigError, match="dp-sgd cannot train this model: 2 is a BatchNorm1d"):
        run_task(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_defense_matrix_end_to_end(tmp_path):
    config = parse_config({
        **BASE, "task": "defenses", "train": {**BASE["train"], "epochs": 4},
        "defenses": ["dedup-exact", "conflicting-labels", {"kind": "near-duplicates", "radius": 0.8},
                     {"kind": "loss-filter", "fraction": 0.05}, {"kind": "dp-sgd", "epsilon": 4}],
        "strategies": ["exact", {"kind": "perturbed", "norm": 0.3}, "blended"],
    }, source="cfg")
    results = run_task(config, tmp_path / "run", progress=False, log=lambda _: None)
    matrix = results.details["defense_matrix"]
    assert list(matrix["rows"]) == ["none", "dedup-exact", "conflicting-labels", "near-duplicates", "loss-filter", "dp-sgd"]
    assert list(matrix["columns"]) == ["clean", "exact", "perturbed", "blended"]
    cells = matrix["cells"]
    assert cells["none"]["exact"]["poisons_surviving"] == 1 and cells["none"]["clean"]["poisons_surviving"] is None
    # exact replicas: dedup keeps one per absent target (1 of 4 on half the pairs), conflicting-labels none of a member's
    assert cells["dedup-exact"]["exact"]["poisons_surviving"] == pytest.approx(0.125, abs=0.03)
    conflicting = results.conditions["conflicting-labels.exact"].measurements["survivors"]
    assert conflicting["poisons_surviving_target_member"] == 0
    # perturbed replicas pass both exact filters untouched: the same models as undefended
    assert cells["dedup-exact"]["perturbed"]["trained_as"] == "none.perturbed"
    # radius 0.8: no two standardised tumours are that close (the nearest pair is 1.0 apart), but
    # replicas perturbed by 0.3 are, to their target and to each other; blends (30% of another
    # tumour) mostly are not
    assert cells["near-duplicates"]["clean"]["trained_as"] == "none.clean"
    assert cells["near-duplicates"]["perturbed"]["poisons_surviving"] == pytest.approx(0.125, abs=0.03)
    assert cells["near-duplicates"]["blended"]["poisons_surviving"] >= 0.75
    privacy = results.conditions["dp-sgd.exact"].measurements["privacy"]
    assert privacy["epsilon"] == pytest.approx(4, abs=0.05) and privacy["group_size"] == 4
    assert privacy["group_epsilon"] > privacy["epsilon"]
    for row in matrix["rows"]:
        for cell in cells[row].values():
            assert 0 <= cell["tpr_at_1pct_fpr"] <= 1 and 0 <= cell["test_accuracy"] <= 1
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["defense_matrix"]["cells"]["dp-sgd"]["exact"]["epsilon"] == pytest.approx(privacy["epsilon"])
    assert (tmp_path / "run" / "defense-matrix.png").stat().st_size > 0
    text = results.summary()
    assert "TPR at 1% FPR" in text and "dp-sgd: the accountant's epsilon" in text


def test_a_membership_run_behind_a_loss_filter(tmp_path):
    """The membership task's defense section: each condition's first pass trains apart, the
    filtered models are attacked, and the run directory serves truthserum attack as usual."""
    from truthserum.attacks import load_signals

    config = parse_config({**BASE, "train": {**BASE["train"], "epochs": 4},
                           "defense": {"kind": "loss-filter", "fraction": 0.1},
                           "poison": {"replicas": 4, "strategy": "blended"}}, source="cfg")
    results = run_task(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert list(results.conditions) == ["clean", "poisoned"]
    shards = sorted(p.name for p in (tmp_path / "run" / "shards").iterdir())
    assert shards == ["clean", "clean-unfiltered", "poisoned", "poisoned-unfiltered"]
    poisoned = results.conditions["poisoned"].measurements
    assert poisoned["defense"] == "loss-filter" and poisoned["survivors"]["pool_points_kept"] < 1
    assert results.attack("poisoned", "lira-online").auc > 0
    with np.load(tmp_path / "run" / "poisons-poisoned.npz") as blends, np.load(tmp_path / "run" / "poisons.npz") as exact:
        assert blends["x"].shape == exact["x"].shape == (24, 30)  # the blends trained on, beside the exact replicas
        assert (blends["source"] == exact["source"]).all() and not np.allclose(blends["x"], exact["x"])
    signals = load_signals(tmp_path / "run" / "signals-poisoned.npz")
    assert signals.logits.shape[:2] == (8, 569)
    summary = results.summary()
    assert "poisons: 24 (6 targets x 4)" in summary and "defense: loss-filter" in summary
    assert "of the poisons survive" in summary and results.guidance is None  # no set-up advice behind a defense


@pytest.mark.parametrize("raw, message", [
    ({"task": "attribute", "data": {"source": "cps"}, "defense": "dp-sgd"},
     "task 'attribute' does not use defense: defense is for task 'membership'"),
    ({"task": "defenses", "defense": "dedup-exact"}, "task 'defenses' lists its rows in defenses"),
    ({"defenses": ["dedup-exact"]}, "task 'membership' does not use defenses"),
])
def test_a_defense_key_in_the_wrong_task_says_where_it_belongs(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, source="cfg")
