"""DP-SGD: per-example gradients for all models at once equal a plain loop over models and
examples (and Opacus's on one model); the noise and the epsilon agree with the accountants."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from truthserum.config.defense import Accountant, DpSgd
from truthserum.defense import accounting
from truthserum.defense.private import (
    PrivateTraining, _generic_clipped_sums, _linear_clipped_sums, check_private_module, clipped_gradient_sums,
    poisson_batches, train_private_ensemble,
)
from truthserum.errors import ConfigError
from truthserum.train import Architecture, Ensemble, OptimizerName, TrainSettings, build_model


def _ensemble(architecture, seeds, hidden=(8, 6), dtype=torch.float32):
    def make():  # the WRN: a tiny WRN-10-1, GroupNorm normalising each example by itself
        return build_model(architecture, feature_shape=(1, 6, 6), num_classes=4, hidden_sizes=hidden, channels=(3,),
                           depth=10, widen=1).to(dtype)

    return Ensemble.initialise(make, seeds, torch.device("cpu")), make


def _batch(models=3, batch=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(models, batch, 1, 6, 6, generator=g, dtype=torch.float64).to(dtype) * 2
    y = torch.randint(0, 4, (models, batch), generator=g)
    valid = torch.ones(models, batch, dtype=torch.bool)
    valid[0, -2:] = False  # padding counts for nothing
    return x, y, valid


def _loop_reference(ensemble, make, seeds, x, y, valid, clip):
    """Per model, per example: an ordinary nn.Module, autograd, clip, sum. Returns the clipped
    sums in nn.Module layout and the norms."""
    sums, norms = {}, torch.zeros(y.shape, dtype=torch.float64)
    for m, seed in enumerate(seeds):
        torch.manual_seed(seed)
        model = make()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(ensemble.module_layout(name, ensemble.params[name].detach())[m].double())
        total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
        for i in range(y.shape[1]):
            model.zero_grad()
            F.cross_entropy(model(x[m, i:i + 1].double()), y[m, i:i + 1]).backward()
            norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
            norms[m, i] = norm
            factor = min(1.0, clip / (float(norm) + 1e-6)) if valid[m, i] else 0.0
            for name, p in model.named_parameters():
                total[name] += factor * p.grad
        for name, value in total.items():
            sums.setdefault(name, []).append(value)
    return {name: torch.stack(v) for name, v in sums.items()}, norms


@pytest.mark.parametrize("architecture", [Architecture.MLP, Architecture.LOGREG, Architecture.CNN, Architecture.WRN])
def test_clipped_sums_equal_a_loop_over_models_and_examples(architecture):
    """In float64, so that 1e-6 measures the method, not float32's rounding (which gives 1e-5)."""
    seeds = [3, 4, 5]
    ensemble, make = _ensemble(architecture, seeds, dtype=torch.float64)
    x, y, valid = _batch(dtype=torch.float64)
    clip = 0.5  # below most norms, so the clipping is exercised
    sums, norms, _ = clipped_gradient_sums(ensemble, x, y, valid, clip)
    expected, expected_norms = _loop_reference(ensemble, make, seeds, x, y, valid, clip)
    torch.testing.assert_close(norms[valid], expected_norms[valid], rtol=0, atol=1e-6)  # padding: any norm
    assert (expected_norms > clip).float().mean() > 0.5
    for name, value in sums.items():
        torch.testing.assert_close(ensemble.module_layout(name, value), expected[name], rtol=0, atol=1e-6)


