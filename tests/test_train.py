"""The vectorized ensemble: same models as training one at a time, deterministic, independent."""

import numpy as np
import pytest
import torch

from truthserum.query.views import IDENTITY, QueryView, apply_view, query_logits
from truthserum.train import Architecture, Ensemble, OptimizerName, Schedule, TrainSettings, build_model, train_ensemble
from truthserum.train.ensemble import epoch_batches


def toy_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :3].argmax(axis=1)).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def train(architecture, seeds, subsets, settings, *, x, y, steps=None):
    def make():
        return build_model(architecture, feature_shape=(1, 6, 6), num_classes=3,
                           hidden_sizes=(16,), channels=(4,))

    ensemble = Ensemble.initialise(make, seeds, torch.device("cpu"))
    train_ensemble(
        ensemble, x=x, y=y, train_indices=subsets,
        order_rngs=[np.random.default_rng(s) for s in seeds], settings=settings, steps=steps,
    )
    return ensemble


SETTINGS = TrainSettings(optimizer=OptimizerName.ADAM, learning_rate=0.01, epochs=3, batch_size=16,
                         weight_decay=1e-3, schedule=Schedule.COSINE)


def test_epoch_batches_cover_each_models_points_once():
    subsets = [np.arange(0, 50), np.arange(10, 57), np.array([3, 5, 7])]
    batches = epoch_batches(subsets, 7, [np.random.default_rng(i) for i in range(3)])
    assert batches.shape[0] == 7
    for model, subset in enumerate(subsets):
        seen = batches[:, model][batches[:, model] >= 0]
        assert sorted(seen.tolist()) == sorted(subset.tolist())
        assert (batches[:, model] >= 0).sum(axis=1).min() >= len(subset) // 7  # near-equal batches
    assert batches.shape[2] <= 8


# The Wide-ResNet has its own version of this test in test_cifar.py, with SGD (its optimiser):
# under Adam, a GroupNorm net's near-zero gradients turn float rounding into lr-sized steps, so
# 15 Adam steps on 6x6 images drift apart by ~1e-3 though one step agrees to ~1e-6.
@pytest.mark.parametrize("architecture", [a for a in Architecture if a not in (Architecture.WRN, Architecture.OWN)])
def test_ensemble_trains_the_same_models_as_one_at_a_time(architecture):
    """Stacking models must not couple them: each equals the model trained alone."""
    x, y = toy_data()
    seeds = [11, 12, 13]
    subsets = [np.arange(0, 80), np.arange(40, 120), np.arange(0, 120, 2)]
    together = train(architecture, seeds, subsets, SETTINGS, x=x, y=y, steps=5)
    for k, (seed, subset) in enumerate(zip(seeds, subsets)):
        alone = train(architecture, [seed], [subset], SETTINGS, x=x, y=y, steps=5)
        for name, stacked in together.params.items():
            torch.testing.assert_close(stacked[k], alone.params[name][0], rtol=1e-4, atol=1e-5)


def test_training_is_bit_for_bit_deterministic_on_cpu():
    x, y = toy_data()
    subsets = [np.arange(0, 80), np.arange(40, 120)]
    sgd = TrainSettings(optimizer=OptimizerName.SGD, learning_rate=0.1, epochs=2, batch_size=10)
    first = train(Architecture.CNN, [1, 2], subsets, sgd, x=x, y=y)
    second = train(Architecture.CNN, [1, 2], subsets, sgd, x=x, y=y)
    for name in first.params:
        assert torch.equal(first.params[name], second.params[name])
    different = train(Architecture.CNN, [1, 3], subsets, sgd, x=x, y=y)
    assert not torch.equal(first.params["0.weight"], different.params["0.weight"])


def test_training_learns():
    x, y = toy_data(n=300)
    ensemble = train(Architecture.MLP, [0, 1], [np.arange(300)] * 2,
                     TrainSettings(optimizer=OptimizerName.ADAM, learning_rate=0.01, epochs=30, batch_size=32),
                     x=x, y=y)
    logits = query_logits(ensemble, x, [IDENTITY])
    assert logits.shape == (2, 300, 1, 3) and logits.dtype == np.float32
    assert (logits[:, :, 0].argmax(-1) == y.numpy()).mean() > 0.9


