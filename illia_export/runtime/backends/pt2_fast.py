"""Speed paths of the ``.pt2`` backend: fed weights, the bank's cached weights, grouped convolutions.

A ``.pt2`` ExportedProgram runs as a ``torch.fx.GraphModule`` in Python, so its graph can be
rewritten like the runtime's ONNX graphs (:mod:`.ort_affine`, :mod:`.ort_conv`), with no
session per sample count because torch takes the group count at run time:

* **Fed weights.** Where a noise input is used only as ``add(mu, mul(sigma, eps))`` (through
  the exporter's dtype ``to``) with ``mu``/``sigma`` computed from parameters alone, the
  rewritten module takes the sampled weights in that input's place, so the runtime's generator
  writes ``mu + sigma * eps`` in one pass (``fresh``) and a bank's weights are computed once per
  bank chunk (``bank``) instead of on every call (68 % of W1's ``.pt2`` time was that ``mul``/
  ``add``). ``mu``/``sigma`` are evaluated once from the graph's own nodes.
* **Grouped convolutions.** The exporter lowers a convolution with a sample axis on its weights
  to ``im2col`` + ``baddbmm``; the rewrite calls :func:`grouped_conv2d` instead: one
  ``conv2d`` with ``groups = S`` (or, where the input is the model input repeated over the
  samples, one ``conv2d`` of the batch with all S x O output channels).
The values are the original graph's: the weights are rounded as ``mul`` then ``add`` round them,
and the grouped convolution sums the same products in another order (float rounding). The
backend checks a rewritten module's first call against the original module and keeps the
original when they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def grouped_conv2d(x, w, bias, kernel, stride, padding, dilation, shared: bool):
    """The sampled 2-D convolution of ``nn/torch/conv.py``'s ``conv2d_sampled`` as one grouped ``conv2d``.

    Args:
        x: ``[S*B, C, H, W]`` sample-major, or ``[B, C, H, W]`` when `shared` (the same input for
            every sample).
        w: ``[S, O, C*kh*kw]`` (dense per sample; block-diagonal for ``groups > 1``).
        bias: broadcastable to ``[S, 1, O]``.

    Returns:
        ``[S*B, O, H', W']``.
    """
    import torch

    num_samples, out_ch = w.shape[0], w.shape[1]
    channels = w.shape[2] // (kernel[0] * kernel[1])
    weight = w.reshape(num_samples * out_ch, channels, kernel[0], kernel[1])
    b = bias.expand(num_samples, 1, out_ch).reshape(-1)
    if shared:
        y = torch.conv2d(x, weight, b, stride, padding, dilation, 1)
    else:
        xs = x.reshape(num_samples, -1, *x.shape[1:]).transpose(0, 1)
        xs = xs.reshape(xs.shape[0], num_samples * channels, x.shape[2], x.shape[3])
        y = torch.conv2d(xs, weight, b, stride, padding, dilation, num_samples)
    batch, _, oh, ow = y.shape
    y = y.reshape(batch, num_samples, out_ch * oh * ow).transpose(0, 1)
    return y.reshape(num_samples * batch, out_ch, oh, ow)


@dataclass
class Rewritten:
    """A rewritten module and what it takes in place of each noise input."""

    module: Any  # the rewritten module's forward (called without nn.Module's hooks)
    pairs: list[tuple[np.ndarray, np.ndarray] | None]  # per noise input: (mu, sigma) when fed weights
    tensors: list[Any]  # the same (mu, sigma) as torch tensors on the module's device, or None
    convs: int = 0  # sampled convolutions now grouped
    verified: bool | None = None  # checked against the original module: None not yet


def _aten(name: str):
    import torch

    op, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, op), overload)


def _fetch(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _constants(graph) -> set:
    """Nodes whose value depends on the module's parameters and buffers only."""
    const: set = set()
    for node in graph.nodes:
        if node.op == "get_attr":
            const.add(node)
        elif node.op == "call_function" and not node.is_impure():
            deps = node.all_input_nodes
            if deps and all(d in const for d in deps):
                const.add(node)
    return const


def _evaluate(gm, node, cache: dict):
    """The value of a constant node (parameters and buffers through pure ops)."""
    import torch
    from torch.fx.node import map_arg

    if node in cache:
        return cache[node]
    if node.op == "get_attr":
        value = _fetch(gm, node.target)
    else:
        args = map_arg(node.args, lambda n: _evaluate(gm, n, cache))
        kwargs = map_arg(node.kwargs, lambda n: _evaluate(gm, n, cache))
        with torch.no_grad():
            value = node.target(*args, **kwargs)
    cache[node] = value
    return value