def test_linear_shortcut_equals_torch_func_on_the_mlp():
    ensemble, _ = _ensemble(Architecture.MLP, [1, 2])
    x, y, valid = _batch(models=2, batch=7, seed=1)
    fast, fast_norms, fast_losses = _linear_clipped_sums(ensemble, x, y, valid.float(), 0.3)
    generic, generic_norms, generic_losses = _generic_clipped_sums(ensemble, x, y, valid.float(), 0.3)
    torch.testing.assert_close(fast_norms[valid], generic_norms[valid], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_losses, generic_losses, rtol=1e-5, atol=1e-6)
    for name in fast:
        torch.testing.assert_close(fast[name], generic[name], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # Opacus's hooks on inputs without gradients
def test_per_example_gradients_equal_opacus_on_one_model():
    opacus = pytest.importorskip("opacus")
    ensemble, make = _ensemble(Architecture.MLP, [7])
    x, y, _ = _batch(models=1, batch=6, seed=2)
    valid = torch.ones_like(y, dtype=torch.bool)
    _, norms, _ = clipped_gradient_sums(ensemble, x, y, valid, 1.0)
    torch.manual_seed(7)
    model = make()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(ensemble.module_layout(name, ensemble.params[name].detach())[0])
    sampled = opacus.GradSampleModule(model, loss_reduction="sum")
    F.cross_entropy(sampled(x[0]), y[0], reduction="sum").backward()
    opacus_norms = torch.sqrt(sum(p.grad_sample.flatten(1).pow(2).sum(dim=1) for p in sampled.parameters()))
    torch.testing.assert_close(norms[0], opacus_norms, rtol=1e-5, atol=1e-6)


def test_poisson_batches_draw_each_row_at_the_sample_rate():
    indices = [np.arange(0, 400), np.arange(100, 300)]
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    counts = np.zeros(2)
    for _ in range(200):
        batch = poisson_batches(indices, 0.1, rngs)
        for m in range(2):
            rows = batch[m][batch[m] >= 0]
            assert set(rows.tolist()) <= set(indices[m].tolist())
            counts[m] += len(rows)
    np.testing.assert_allclose(counts / 200, [40, 20], rtol=0.05)


def test_private_training_is_reproducible_and_noise_matters():
    x = torch.randn(60, 1, 6, 6)
    y = torch.randint(0, 4, (60,))
    settings = TrainSettings(optimizer=OptimizerName.SGD, learning_rate=0.1, epochs=2, batch_size=10)

    def run(noise, seeds=(1, 2)):
        ensemble, _ = _ensemble(Architecture.MLP, list(seeds))
        train_private_ensemble(
            ensemble, x=x, y=y, train_indices=[np.arange(0, 40), np.arange(20, 60)][:len(seeds)],
            sample_rngs=[np.random.default_rng(s) for s in seeds], noise_seeds=list(seeds),
            settings=settings, private=PrivateTraining(noise_multiplier=noise, clip_norm=1.0, sample_rate=0.25,
                                                                   expected_batch_size=10.0),
            steps=4,
        )
        return ensemble.params

    first, again, noisier = run(1.0), run(1.0), run(5.0)
    for name in first:
        assert torch.equal(first[name], again[name])
        assert not torch.allclose(first[name], noisier[name])
    alone = run(1.0, seeds=(1,))  # model 0 trains the same without model 1 beside it
    for name in first:
        torch.testing.assert_close(first[name][0], alone[name][0], rtol=1e-5, atol=1e-6)


def test_batchnorm_is_refused_with_one_line():
    with pytest.raises(ConfigError, match="BatchNorm1d.*mixes the examples"):
        check_private_module(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))
    check_private_module(build_model(Architecture.WRN, feature_shape=(3, 8, 8), num_classes=2, depth=10, widen=1))


# The defenses demo's DP-SGD against exact replicas: q = 128 / 2,826 (the largest training set,
# members and poisons), 40 epochs of 23 steps, epsilon 8 at delta 1e-5.
DEMO = {"sample_rate": 128 / 2826, "steps": 40 * 23}


def test_calibrated_noise_spends_the_target_epsilon_by_an_independent_accountant():
    prv = pytest.importorskip("prv_accountant")
    defense = DpSgd(epsilon=8.0, delta=1e-5)
    sigma = accounting.calibrate_noise(defense, **DEMO)
    ours = accounting.epsilon_spent(Accountant.PRV, noise_multiplier=sigma, delta=1e-5, **DEMO)
    assert abs(ours - 8.0) <= 0.08  # Opacus's own tolerance is 0.01 in the calibration
    # Microsoft's prv-accountant, the reference implementation of Gopi et al. (2021)
    reference = prv.PRVAccountant(
        prvs=[prv.PoissonSubsampledGaussianMechanism(noise_multiplier=sigma, sampling_probability=DEMO["sample_rate"])],
        max_self_compositions=[DEMO["steps"]], eps_error=0.01, delta_error=1e-10,
    )
    low, estimate, high = reference.compute_epsilon(delta=1e-5, num_self_compositions=[DEMO["steps"]])
    assert low - 0.02 <= ours <= high + 0.02
    assert abs(estimate - 8.0) < 0.1


def test_rdp_epsilon_and_group_epsilon():
    sigma = 1.1
    common = {"noise_multiplier": sigma, "delta": 1e-5, **DEMO}
    from opacus.accountants import RDPAccountant

    keeper = RDPAccountant()
    keeper.history = [(sigma, DEMO["sample_rate"], DEMO["steps"])]
    rdp = accounting.epsilon_spent(Accountant.RDP, **common)
    assert rdp <= keeper.get_epsilon(1e-5) + 1e-9  # a finer grid of orders is never looser
    assert rdp == pytest.approx(keeper.get_epsilon(1e-5), rel=0.05)
    one = accounting.group_epsilon(**common, group_size=1)
    assert one == pytest.approx(rdp, rel=1e-6)
    groups = [accounting.group_epsilon(**common, group_size=r) for r in (2, 4, 8)]
    assert rdp < groups[0] < groups[1] < groups[2] < math.inf
    # Mironov's property for r = 2: order alpha/2 at 3 * rdp(alpha); the grid includes alpha = 16
    from opacus.accountants.analysis import rdp as analysis
    curve = analysis.compute_rdp(q=DEMO["sample_rate"], noise_multiplier=sigma, steps=DEMO["steps"], orders=[16.0])
    by_hand = 3 * curve[0] + math.log(1 / 1e-5) / (8 - 1)  # the plain RDP-to-DP conversion at order 8
    assert groups[0] <= by_hand + 1e-9
    # the unsubsampled Gaussian of sensitivity 8C: steps * alpha * 64 / (2 sigma^2) at order 1.5
    unsampled = DEMO["steps"] * 1.5 * 64 / (2 * sigma ** 2) + math.log(1 / 1e-5) / 0.5
    assert groups[2] <= unsampled
