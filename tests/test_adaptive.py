"""Adaptive poisoning (poison.strategy: adaptive): the calibration plan, the separations, the
allocation under a total budget, and a run whose calibration never reads the models under attack."""

import itertools
import shutil

import numpy as np
import pytest

from conftest import TINY_CONFIG, run_main
from truthserum.config import parse_config
from truthserum.config.defense import AdaptiveGoal
from truthserum.errors import ConfigError, RunDirError
from truthserum.poison.adaptive import allocate_budgets, calibration_plan, separation, true_label_statistics
from truthserum.poison.label_flip import replicate_poisons


def _quiet(_message):
    pass


ADAPTIVE = {"kind": "adaptive", "budgets": [0, 1, 2, 4], "calibration_models": 8}
ADAPTIVE_CONFIG = {**TINY_CONFIG, "design": {"num_models": 6, "num_targets": 6},
                   "poison": {"replicas": 2, "strategy": ADAPTIVE}}


def test_the_calibration_plan_balances_budgets_and_membership():
    plan = calibration_plan(num_models=13, num_targets=7, num_budgets=3, rng=np.random.default_rng(0))
    assert np.array_equal(plan.budget_index[:, 0], np.arange(13) % 3)  # cyclic: (model + target) mod B
    assert np.array_equal(plan.budget_index[:, 1], (np.arange(13) + 1) % 3)
    for target, budget in itertools.product(range(7), range(3)):
        given = plan.budget_index[:, target] == budget
        inside = int((plan.member[:, target] & given).sum())
        assert inside == given.sum() // 2 and inside >= 1 and given.sum() - inside >= 1
    assert np.ptp(plan.budget_index.sum(axis=1)) <= 3  # every model carries about the same poisons
    with pytest.raises(ValueError, match="too few"):
        calibration_plan(num_models=5, num_targets=2, num_budgets=3, rng=np.random.default_rng(0))


def test_the_replica_mask_takes_the_first_replicas_of_each_target():
    plan = calibration_plan(num_models=4, num_targets=2, num_budgets=2, rng=np.random.default_rng(1))
    budgets = np.array([0, 3])
    mask = plan.replica_mask(budgets)
    poisons = replicate_poisons(x=np.arange(10.0)[:, None], targets=np.array([4, 7]), target_labels=np.array([1, 2]),
                                replicas=3)
    for model in range(4):
        for position, target in enumerate((4, 7)):
            rows = mask[model] & (poisons.source == target)
            assert rows.sum() == budgets[plan.budget_index[model, position]]
            assert rows[poisons.source == target][: rows.sum()].all()  # the first ones


def test_replicas_per_target():
    poisons = replicate_poisons(x=np.arange(6.0)[:, None], targets=np.array([1, 3, 5]), target_labels=np.array([0, 2, 4]),
                                replicas=np.array([2, 0, 1]))
    assert poisons.source.tolist() == [1, 1, 5] and poisons.y.tolist() == [0, 0, 4] and poisons.replicas == 2


def _logits_for(right: np.ndarray, labels: np.ndarray, classes: int = 3, margin: float = 4.0) -> np.ndarray:
    """(M, T, 1, C) logits whose top class is the true label where ``right``, the next one elsewhere."""
    models, targets = right.shape
    logits = np.zeros((models, targets, 1, classes))
    top = np.where(right, labels[None, :], (labels[None, :] + 1) % classes)
    np.put_along_axis(logits, top[:, :, None, None], margin, axis=3)
    return logits


def test_label_only_separation_is_the_share_right_in_minus_out():
    plan = calibration_plan(num_models=8, num_targets=2, num_budgets=2, rng=np.random.default_rng(2))
    labels = np.array([0, 2])
    # budget 0: everyone right; budget 1: IN right, OUT wrong on target 0, everyone wrong on target 1
    right = np.where(plan.budget_index == 0, True, plan.member)
    right[:, 1] &= plan.budget_index[:, 1] == 0
    gains = separation(_logits_for(right, labels), labels, plan, 2, AdaptiveGoal.LABEL_ONLY)
    assert gains[0].tolist() == [0.0, 1.0] and gains[1].tolist() == [0.0, 0.0]