def _prune(graph, candidates) -> None:
    """Erase the pure call_function nodes among `candidates` (and what only they read) that
    nobody uses any more."""
    pending = list(candidates)
    while pending:
        node = pending.pop()
        if node.graph is not graph or node.users or node.op != "call_function" or node.is_impure():
            continue
        inputs = node.all_input_nodes
        graph.erase_node(node)
        pending.extend(inputs)


def _feed_weights(gm, noise_nodes, shapes, vectorized, const) -> tuple[list, list]:
    """Reroute every noise input used only as ``add(mu, mul(sigma, eps))`` to take the sum."""
    from illia_export.runtime.backends.ort_affine import per_sample

    mul_t, add_t, to_t = _aten("mul.Tensor"), _aten("add.Tensor"), _aten("to.dtype")
    check, size = _aten("_assert_tensor_metadata.default"), _aten("sym_size.int")
    pairs: list = [None] * len(noise_nodes)
    tensors: list = [None] * len(noise_nodes)
    cache: dict = {}
    for k, (p, shape) in enumerate(zip(noise_nodes, shapes)):
        # shape reads (the sample count) and the shape/dtype checks (torch.export's guards) read
        # the input too; the weights that take its place have the same shape and dtype
        uses = [
            u
            for u in p.users
            if u.target not in (check, size) and not (u.op == "call_module" and u.target == "_guards_fn")
        ]
        if len(uses) != 1:
            continue
        src = p
        if uses[0].target is to_t:
            src = uses[0]
            uses = list(src.users)
            if len(uses) != 1:
                continue
        # ``eps * 1.0 + 0.0`` (a library's ``normal_(mean=0, std=1)``) passes the weights through unchanged
        while (
            len(uses) == 1
            and uses[0].target in (mul_t, add_t)
            and len(uses[0].args) == 2
            and not uses[0].kwargs
        ):
            step, other = uses[0], uses[0].args[1] if uses[0].args[0] is src else uses[0].args[0]
            neutral = 1.0 if step.target is mul_t else 0.0
            if isinstance(other, bool) or not isinstance(other, (int, float)) or other != neutral:
                break
            src, uses = step, list(step.users)
        if len(uses) != 1:
            continue
        mul = uses[0]
        if mul.target is not mul_t or mul.kwargs or len(mul.args) != 2 or list(mul.args).count(src) != 1:
            continue
        sigma = mul.args[1] if mul.args[0] is src else mul.args[0]
        adds = list(mul.users)
        if sigma not in const or len(adds) != 1 or adds[0].target is not add_t or adds[0].kwargs:
            continue
        add = adds[0]
        if len(add.args) != 2 or list(add.args).count(mul) != 1:
            continue
        mu = add.args[1] if add.args[0] is mul else add.args[0]
        if mu not in const:
            continue
        mu_t, sigma_t = _evaluate(gm, mu, cache), _evaluate(gm, sigma, cache)
        if mu_t.dtype != sigma_t.dtype or str(mu_t.dtype) != "torch.float32":
            continue
        mu_np = per_sample(mu_t.detach().cpu().numpy(), tuple(shape), vectorized)
        sigma_np = per_sample(sigma_t.detach().cpu().numpy(), tuple(shape), vectorized)
        if mu_np is None or sigma_np is None:
            continue
        add.replace_all_uses_with(src)
        gm.graph.erase_node(add)
        gm.graph.erase_node(mul)
        _prune(gm.graph, [mu, sigma])
        pairs[k] = (mu_np, sigma_np)
        tensors[k] = (mu_t.detach(), sigma_t.detach())
    return pairs, tensors


def _sole(node, target):
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].target is target else None


