"""The user's own data and model: audit_membership with arrays, an nn.Module factory, a
scikit-learn classifier or a ModelTrainer; the two training paths agree; every bad input
is one clear error before anything is written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from truthserum import Dataset, SklearnTrainer, TrainConfig, audit_membership
from truthserum.config import parse_config
from truthserum.errors import ConfigError, DataError, RunDirError, TrainingError
from truthserum.train.ensemble import Ensemble
from truthserum.train.own import ModuleTrainer, TrainingPath, build_modules
from truthserum.train.shard import TrainingJob, model_seed, train_stacked_shard

TRAINER_QUICK = dict(num_models=4, num_targets=6, replicas=2, progress=False)  # a trainer trains itself
QUICK = TRAINER_QUICK | dict(train=TrainConfig(epochs=2, batch_size=64))


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    x, y = load_breast_cancer(return_X_y=True)
    return Dataset.from_arrays(x=StandardScaler().fit_transform(x), y=y)


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 2))


def normed_net() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def _job(data: Dataset, num_models: int) -> TrainingJob:
    keep = np.random.default_rng(0).random((num_models, data.num_points)) < 0.5
    return TrainingJob(condition="clean", x=data.x, y=data.y, keep=keep, extra_x=data.x[:3],
                       extra_y=(data.y[:3] + 1) % 2, queries=data.x, num_classes=2)


def test_a_stackable_module_trains_the_same_vectorized_and_one_by_one(cancer):
    config = parse_config({"train": {"epochs": 3, "batch_size": 50}})
    job, models = _job(cancer, 3), range(3)
    trainer = ModuleTrainer(small_net)
    stacked = trainer(config, job, models, torch.device("cpu"))
    assert trainer.path is TrainingPath.VECTORIZED
    modules = build_modules(small_net, [model_seed(config, m) for m in models])
    alone = trainer._one_by_one(config, job, models, modules, torch.device("cpu"), None, 0.0)
    np.testing.assert_allclose(alone["logits"], stacked["logits"], atol=2e-4)
    np.testing.assert_allclose(alone["loss"], stacked["loss"], rtol=1e-4)
    # and both differ from an untrained module: the comparison is not vacuous
    fresh = Ensemble(build_modules(small_net, [model_seed(config, m) for m in models]), torch.device("cpu"))
    untrained = train_stacked_shard(parse_config({"train": {"epochs": 1, "learning_rate": 1e-9}}), job, models,
                                    fresh, torch.device("cpu"), None, started=0.0)
    assert np.abs(untrained["logits"] - stacked["logits"]).max() > 1e-2


def test_the_results_record_the_path_each_model_took(cancer, tmp_path):
    vectorized = audit_membership(data=cancer, model=small_net, out_dir=tmp_path / "v", **QUICK)
    assert vectorized.details["training"]["path"] == "vectorized"
    assert vectorized.details["training"]["model"]["parameters"] == 30 * 16 + 16 + 16 * 2 + 2
    normed = audit_membership(data=cancer, model=normed_net, out_dir=tmp_path / "n", **QUICK)
    assert normed.details["training"]["path"] == "one-by-one"
    assert "running_mean" in normed.details["training"]["reason"]
    stored = json.loads((tmp_path / "n" / "results.json").read_text())
    assert stored["training"]["path"] == "one-by-one"
    assert stored["config"]["model"]["architecture"] == "own" and stored["config"]["data"]["source"] == "arrays"
    # resuming trains nothing and still says which path the shards took
    again = audit_membership(data=cancer, model=normed_net, out_dir=tmp_path / "n", **QUICK)
    assert again.details["training"]["path"] == "one-by-one"
    assert again.conditions["poisoned"].to_json() == normed.conditions["poisoned"].to_json()


@pytest.mark.parametrize("estimator", [LogisticRegression(max_iter=200),
                                       MLPClassifier(hidden_layer_sizes=(16,), max_iter=30)])
def test_scikit_learn_classifiers_train_through_the_protocol(cancer, tmp_path, estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = audit_membership(data=cancer, model=estimator, out_dir=tmp_path, **TRAINER_QUICK)
    assert results.details["training"]["path"] == "trainer"
    assert type(estimator).__name__ in results.details["training"]["model"]["repr"]
    logits = np.load(tmp_path / "signals-poisoned-logits.npy")
    assert logits.shape == (4, cancer.num_points, 1, 2)
    accuracy = results.conditions["clean"].measurements["accuracy"]
    assert accuracy["test"] > 0.85  # the models really learned the table


class ProbabilityTrainer:
    """A trainer that returns probabilities, as a careless one might."""

    def __init__(self, as_probabilities: bool):
        self.as_probabilities = as_probabilities

    def fit_predict(self, x, y, queries, *, num_classes, seed):
        model = LogisticRegression(max_iter=200, random_state=seed % 2**32).fit(x, y)
        return model.predict_proba(queries) if self.as_probabilities else model.predict_log_proba(queries)

    def __repr__(self):
        return "ProbabilityTrainer()"


def test_probabilities_from_a_trainer_are_taken_as_log_probabilities(cancer, tmp_path):
    logs = audit_membership(data=cancer, model=ProbabilityTrainer(False), out_dir=tmp_path / "log", **TRAINER_QUICK)
    probs = audit_membership(data=cancer, model=ProbabilityTrainer(True), out_dir=tmp_path / "p", **TRAINER_QUICK)
    assert any("probabilities" in warning for warning in probs.warnings)
    assert not any("probabilities" in warning for warning in logs.warnings)
    for name in ("lira-online", "rmia-online"):
        assert probs.attack("poisoned", name).auc == pytest.approx(logs.attack("poisoned", name).auc, abs=1e-6)


class DriftingFactory:
    """Builds a wider network on its second call."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        width = 16 if self.calls == 1 else 17
        return nn.Sequential(nn.Linear(30, width), nn.ReLU(), nn.Linear(width, 2))


