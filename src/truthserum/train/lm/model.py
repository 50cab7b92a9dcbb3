"""A small causal byte-level transformer, written for M models at once.

Every parameter carries a leading model axis, so an ensemble of M models is one computation
of batched matmuls (as the image ensembles of :mod:`truthserum.train`, without ``vmap``):
M models trained side by side cost about one M-times-wider model. Each model still has its
own initialisation, its own training text and its own batch order.

Two forward passes share the weights: :func:`forward` over whole windows (training, perplexity)
and :func:`extend` one token at a time over a key/value cache (the candidate tree of
:mod:`truthserum.attacks.exposure`), where the cache of the shared query context is kept once and
broadcast over every node of the tree instead of being copied per node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

VOCAB = 256  # bytes


@dataclass(frozen=True)
class TransformerShape:
    """Size of the byte transformer (pre-norm GPT blocks, tied input and output embedding)."""

    layers: int = 2
    width: int = 128
    heads: int = 4
    context: int = 128

    @property
    def head_width(self) -> int:
        return self.width // self.heads


Params = dict[str, torch.Tensor]


def init_params(shape: TransformerShape, seeds: list[int], device: torch.device) -> Params:
    """Stacked parameters of ``len(seeds)`` models, model ``m`` drawn from ``seeds[m]`` alone
    (so a model's initial weights do not depend on which models share its ensemble)."""
    per_model: list[Params] = []
    d = shape.width
    # GPT-2's scheme: N(0, 0.02), the residual projections scaled down by the depth.
    residual_std = 0.02 / math.sqrt(2 * shape.layers)
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)

        def normal(*size: int, std: float = 0.02) -> torch.Tensor:
            return torch.randn(*size, generator=gen) * std

        p: Params = {"embed": normal(VOCAB, d), "position": normal(shape.context, d, std=0.01)}
        for layer in range(shape.layers):
            p[f"{layer}.ln1.w"], p[f"{layer}.ln1.b"] = torch.ones(d), torch.zeros(d)
            p[f"{layer}.qkv"] = normal(d, 3 * d)
            p[f"{layer}.out"] = normal(d, d, std=residual_std)
            p[f"{layer}.ln2.w"], p[f"{layer}.ln2.b"] = torch.ones(d), torch.zeros(d)
            p[f"{layer}.fc1"], p[f"{layer}.fc1.b"] = normal(d, 4 * d), torch.zeros(4 * d)
            p[f"{layer}.fc2"], p[f"{layer}.fc2.b"] = normal(4 * d, d, std=residual_std), torch.zeros(d)
        p["lnf.w"], p["lnf.b"] = torch.ones(d), torch.zeros(d)
        per_model.append(p)
    return {name: torch.stack([p[name] for p in per_model]).to(device) for name in per_model[0]}


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # weight/bias are (M, d); x is (M, ..., d)
    shape = (weight.shape[0],) + (1,) * (x.dim() - 2) + (weight.shape[1],)
    return F.layer_norm(x, x.shape[-1:]) * weight.view(shape) + bias.view(shape)