def _group_convs(gm) -> int:
    """Replace every ``im2col`` + ``baddbmm`` sampled convolution by :func:`grouped_conv2d`."""
    im2col, transpose = _aten("im2col.default"), _aten("transpose.int")
    reshape, baddbmm, repeat = _aten("reshape.default"), _aten("baddbmm.default"), _aten("repeat.default")
    graph, count = gm.graph, 0
    for node in list(graph.nodes):
        if node.target is not im2col or len(node.args) != 5 or node.kwargs:
            continue
        x, kernel, dilation, padding, stride = node.args
        t1 = _sole(node, transpose)
        r1 = _sole(t1, reshape) if t1 is not None and tuple(t1.args[1:]) == (1, 2) else None
        mm = _sole(r1, baddbmm) if r1 is not None else None
        if mm is None or len(mm.args) != 3 or mm.kwargs or mm.args[1] is not r1:
            continue
        bias, wt = mm.args[0], mm.args[2]
        if not hasattr(wt, "target") or wt.target is not transpose or tuple(wt.args[1:]) != (1, 2):
            continue
        r2 = _sole(mm, reshape)
        t2 = _sole(r2, transpose) if r2 is not None else None
        out = _sole(t2, reshape) if t2 is not None and tuple(t2.args[1:]) == (1, 2) else None
        if out is None:
            continue
        shared = False
        if getattr(x, "target", None) is repeat and len(x.args) == 2 and list(x.args[1])[1:] == [1, 1, 1]:
            x, shared = x.args[0], True  # the model input repeated over the samples
        with graph.inserting_before(out):
            new = graph.call_function(
                grouped_conv2d,
                (x, wt.args[0], bias, list(kernel), list(stride), list(padding), list(dilation), shared),
            )
        out.replace_all_uses_with(new)
        _prune(graph, [out])
        count += 1
    return count


def rewrite(gm, num_inputs: int, shapes, vectorized: bool, feed: bool) -> Rewritten | None:
    """Rewrite `gm` (a fresh module of the program, changed in place): fed weights where `feed`,
    grouped convolutions where `vectorized`, flat calls always. None when the module's
    placeholders are not the runtime's inputs then noise."""
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != num_inputs + len(shapes):
        return None
    noise_nodes = placeholders[num_inputs:]
    pairs: list = [None] * len(shapes)
    tensors: list = [None] * len(shapes)
    if feed:
        pairs, tensors = _feed_weights(gm, noise_nodes, shapes, vectorized, _constants(graph))
    convs = _group_convs(gm) if vectorized else 0
    guards = _lift_checks(gm)
    graph.eliminate_dead_code()  # e.g. a library's KL term, computed on every call and never returned
    _plain_calls(gm)
    graph.lint()
    gm.recompile()
    return Rewritten(GuardedOnce(gm.forward, guards), pairs, tensors, convs)


def _lift_checks(gm):
    """Take the per-call checks out of the graph: ``_assert_tensor_metadata`` (dtype, device,
    layout: the runtime feeds float32 tensors on the module's device, and the manifest's input
    dtypes are checked against the graph at load) go; torch.export's shape guards (the
    ``_guards_fn`` call) are returned, for :class:`GuardedOnce`. Unread parameters (priors) go."""
    check = _aten("_assert_tensor_metadata.default")
    guards = None
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is check and not node.users:
            gm.graph.erase_node(node)
        elif node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            guards = getattr(gm, "_guards_fn", None)
            gm.graph.erase_node(node)
        elif node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    return guards


class GuardedOnce:
    """Calls `forward`, running torch.export's shape `guards` once per distinct set of argument
    shapes (they depend on shapes only) instead of on every call (the last 64 shape sets kept)."""

    def __init__(self, forward, guards) -> None:
        self.forward = forward
        self.guards = guards
        self._seen: dict[tuple, None] = {}

    def __call__(self, *args):
        if self.guards is not None:
            key = tuple(tuple(a.shape) for a in args)
            if key not in self._seen:
                self.guards(*args)
                self._seen[key] = None
                if len(self._seen) > 64:
                    del self._seen[next(iter(self._seen))]
        return self.forward(*args)


def _plain_calls(gm) -> None:
    """Take and return flat positional tensors (the order the runtime feeds and reads them):
    no pytree flattening of the arguments and outputs on every call, which with ``nn.Module``'s
    call machinery was most of a small per-call graph's time (W: 0.2x an eager loop)."""
    from torch.fx.graph import CodeGen

    gm.graph._codegen = CodeGen()


def sampled_weights(rewritten: Rewritten, noise: list) -> list:
    """``mu + sigma * eps`` (rounded as the graph's ``mul`` then ``add``) for the fed inputs, the
    noise itself for the others: what :attr:`Rewritten.module` takes for this `noise`."""
    import torch

    out = []
    for eps, pair in zip(noise, rewritten.tensors):
        if pair is None:
            out.append(eps)
        else:
            mu, sigma = pair
            out.append(torch.add(mu, torch.mul(sigma, eps)))
    return out