def test_lira_separation_grows_with_the_gap_between_in_and_out_confidence():
    plan = calibration_plan(num_models=8, num_targets=1, num_budgets=2, rng=np.random.default_rng(3))
    labels = np.array([1])
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(8, 1, 1, 3))
    logits[:, :, :, 1] += np.where(plan.member, 3.0, 0.0)[:, :, None] * (plan.budget_index == 1)[:, :, None]
    gains = separation(logits, labels, plan, 2, AdaptiveGoal.LIRA)
    assert gains[0, 1] > gains[0, 0] + 1
    _, phi = true_label_statistics(logits, labels)
    p = np.exp(logits[..., 1]) / np.exp(logits).sum(axis=3)
    assert np.allclose(phi, np.log(p / (1 - p)).mean(axis=2))
    confident = np.zeros((1, 1, 1, 3))
    confident[..., 1] = 50.0  # softmax saturates: phi is still the margin, 50 - log 2
    assert true_label_statistics(confident, labels)[1][0, 0] == pytest.approx(50 - np.log(2))


def test_allocation_fits_the_cap_and_is_optimal_for_the_total_it_spends():
    budgets = np.array([0, 1, 2, 4])
    rng = np.random.default_rng(5)
    for _ in range(40):
        gains = rng.random((4, 4))
        cap = int(rng.integers(0, 17))
        counts = allocate_budgets(gains, budgets, cap)
        assert counts.sum() <= cap and set(counts.tolist()) <= set(budgets.tolist())
        value = gains[np.arange(4), np.searchsorted(budgets, counts)].sum()
        best = max(gains[np.arange(4), list(choice)].sum() for choice in itertools.product(range(4), repeat=4)
                   if budgets[list(choice)].sum() <= counts.sum())
        assert value == pytest.approx(best)  # the relaxation's answer is the best at its own total


def test_allocation_without_a_binding_cap_takes_the_smallest_best_budget():
    gains = np.array([[0.0, 1.0, 1.0, 0.5], [0.2, 0.1, 0.0, 0.0]])
    assert allocate_budgets(gains, np.array([0, 1, 2, 4]), cap=100).tolist() == [1, 0]
    assert allocate_budgets(gains, np.array([0, 1, 2, 4]), cap=0).tolist() == [0, 0]


@pytest.mark.parametrize("poison, defense, message", [
    ({"strategy": {**ADAPTIVE, "budgets": [1, 2]}}, None, "budgets must increase and start at 0"),
    ({"strategy": {**ADAPTIVE, "calibration_models": 7}}, None, "at least 2 per candidate budget"),
    ({"replicas": 0, "strategy": ADAPTIVE}, None, "needs a total budget"),
    ({"strategy": ADAPTIVE}, "dedup-exact", "adaptive runs without a defense"),
    ({"strategy": {**ADAPTIVE, "max_poisons": 0}}, None, "max_poisons"),
    ({"strategy": {**ADAPTIVE, "max_poisons": 10**22}}, None, "max_poisons"),
    ({"strategy": {"kind": ["adaptive"]}}, None, "strategy"),
])
def test_adaptive_configs_are_checked(poison, defense, message):
    raw = {**ADAPTIVE_CONFIG, "poison": {"replicas": 2, **poison}}
    if defense:
        raw["defense"] = defense
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_the_defense_matrix_refuses_adaptive_in_its_columns():
    with pytest.raises(ConfigError, match="defense matrix compares fixed budgets"):
        parse_config({"task": "defenses", "defenses": ["dedup-exact"], "strategies": ["exact", "adaptive"]})


