"""Stage 4, train: the plain CNN's layers as an ensemble runs them on the CPU, one model at a time
(:class:`~truthserum.train.ensemble.ConvPath` ``per-model``), where two stock kernels dominate a
training step (profiled on the 2-core machine, CNN (16, 32), batches of 125 MNIST digits), and
one copy in the pooling's backward (:func:`_interleave`) is worth doing differently:

* ``max_pool2d`` with indices, which autograd needs, reads a 1.5-million-value NCHW tensor at
  about 1 GB/s: 5 ms of a 25 ms step for the first block. :func:`relu_max_pool2` takes the max of
  each column pair, then of each row pair, as strided elementwise maxima (0.3 ms), and routes the
  gradient to the first maximal element of each window in row-major order, the element stock
  max pooling picks. ReLU is applied after the pooling, on a quarter of the values: the max of
  ReLUs is the ReLU of the max, and a window whose max is not positive passes no gradient either
  way. So forward and backward match ``MaxPool2d(ReLU(x))`` exactly, ties included.
* the weight gradient of a convolution with one input channel (the first layer of a greyscale
  CNN) runs at about 6 GFLOP/s in oneDNN: 4.9 ms for 28 MFLOP. :func:`first_conv2d` computes it
  as the image columns (nine shifted copies, the layout of ``unfold``) times the output
  gradient, batched over the examples (about 1 ms). Its input
  needs no gradient, so nothing else changes; the sums run in another order, so the gradient
  agrees with oneDNN's to floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class _ReluMaxPool2(torch.autograd.Function):
    """``MaxPool2d(2)(ReLU(x))`` for ``(B, C, H, W)``; odd trailing rows and columns are dropped,
    as the stock pooling drops them.

    The max is taken along each row's column pairs first (ties to the left), then along the row
    pairs (ties to the upper row): that is the first maximal element of the window in row-major
    order. The two choices are kept as float masks, and the backward builds each stage's
    gradient by products and stacking (contiguous writes): a write into strided slices, a
    ``where`` or a broadcast over the window's axes is several times slower here."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.input_shape = x.shape  # odd edges included: their gradient is zero
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :height, :width]
        left, right = x[..., 0::2], x[..., 1::2]
        right_wins = (right > left).to(x.dtype)  # float masks: a product is several times faster than where
        columns = torch.maximum(left, right)  # (B, C, H, W / 2)
        upper, lower = columns[..., 0::2, :], columns[..., 1::2, :]
        lower_wins = (lower > upper).to(x.dtype)
        out = torch.relu(torch.maximum(upper, lower))
        ctx.save_for_backward(right_wins, lower_wins, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        right_wins, lower_wins, out = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.contiguous(), out, 0)  # the ReLU after the max
        lower = grad * lower_wins
        columns = torch.stack([grad - lower, lower], dim=-2).flatten(-3, -2)  # (B, C, H, W / 2)
        right = columns * right_wins
        full = _interleave(columns - right, right)  # (B, C, H, W)
        height, width = ctx.input_shape[-2:]
        if full.shape[-2:] != (height, width):
            full = F.pad(full, (0, width - full.shape[-1], 0, height - full.shape[-2]))
        return full


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """``stack([even, odd], dim=-1).flatten(-2)``: as the real and imaginary parts of a complex
    tensor, whose kernel writes the pairs four times faster than stack's element-by-element
    interleave (float32 on the 2-core machine, 0.19 against 0.73 ms for 3.5 million values)."""
    if even.dtype in (torch.float32, torch.float64):
        return torch.view_as_real(torch.complex(even, odd)).flatten(-2)
    return torch.stack([even, odd], dim=-1).flatten(-2)


def relu_max_pool2(x: torch.Tensor) -> torch.Tensor:
    """``MaxPool2d(2)(ReLU(x))`` with the forward and gradient of the stock layers, faster on the
    CPU (see the module's docstring)."""
    return _ReluMaxPool2.apply(x)


class _FirstConv2d(torch.autograd.Function):
    """A 3x3 convolution (stride 1, padding 1) of an input that needs no gradient, with the weight
    gradient as a batched product of ``unfold(x)`` and the output gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.weight_shape = weight.shape
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        batch, out_channels = grad.shape[:2]
        columns = _columns(x)  # (B, Cin * 9, H * W)
        grad = grad.reshape(batch, out_channels, -1)
        grad_weight = torch.bmm(grad, columns.transpose(1, 2)).sum(dim=0).view(ctx.weight_shape)
        return None, grad_weight, grad.sum(dim=(0, 2))


def _columns(x: torch.Tensor) -> torch.Tensor:
    """``unfold(x, 3, padding=1)``, ``(B, Cin * 9, H * W)`` in the same order, as nine shifted
    copies of the padded images (several times faster than unfold's general im2col here)."""
    batch, channels, height, width = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = [padded[..., dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)]
    return torch.stack(shifted, dim=2).view(batch, channels * 9, height * width)


def first_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The first layer's 3x3 convolution, padding 1 (its input needs no gradient)."""
    return _FirstConv2d.apply(x, weight, bias)


@dataclass(frozen=True)
class CnnLayers:
    """The plain CNN of :func:`~truthserum.train.architectures.build_model`: blocks of 3x3
    convolution (padding 1), ReLU and 2x2 max pooling, then Flatten and one Linear."""

    convolutions: tuple[str, ...]  # each convolution's name in the model
    output: str  # the Linear's name


def cnn_layers(template: nn.Module) -> CnnLayers | None:
    """The layers of a plain CNN, or None for any other architecture."""
    if not isinstance(template, nn.Sequential):
        return None
    modules = list(template.named_children())
    convolutions = []
    while len(modules) >= 3 and isinstance(modules[0][1], nn.Conv2d):
        (name, conv), (_, relu), (_, pool) = modules[:3]
        if not (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
                and isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool2d)
                and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
                and pool.dilation in (1, (1, 1)) and not pool.ceil_mode):
            return None
        convolutions.append(name)
        modules = modules[3:]
    if (not convolutions or len(modules) != 2 or not isinstance(modules[0][1], nn.Flatten)
            or not isinstance(modules[1][1], nn.Linear) or modules[1][1].bias is None):
        return None
    return CnnLayers(tuple(convolutions), modules[1][0])


def cnn_forward(layers: CnnLayers, params: dict[str, torch.Tensor], x: torch.Tensor, *, shared: bool) -> torch.Tensor:
    """Every model's logits, ``(M, B, C)``: each model's convolutions and pooling in turn (on
    views of the stacked parameters), then one batched product for the output layer. ``x`` is
    ``(M, B, C, H, W)``, or ``(B, C, H, W)`` when every model sees the same batch."""
    weights = [params[f"{name}.weight"].unbind(0) for name in layers.convolutions]
    biases = [params[f"{name}.bias"].unbind(0) for name in layers.convolutions]
    features = []
    for model in range(len(weights[0])):
        h = x if shared else x[model]
        for position, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            convolve = first_conv2d if position == 0 and not h.requires_grad else _conv
            h = relu_max_pool2(convolve(h, weight[model], bias[model]))
        features.append(h.flatten(1))
    stacked = torch.stack(features)  # (M, B, D)
    weight, bias = params[f"{layers.output}.weight"], params[f"{layers.output}.bias"]  # (M, C, D), (M, C)
    return torch.baddbmm(bias.unsqueeze(1), stacked, weight.transpose(1, 2))


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, weight, bias, padding=1)