class NanNet(nn.Module):
    def forward(self, x):
        return self.linear(x) * float("nan")

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(30, 2)


class Frozen(nn.Module):
    def forward(self, x):
        return x[:, :2]


@pytest.mark.parametrize("model, error, words", [
    (DriftingFactory(), ConfigError, "different architectures"),
    (lambda: Frozen(), ConfigError, "no parameters"),
    (lambda: NanNet(), ConfigError, "NaN or inf"),
    (lambda: nn.Linear(30, 3), ConfigError, "(8, 2) logits"),
    (lambda: nn.Sequential(nn.Linear(30, 2), nn.Softmax(dim=1)), ConfigError, "returns probabilities"),
    (lambda: "a network", ConfigError, "must return a torch.nn.Module"),
    (small_net(), ConfigError, "pass a factory"),
    (42, ConfigError, "got int"),
])
def test_a_bad_model_is_one_clear_error_and_nothing_is_written(cancer, tmp_path, model, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        audit_membership(data=cancer, model=model, out_dir=tmp_path / "run", **QUICK)
    assert not (tmp_path / "run").exists()


def test_dropout_trains_one_by_one_and_says_why(cancer, tmp_path):
    results = audit_membership(data=cancer, out_dir=tmp_path, **QUICK,
                               model=lambda: nn.Sequential(nn.Linear(30, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 2)))
    assert results.details["training"]["path"] == "one-by-one"
    assert results.details["training"]["reason"].startswith("it draws random numbers in training (dropout?)")


def test_a_module_that_diverges_names_the_model(cancer, tmp_path):
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(30, 2)

        def forward(self, x):
            return self.linear(x) * (1e30 ** 2 if self.training else 1.0)

    with pytest.raises(TrainingError):
        audit_membership(data=cancer, model=Exploding, out_dir=tmp_path, **QUICK)


class WrongShapeTrainer:
    def fit_predict(self, x, y, queries, *, num_classes, seed):
        return np.zeros((len(queries), num_classes + 1))


def test_a_trainer_with_the_wrong_output_is_named(cancer, tmp_path):
    with pytest.raises(TrainingError, match=r"WrongShapeTrainer.fit_predict returned float64 \(569, 3\); expected \(569, 2\)"):
        audit_membership(data=cancer, model=WrongShapeTrainer(), out_dir=tmp_path, **TRAINER_QUICK)


@pytest.mark.parametrize("x, y, words", [
    (np.array([[0.0, np.nan]] * 4 + [[1.0, 2.0]] * 4), np.array([0, 1] * 4), "NaN or inf in 4 rows"),
    (np.ones((8, 2)), np.array([0, 1, 2, 3, 0, 1, 2, -1]), "non-negative"),
    (np.ones((8, 2)), np.zeros(8, dtype=int), "at least two classes"),
    (np.ones((8, 2)), np.array([0, 1] * 3), "8 rows but y has 6"),
    (np.ones((8, 2)), np.array([0, 1, 0, 1, 0, 1, 0, 5]), "0..2"),
    (np.ones((8, 2)), np.array([1, 2, 1, 2, 1, 2, 1, 2]), "labels 1..2 leave class 0 without a point"),
])
def test_bad_arrays_are_refused_at_the_entry(x, y, words):
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Dataset.from_arrays(x=x, y=y, num_classes=3 if words == "0..2" else None)
    # a class absent on purpose: said with num_classes
    assert Dataset.from_arrays(x=np.ones((4, 2)), y=np.array([0, 2, 0, 2]), num_classes=3).num_classes == 3


def test_a_pool_too_small_for_the_design_is_refused_before_anything_is_written(cancer, tmp_path):
    with pytest.raises(DataError, match="too few for num_targets = 1000"):
        audit_membership(data=cancer, model=small_net, out_dir=tmp_path / "run", **(QUICK | {"num_targets": 1000}))
    with pytest.raises(ConfigError, match="num_models"):
        audit_membership(data=cancer, model=small_net, out_dir=tmp_path / "run", **(QUICK | {"num_models": 5}))
    with pytest.raises(DataError, match="Dataset.from_arrays"):
        audit_membership(data=(cancer.x, cancer.y), model=small_net, out_dir=tmp_path / "run", **QUICK)
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_model_is_refused(cancer, tmp_path):
    audit_membership(data=cancer, model=small_net, out_dir=tmp_path, **QUICK)
    with pytest.raises(RunDirError, match="the model differs"):
        audit_membership(data=cancer, model=normed_net, out_dir=tmp_path, **QUICK)
    before = (tmp_path / "results.json").read_bytes()
    # the same layers and shapes, another hyper-parameter: the fingerprint holds the module's repr
    with pytest.raises(RunDirError, match="the model differs"):
        audit_membership(data=cancer, model=lambda: nn.Sequential(nn.Linear(30, 16), nn.Dropout(0.5), nn.Tanh(),
                                                                   nn.Linear(16, 2)), out_dir=tmp_path, **QUICK)
    with pytest.raises(RunDirError, match="the model differs"):
        audit_membership(data=cancer, model=lambda: nn.Sequential(nn.Linear(30, 16), nn.Hardtanh(), nn.Linear(16, 2)),
                         out_dir=tmp_path, **QUICK)
    assert (tmp_path / "results.json").read_bytes() == before


class PlainTrainer:
    """A trainer without a repr of its own (the default holds a memory address)."""

    def __init__(self, c):
        self.c = c

    def fit_predict(self, x, y, queries, *, num_classes, seed):
        return LogisticRegression(C=self.c, max_iter=200).fit(x, y).predict_log_proba(queries)


def test_a_trainer_without_a_repr_resumes_and_another_is_refused(cancer, tmp_path):
    first = audit_membership(data=cancer, model=PlainTrainer(1.0), out_dir=tmp_path, **TRAINER_QUICK)
    again = audit_membership(data=cancer, model=PlainTrainer(1.0), out_dir=tmp_path, **TRAINER_QUICK)
    assert again.conditions["poisoned"].to_json() == first.conditions["poisoned"].to_json()
    with pytest.raises(RunDirError, match=r"the model differs .*\(PlainTrainer then, PlainTrainer now"):
        audit_membership(data=cancer, model=PlainTrainer(0.1), out_dir=tmp_path, **TRAINER_QUICK)


def test_a_failed_first_attempt_does_not_bind_the_run_directory_to_its_model(cancer, tmp_path):
    from sklearn.svm import SVC

    with pytest.raises(ConfigError, match="SVC has no predict_proba"):
        audit_membership(data=cancer, model=SVC(), out_dir=tmp_path, **TRAINER_QUICK)

    class Failing(ProbabilityTrainer):
        def fit_predict(self, x, y, queries, *, num_classes, seed):
            raise TrainingError("my cluster is down")

    with pytest.raises(TrainingError, match="my cluster is down"):
        audit_membership(data=cancer, model=Failing(False), out_dir=tmp_path, **TRAINER_QUICK)
    assert (tmp_path / "model.json").is_file() and not any((tmp_path / "shards").rglob("*.npz"))
    results = audit_membership(data=cancer, model=ProbabilityTrainer(False), out_dir=tmp_path, **TRAINER_QUICK)
    assert results.details["training"]["path"] == "trainer"


def test_a_pipeline_is_a_scikit_learn_model(cancer, tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler as Scaler

    results = audit_membership(data=cancer, model=make_pipeline(Scaler(), LogisticRegression(max_iter=200)),
                               out_dir=tmp_path, **TRAINER_QUICK)
    assert results.details["training"]["model"]["class"] == "Pipeline"


def test_a_pipeline_is_seeded_in_every_step(cancer):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler as Scaler

    trainer = SklearnTrainer(make_pipeline(Scaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        runs = [trainer.fit_predict(cancer.x[:100], cancer.y[:100], cancer.x[:10], num_classes=2, seed=seed)
                for seed in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[0] - runs[2]).max() > 1e-6


def test_the_two_paths_agree_with_augmentation_too():
    from truthserum.data.datasets import load_digits

    digits = load_digits().subset(np.arange(300))
    config = parse_config({"data": {"source": "digits"}, "train": {"epochs": 2, "batch_size": 40, "augment": "crop"}})
    keep = np.random.default_rng(1).random((2, 300)) < 0.5
    job = TrainingJob(condition="clean", x=digits.x, y=digits.y, keep=keep, extra_x=digits.x[:0],
                      extra_y=digits.y[:0], queries=digits.x, num_classes=10)

    def factory():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))

    trainer = ModuleTrainer(factory)
    stacked = trainer(config, job, range(2), torch.device("cpu"))
    modules = build_modules(factory, [model_seed(config, m) for m in range(2)])
    alone = trainer._one_by_one(config, job, range(2), modules, torch.device("cpu"), None, 0.0)
    np.testing.assert_allclose(alone["logits"], stacked["logits"], atol=2e-4)


class HalfFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Linear(30, 16).requires_grad_(False)  # a frozen feature extractor
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.features(x)))