def test_query_views():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    right = apply_view(x, QueryView.SHIFT_RIGHT.view)
    assert right[0, 0].tolist() == [[0, 0, 1], [0, 3, 4], [0, 6, 7]]
    up = apply_view(x, QueryView.SHIFT_UP.view)
    assert up[0, 0].tolist() == [[3, 4, 5], [6, 7, 8], [0, 0, 0]]
    assert apply_view(x, QueryView.MIRROR.view)[0, 0, 0].tolist() == [2, 1, 0]
    assert torch.equal(apply_view(x, QueryView.IDENTITY.view), x)
    assert x[0, 0, 0].tolist() == [0, 1, 2]  # views never modify their input


def test_divergence_is_reported_not_saved_as_nan_signals():
    from truthserum.errors import TrainingError

    x, y = toy_data()
    wild = TrainSettings(optimizer=OptimizerName.SGD, learning_rate=1e6, epochs=3, batch_size=16)
    with pytest.raises(TrainingError, match="training diverged"):
        train(Architecture.MLP, [0], [np.arange(120)], wild, x=x * 1e3, y=y)


def small_mlps(hidden):
    """Three MLPs on 4x4 images with 3 classes (logistic regression when ``hidden`` is empty)."""
    arch = Architecture.LOGREG if not hidden else Architecture.MLP
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(arch, feature_shape=(1, 4, 4), num_classes=3, hidden_sizes=hidden or (1,)))
    return models


@pytest.mark.parametrize("hidden", [(), (7,), (5, 6)])
def test_the_batched_matmul_mlp_computes_each_models_own_function(hidden):
    """An MLP (or logistic regression) runs as batched matmuls over stacked weights, not
    through vmap; per model it must be the ordinary module's forward."""
    models = small_mlps(hidden)
    ensemble = Ensemble(models, torch.device("cpu"))
    assert ensemble._mlp is not None
    x = torch.randn(3, 5, 1, 4, 4)
    per_model = ensemble.forward_per_model(x)
    shared = ensemble.forward_shared(x[0])
    for m, model in enumerate(models):
        torch.testing.assert_close(per_model[m], model(x[m]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(shared[m], model(x[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", [(), (7,), (5, 6)])
def test_the_batched_matmul_mlp_has_each_models_own_gradients(hidden):
    """Training goes through ``example_losses``, whose output layer has a hand-written backward
    (class-major logits); every stacked gradient must equal the ordinary module's, taken by
    autograd on that model's own batch."""
    models = small_mlps(hidden)
    ensemble = Ensemble(models, torch.device("cpu"))
    x, y = torch.randn(3, 5, 1, 4, 4), torch.randint(0, 3, (3, 5))
    losses = ensemble.example_losses(x, y)
    assert losses.shape == (3, 5)
    losses.sum().backward()
    for m, model in enumerate(models):
        expected = torch.nn.functional.cross_entropy(model(x[m]), y[m], reduction="none")
        torch.testing.assert_close(losses[m], expected, rtol=1e-5, atol=1e-6)
        expected.sum().backward()
        for name, parameter in model.named_parameters():
            stacked = ensemble.params[name].grad[m]
            if stacked.shape != parameter.shape:  # a hidden weight, stored (in, out)
                stacked = stacked.T
            torch.testing.assert_close(stacked, parameter.grad, rtol=1e-5, atol=1e-6)


def test_the_class_major_output_layer_passes_gradcheck():
    from truthserum.train.ensemble import _ClassMajorOutput

    generator = torch.Generator().manual_seed(0)
    h, weight, bias = (torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
                       for shape in [(2, 4, 5), (2, 3, 5), (2, 3)])
    assert torch.autograd.gradcheck(_ClassMajorOutput.apply, (h, weight, bias))


def test_a_linear_layer_without_relu_stays_linear_in_the_batched_matmul_path():
    """``Flatten, Linear, Linear`` also runs as batched matmuls: no ReLU may appear between."""
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        models.append(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 7), torch.nn.Linear(7, 3)))
    ensemble = Ensemble(models, torch.device("cpu"))
    assert ensemble._mlp is not None
    x, y = torch.randn(2, 5, 1, 4, 4), torch.randint(0, 3, (2, 5))
    losses = ensemble.example_losses(x, y)
    for m, model in enumerate(models):
        torch.testing.assert_close(ensemble.forward_per_model(x)[m], model(x[m]), rtol=1e-5, atol=1e-6)
        expected = torch.nn.functional.cross_entropy(model(x[m]), y[m], reduction="none")
        torch.testing.assert_close(losses[m], expected, rtol=1e-5, atol=1e-6)