def _matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` (M, ..., d_in) times the per-model ``weight`` (M, d_in, d_out)."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    return torch.bmm(flat, weight).reshape(*x.shape[:-1], weight.shape[-1])


def _bias(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return weight.view((weight.shape[0],) + (1,) * (like.dim() - 2) + (weight.shape[1],))


def _mlp(p: Params, layer: int, x: torch.Tensor) -> torch.Tensor:
    h = _layer_norm(x, p[f"{layer}.ln2.w"], p[f"{layer}.ln2.b"])
    h = _matmul(h, p[f"{layer}.fc1"])
    h = F.gelu(h + _bias(p[f"{layer}.fc1.b"], h))
    h = _matmul(h, p[f"{layer}.fc2"])
    return h + _bias(p[f"{layer}.fc2.b"], h)


def _logits(p: Params, x: torch.Tensor) -> torch.Tensor:
    h = _layer_norm(x, p["lnf.w"], p["lnf.b"])
    return _matmul(h, p["embed"].transpose(1, 2))


def _embed(p: Params, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``tokens`` (M, ...) int64; ``positions`` broadcastable to it."""
    num_models = p["embed"].shape[0]
    offsets = (torch.arange(num_models, device=tokens.device) * VOCAB).view((-1,) + (1,) * (tokens.dim() - 1))
    # F.embedding, not indexing: the backward of an indexed read accumulates in a thread-dependent
    # order on the CPU, so the same seed would not give the same weights twice.
    x = F.embedding(tokens + offsets, p["embed"].reshape(-1, p["embed"].shape[-1]))
    context = p["position"].shape[1]
    pos_offsets = (torch.arange(num_models, device=tokens.device) * context).view(
        (-1,) + (1,) * (tokens.dim() - 1)
    )
    return x + F.embedding(positions + pos_offsets, p["position"].reshape(-1, p["position"].shape[-1]))


def forward(p: Params, tokens: torch.Tensor, shape: TransformerShape) -> torch.Tensor:
    """Logits ``(M, B, T, 256)`` for ``tokens`` ``(M, B, T)``, each model on its own rows."""
    num_models, batch, length = tokens.shape
    if length > shape.context:
        raise ValueError(f"a window of {length} tokens exceeds the model's context of {shape.context}")
    positions = torch.arange(length, device=tokens.device).view(1, 1, length)
    x = _embed(p, tokens, positions)
    heads, hw = shape.heads, shape.head_width
    for layer in range(shape.layers):
        h = _layer_norm(x, p[f"{layer}.ln1.w"], p[f"{layer}.ln1.b"])
        qkv = _matmul(h, p[f"{layer}.qkv"]).view(num_models * batch, length, 3, heads, hw)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (M*B, H, T, hw)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        attended = attended.transpose(1, 2).reshape(num_models, batch, length, shape.width)
        x = x + _matmul(attended, p[f"{layer}.out"])
        x = x + _mlp(p, layer, x)
    return _logits(p, x)


@dataclass
class ContextCache:
    """Keys and values of the shared query context: per layer ``(M, H, T0, hw)`` each."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int


@dataclass
class NodeCache:
    """Keys and values of the tokens after the context, per tree node: ``(M, B, H, l, hw)``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def select(self, index: torch.Tensor) -> NodeCache:
        return NodeCache([k[:, index] for k in self.keys], [v[:, index] for v in self.values])


def encode_context(
    p: Params, context: torch.Tensor, shape: TransformerShape
) -> tuple[ContextCache, torch.Tensor]:
    """Run the shared context ``(T0,)`` through every model.

    Returns:
        The context's cache and the log-probabilities ``(M, 256)`` of the next token.
    """
    num_models = p["embed"].shape[0]
    length = context.shape[0]
    tokens = context.view(1, 1, length).expand(num_models, 1, length)
    x = _embed(p, tokens, torch.arange(length, device=context.device).view(1, 1, length))
    heads, hw = shape.heads, shape.head_width
    keys, values = [], []
    for layer in range(shape.layers):
        h = _layer_norm(x, p[f"{layer}.ln1.w"], p[f"{layer}.ln1.b"])
        qkv = _matmul(h, p[f"{layer}.qkv"]).view(num_models, length, 3, heads, hw)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (M, H, T0, hw)
        keys.append(k)
        values.append(v)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + _matmul(attended.transpose(1, 2).reshape(num_models, 1, length, shape.width), p[f"{layer}.out"])
        x = x + _mlp(p, layer, x)
    logits = _logits(p, x[:, 0, -1])
    return ContextCache(keys, values, length), torch.log_softmax(logits.float(), dim=-1)


def extend(
    p: Params, shape: TransformerShape, context: ContextCache, parents: NodeCache | None,
    tokens: torch.Tensor,
) -> tuple[NodeCache, torch.Tensor]:
    """Append one token to each of B tree nodes.

    Args:
        context: the shared context's cache.
        parents: each new node's parent cache, already gathered to the B new nodes (None at
            the first level, where every parent is the context itself).
        tokens: ``(B,)`` the token each new node appends.

    Returns:
        The B nodes' caches and the log-probabilities ``(M, B, 256)`` of the token after each.
    """
    num_models = p["embed"].shape[0]
    batch = tokens.shape[0]
    depth = 0 if parents is None else parents.keys[0].shape[3]
    position = context.length + depth
    if position >= shape.context:
        raise ValueError(f"context and candidate exceed the model's context of {shape.context} tokens")
    heads, hw = shape.heads, shape.head_width
    x = _embed(p, tokens.view(1, batch).expand(num_models, batch), torch.tensor(position, device=tokens.device))
    scale = 1.0 / math.sqrt(hw)
    new_keys, new_values = [], []
    for layer in range(shape.layers):
        h = _layer_norm(x, p[f"{layer}.ln1.w"], p[f"{layer}.ln1.b"])
        q, k, v = _matmul(h, p[f"{layer}.qkv"]).view(num_models, batch, 3, heads, hw).unbind(2)  # (M, B, H, hw)
        own_keys, own_values = k.unsqueeze(3), v.unsqueeze(3)
        if parents is not None:
            own_keys = torch.cat([parents.keys[layer], own_keys], dim=3)
            own_values = torch.cat([parents.values[layer], own_values], dim=3)
        new_keys.append(own_keys)
        new_values.append(own_values)
        # Scores against the shared context (never copied per node) and against the node's own tokens.
        shared = torch.einsum("mbhd,mhtd->mbht", q, context.keys[layer]) * scale
        own = torch.einsum("mbhd,mbhtd->mbht", q, own_keys) * scale
        weights = torch.softmax(torch.cat([shared, own], dim=-1), dim=-1)
        attended = torch.einsum("mbht,mhtd->mbhd", weights[..., : context.length], context.values[layer])
        attended = attended + torch.einsum("mbht,mbhtd->mbhd", weights[..., context.length:], own_values)
        x = x + _matmul(attended.reshape(num_models, batch, shape.width), p[f"{layer}.out"])
        x = x + _mlp(p, layer, x)
    return NodeCache(new_keys, new_values), torch.log_softmax(_logits(p, x).float(), dim=-1)


def sequence_log_probs(p: Params, tokens: torch.Tensor, shape: TransformerShape) -> torch.Tensor:
    """Log-probability of each next token: ``(M, B, T-1)`` for ``tokens`` ``(M, B, T)``."""
    logits = forward(p, tokens[:, :, :-1], shape)
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, :, 1:].unsqueeze(-1)).squeeze(-1)
