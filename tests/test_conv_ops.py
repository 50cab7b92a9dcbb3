"""The ensemble's convolution paths: the per-model path's own layers equal the stock ones, and an
ensemble trained on either path gives the same logits to floating-point rounding."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from truthserum.train import Architecture, Ensemble, build_model
from truthserum.train.conv_ops import cnn_layers, first_conv2d, relu_max_pool2
from truthserum.train.ensemble import ConvPath, OptimizerName, TrainSettings, default_conv_path, train_ensemble


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (2, 1, 2, 3)])
def test_relu_max_pool_equals_the_stock_layers_ties_included(shape):
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, generator=generator) * 2).round() / 2  # halves: many ties, zeros among them
    stock, ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    expected, got = F.max_pool2d(torch.relu(stock), 2), relu_max_pool2(ours)
    grad = torch.randn(expected.shape, generator=generator)
    expected.backward(grad)
    got.backward(grad)
    assert torch.equal(expected, got) and torch.equal(stock.grad, ours.grad)


def test_the_first_convolution_equals_onednn_to_rounding():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 11, 12, generator=generator)
    weight, bias = torch.randn(5, 2, 3, 3, generator=generator), torch.randn(5, generator=generator)
    stock = [weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)]
    ours = [weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)]
    expected, got = F.conv2d(x, *stock, padding=1), first_conv2d(x, *ours)
    grad = torch.randn(expected.shape, generator=generator)
    expected.backward(grad)
    got.backward(grad)
    assert torch.equal(expected, got)
    for a, b in zip(stock, ours, strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5)


def test_only_the_plain_cnn_takes_its_own_layers():
    assert cnn_layers(build_model(Architecture.CNN, feature_shape=(1, 8, 8), num_classes=3, channels=(4, 8))) is not None
    assert cnn_layers(build_model(Architecture.WRN, feature_shape=(3, 8, 8), num_classes=3, depth=10, widen=1)) is None
    assert cnn_layers(build_model(Architecture.MLP, feature_shape=(4,), num_classes=3, hidden_sizes=(5,))) is None
    assert default_conv_path(torch.device("cpu")) is ConvPath.PER_MODEL
    assert default_conv_path(torch.device("cuda")) is ConvPath.VMAP


def _trained_logits(architecture, shape, path, epochs, optimizer, **sizes):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((60, *shape)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 60))
    ensemble = Ensemble.initialise(lambda: build_model(architecture, feature_shape=shape, num_classes=3, **sizes),
                                   [1, 2, 3], torch.device("cpu"), conv_path=path)
    assert ensemble.conv_path is path
    train_ensemble(ensemble, x=x, y=y, train_indices=[np.arange(0, 40), np.arange(10, 50), np.arange(20, 60)],
                   order_rngs=[np.random.default_rng(i) for i in range(3)],
                   settings=TrainSettings(optimizer=optimizer, learning_rate=0.01, epochs=epochs, batch_size=16))
    with torch.no_grad():
        return ensemble.forward_shared(x).numpy(), ensemble.forward_per_model(x.expand(3, *x.shape)).numpy()


ADAM, SGD = OptimizerName.ADAM, OptimizerName.SGD


@pytest.mark.parametrize("architecture, shape, epochs, optimizer, sizes", [
    (Architecture.CNN, (1, 12, 12), 3, ADAM, {"channels": (4, 8)}),  # the plain CNN: its own layers
    (Architecture.CNN, (2, 9, 7), 3, ADAM, {"channels": (4,)}),  # odd sizes, two input channels
    # a Wide-ResNet takes the generic per-model path. With SGD: Adam divides by the gradient's
    # root mean square, so a gradient that is rounding noise around zero moves its
    # parameter by a whole step either way, and the paths part by 3e-5 after 3 steps
    (Architecture.WRN, (3, 8, 8), 2, SGD, {"depth": 10, "widen": 1}),
])
def test_every_path_trains_the_same_models(architecture, shape, epochs, optimizer, sizes):
    """Logits after training agree to 1e-5 (float32 rounding: the paths sum in another order)."""
    vmap = _trained_logits(architecture, shape, ConvPath.VMAP, epochs, optimizer, **sizes)
    per_model = _trained_logits(architecture, shape, ConvPath.PER_MODEL, epochs, optimizer, **sizes)
    for a, b in zip(vmap, per_model, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_a_run_records_the_path_its_convolutions_took(tmp_path):
    from conftest import TINY_CONFIG
    from truthserum.config import parse_config
    from truthserum.tasks.membership import run_experiment

    config = parse_config({**TINY_CONFIG, "model": {"architecture": "cnn", "channels": [4]}})
    results = run_experiment(config, tmp_path / "run", progress=False, log=lambda _: None).to_json()
    assert results["ensemble"] == {"conv_path": "per-model"}
    assert "convolutions</th><td>per-model path" in (tmp_path / "run" / "report.html").read_text()
