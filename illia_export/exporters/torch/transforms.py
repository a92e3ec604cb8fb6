"""Draws that need more than ``affine`` / ``uniform`` / ``bernoulli``: their in-graph maths.

:mod:`.draws` intercepts these calls; this module says which standard-normal input each one
needs and how the graph turns it into the call's result. All start from ``U = Φ(z)``:

=================================================  ==============================================
call                                               in-graph form
=================================================  ==============================================
``F.scaled_dot_product_attention(dropout_p>0)``    torch's reference maths (the SDPA docs):
                                                   ``softmax(q kᵀ scale + bias)``, dropout mask
                                                   ``U >= p`` on the weights, ``/ (1-p)``, ``@ v``
``Tensor.exponential_(λ)``                         ``-log(U) / λ``
``F.gumbel_softmax(logits, tau, hard)``            Gumbel noise ``-log(-log U)``, softmax, and for
                                                   ``hard`` the straight-through one-hot
``torch.multinomial`` (``Categorical.sample``)     Gumbel-max: ``argmax(log w + G)`` per draw with
                                                   replacement, Gumbel-top-k without
=================================================  ==============================================

Why decompose attention: the fused kernel draws its dropout mask inside one op, which no graph
input can feed; the maths form is the same distribution (the kernel is an optimization of it).
``U`` is clamped to ``[1e-7, 1 - 2**-24]`` before a logarithm, so a float32 ``Φ(z)`` of 0 or 1
never gives an infinite sample (it changes the tails at probability ~1e-7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_U_LOW, _U_HIGH = 1e-7, 1.0 - 2.0**-24

_SDPA_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


def uniform(z: torch.Tensor) -> torch.Tensor:
    """``Φ(z)``, kept away from 0 and 1 (a logarithm follows)."""
    return (0.5 * (1.0 + torch.erf(z * _SQRT_HALF))).clamp(_U_LOW, _U_HIGH)


def gumbel(z: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)``."""
    return -torch.log(-torch.log(uniform(z)))


# ------------------------------------------------------------------------------------- attention
def sdpa_args(args: Sequence[Any], kwargs: dict) -> dict:
    return dict(_SDPA_DEFAULTS, **dict(zip(_SDPA_NAMES, args)), **kwargs)


def sdpa_mask_shape(bound: dict) -> tuple[int, ...]:
    """Shape of the attention weights ``[..., L, S]`` (what the dropout mask covers)."""
    q, k, mask = bound["query"], bound["key"], bound["attn_mask"]
    lead_k = tuple(k.shape[:-2])
    if bound["enable_gqa"]:
        lead_k = lead_k[:-1] + (q.shape[-3],)
    shape = torch.broadcast_shapes(tuple(q.shape[:-2]) + (q.shape[-2], k.shape[-2]), lead_k + (1, 1))
    if isinstance(mask, torch.Tensor):
        shape = torch.broadcast_shapes(shape, tuple(mask.shape))
    return tuple(shape)


def sdpa(bound: dict, z: torch.Tensor) -> torch.Tensor:
    """``scaled_dot_product_attention`` in torch's reference form, its dropout mask from `z`."""
    q, k, v = bound["query"], bound["key"], bound["value"]
    p = float(bound["dropout_p"])
    length, source = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if bound["scale"] is None else bound["scale"]
    if bound["enable_gqa"]:
        k = k.repeat_interleave(q.size(-3) // k.size(-3), -3)
        v = v.repeat_interleave(q.size(-3) // v.size(-3), -3)
    weights = q @ k.transpose(-2, -1) * scale
    if bound["is_causal"]:
        causal = torch.ones(length, source, dtype=torch.bool, device=q.device).tril(diagonal=0)
        weights = weights.masked_fill(causal.logical_not(), float("-inf"))
    mask = bound["attn_mask"]
    if mask is not None:
        if mask.dtype == torch.bool:
            weights = weights.masked_fill(mask.logical_not(), float("-inf"))
        else:
            weights = weights + mask
    weights = torch.softmax(weights, dim=-1)
    keep = (0.5 * (1.0 + torch.erf(z * _SQRT_HALF)) >= p).to(weights.dtype)
    weights = weights * keep / (1.0 - p) if p < 1.0 else weights * 0.0
    return weights @ v


# ------------------------------------------------------------------------------ Gumbel family
def exponential(target: torch.Tensor, args: Sequence[Any], kwargs: dict, z: torch.Tensor) -> torch.Tensor:
    rate = args[1] if len(args) > 1 else kwargs.get("lambd", 1.0)
    return (-torch.log(uniform(z)) / rate).to(target.dtype)


def gumbel_softmax_args(args: Sequence[Any], kwargs: dict) -> dict:
    names = ("logits", "tau", "hard", "eps", "dim")
    return dict({"tau": 1.0, "hard": False, "eps": 1e-10, "dim": -1}, **dict(zip(names, args)), **kwargs)


def gumbel_softmax(bound: dict, z: torch.Tensor) -> torch.Tensor:
    """``F.gumbel_softmax`` with its Gumbel noise from `z` (same straight-through estimator)."""
    logits, dim = bound["logits"], int(bound["dim"])
    soft = torch.softmax((logits + gumbel(z).to(logits.dtype)) / bound["tau"], dim=dim)
    if not bound["hard"]:
        return soft
    index = soft.argmax(dim, keepdim=True)
    positions = torch.arange(soft.shape[dim], device=soft.device)
    shape = [1] * soft.dim()
    shape[dim] = soft.shape[dim]
    hard = (positions.reshape(shape) == index).to(soft.dtype)
    return hard - soft.detach() + soft


def multinomial_args(args: Sequence[Any], kwargs: dict) -> tuple[torch.Tensor, int, bool]:
    names = ("input", "num_samples", "replacement")
    bound = dict({"replacement": False}, **dict(zip(names, args)), **kwargs)
    return bound["input"], int(bound["num_samples"]), bool(bound["replacement"])


def multinomial_shape(weights: torch.Tensor, num: int, replacement: bool) -> tuple[int, ...]:
    lead, classes = tuple(weights.shape[:-1]), int(weights.shape[-1])
    return (*lead, num, classes) if replacement and num > 1 else (*lead, classes)


def multinomial(weights: torch.Tensor, num: int, replacement: bool, z: torch.Tensor) -> torch.Tensor:
    """Indices drawn with probability proportional to `weights`: Gumbel-max (with replacement,
    one independent Gumbel vector per draw) or Gumbel-top-k (without replacement)."""
    scores = torch.log(weights)
    if replacement and num > 1:
        return (scores.unsqueeze(-2) + gumbel(z)).argmax(-1)
    perturbed = scores + gumbel(z)
    # top-k as repeated argmax: ties (zero noise) resolve to the first index in torch and in ONNX
    # alike, where topk's order of equal values differs between backends
    picks = []
    positions = torch.arange(perturbed.shape[-1], device=perturbed.device)
    for _ in range(num):
        index = perturbed.argmax(-1, keepdim=True)
        picks.append(index)
        perturbed = perturbed.masked_fill(positions == index, float("-inf"))
    return torch.cat(picks, dim=-1)