class RecordingBackend:
    """The in-process backend, recording which condition each shard trained for; with
    ``scramble`` the models under attack answer random logits, so anything read from them
    changes."""

    def __init__(self, *, scramble: bool = False):
        from truthserum.train.executors import LocalBackend

        self.inner, self.scramble, self.trained, self.jobs = LocalBackend(), scramble, [], {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train(self, config, job, shards, device, *, progress):
        self.jobs.setdefault(job.condition, (config, job))
        for shard in self.inner.train(config, job, shards, device, progress=progress):
            self.trained.append(job.condition)
            if self.scramble and job.condition != "calibration":
                shard = {**shard, "logits": np.random.default_rng(len(self.trained)).normal(
                    size=shard["logits"].shape).astype(shard["logits"].dtype)}
            yield shard


def _adaptive_run(out, backend):
    from truthserum.tasks.membership import run_experiment

    return run_experiment(parse_config(ADAPTIVE_CONFIG), out, progress=False, log=_quiet, backend=backend).to_json()


def test_the_calibration_never_reads_the_models_under_attack(tmp_path):
    from truthserum.train.shard import model_seed

    honest = RecordingBackend()
    results = _adaptive_run(tmp_path / "run", honest)
    # trained first, as models of their own: no seed and no training set of a model under attack
    calibrated = honest.trained.count("calibration")
    assert calibrated == 4 and honest.trained[:calibrated] == ["calibration"] * calibrated  # 8 models, 2 a shard
    (config, job), (attacked_config, attacked) = honest.jobs["calibration"], honest.jobs["adaptive"]
    assert {model_seed(config, m) for m in range(8)}.isdisjoint({model_seed(attacked_config, m) for m in range(6)})
    assert not any(np.array_equal(job.keep[c], attacked.keep[m]) for c in range(8) for m in range(6))
    chosen = dict(np.load(tmp_path / "run" / "adaptive-budgets.npz"))
    # choose again with every model under attack on disk answering noise: the counts do not move
    for path in (tmp_path / "run" / "shards" / "clean").glob("*.npz"):
        shard = dict(np.load(path))
        shard["logits"] = np.random.default_rng(0).normal(size=shard["logits"].shape).astype(np.float32)
        np.savez(path, **shard)
    for lost in ("adaptive-budgets.npz", "results.json"):
        (tmp_path / "run" / lost).unlink()
    shutil.rmtree(tmp_path / "run" / "shards" / "adaptive")
    shutil.rmtree(tmp_path / "run" / "shards" / "calibration")
    again = RecordingBackend(scramble=True)
    _adaptive_run(tmp_path / "run", again)
    chosen_again = np.load(tmp_path / "run" / "adaptive-budgets.npz")
    assert again.trained[0] == "calibration" and "clean" not in again.trained  # the scrambled clean models stay
    assert np.array_equal(chosen["counts"], chosen_again["counts"])
    assert np.array_equal(chosen["separation"], chosen_again["separation"])
    # and they are the poisons the adaptive models trained on, within the cap
    adaptive = results["poison"]["adaptive"]
    assert adaptive["total"] == int(chosen["counts"].sum()) <= adaptive["cap"] == 2 * 6
    assert results["conditions"]["adaptive"]["replicas"] == pytest.approx(adaptive["total"] / 6)
    assert sum(adaptive["targets_per_budget"].values()) == 6 and list(results["conditions"]) == ["clean", "adaptive"]


def test_calibration_models_are_not_models_under_attack():
    from truthserum.tasks.adaptive import calibration_config, calibration_job
    from truthserum.tasks.membership import MembershipRunner
    from truthserum.tasks.stages import draw_design
    from truthserum.train.shard import model_seed

    config = parse_config(ADAPTIVE_CONFIG)
    pool = MembershipRunner().prepare(config, device="cpu", backend=None)
    design = draw_design(config, pool)
    calibration = calibration_config(config, config.poison.strategy)
    job, plan = calibration_job(calibration, config.poison.strategy, pool, design.targets, pool.y[design.targets])
    assert job.keep.shape == (8, pool.num_points) and not any(np.array_equal(job.keep[c], design.keep[m])
                                                               for c in range(8) for m in range(6))
    assert {model_seed(calibration, c) for c in range(8)}.isdisjoint({model_seed(config, m) for m in range(6)})
    assert np.array_equal(job.keep[:, design.targets], plan.member)


def test_a_resumed_adaptive_run_trains_and_chooses_nothing_again(tmp_path):
    first = RecordingBackend()
    _adaptive_run(tmp_path / "run", first)
    again = RecordingBackend()
    _adaptive_run(tmp_path / "run", again)
    assert first.trained and again.trained == []
    # lost counts are not chosen again under models trained on them
    (tmp_path / "run" / "adaptive-budgets.npz").write_bytes(b"damaged")
    with pytest.raises(RunDirError, match="shards of 'adaptive' were trained on the counts it held"):
        _adaptive_run(tmp_path / "run", RecordingBackend())


def test_the_replica_sweep_shows_the_adaptive_column(tmp_path, capsys):
    import yaml

    path = tmp_path / "adaptive.yaml"
    path.write_text(yaml.safe_dump(ADAPTIVE_CONFIG))
    done = run_main(capsys, "sweep", str(path), "--replicas", "0,2", "--out", str(tmp_path / "sweep"))
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.split()[:2] == ["0", "2"])
    assert header.split() == ["0", "2", "adaptive"]
    import json

    summary = json.loads((tmp_path / "sweep" / "sweep-replicas.json").read_text())
    assert [point["label"] for point in summary["points"]] == ["0", "2", "adaptive"]
    assert [point.get("adaptive", False) for point in summary["points"]] == [False, False, True]
    assert "adaptive (label-only):" in (tmp_path / "sweep" / "report.html").read_text()