def test_frozen_parameters_stay_frozen(cancer, tmp_path):
    results = audit_membership(data=cancer, model=HalfFrozen, out_dir=tmp_path, **QUICK)
    training = results.details["training"]
    assert training["path"] == "one-by-one" and "frozen parameters (features.weight" in training["reason"]
    assert training["model"]["parameters"] == 16 * 2 + 2  # the trainable ones


class Broken:
    def __call__(self):
        raise ValueError("no such layer size")


@pytest.mark.parametrize("model, words", [
    (Broken(), "the factory raised ValueError: no such layer size"),
    (lambda: nn.Linear(20, 2), r"cannot take the data's \(30,\) points: RuntimeError"),
])
def test_errors_in_the_users_code_are_one_line(cancer, tmp_path, model, words):
    with pytest.raises(ConfigError, match=words):
        audit_membership(data=cancer, model=model, out_dir=tmp_path / "run", **QUICK)
    assert not (tmp_path / "run").exists()


def test_a_trainer_takes_no_train_settings_and_returns_one_kind(cancer, tmp_path):
    with pytest.raises(ConfigError, match="a trainer trains its models itself"):
        audit_membership(data=cancer, model=LogisticRegression(), out_dir=tmp_path / "a", **QUICK)

    class Fickle(ProbabilityTrainer):
        def fit_predict(self, x, y, queries, *, num_classes, seed):
            self.as_probabilities = not self.as_probabilities
            return super().fit_predict(x, y, queries, num_classes=num_classes, seed=seed)

    with pytest.raises(TrainingError, match="returned logits, the models before it probabilities"):
        audit_membership(data=cancer, model=Fickle(False), out_dir=tmp_path / "b", **TRAINER_QUICK)


def test_augmentation_that_does_not_fit_the_data_is_refused_before_anything_is_written(cancer, tmp_path):
    with pytest.raises(ConfigError, match="augment"):
        audit_membership(data=cancer, model=small_net, out_dir=tmp_path / "run",
                         **(QUICK | {"train": TrainConfig(epochs=1, augment="crop")}))
    assert not (tmp_path / "run").exists()
