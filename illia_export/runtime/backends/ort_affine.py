"""Feed an ONNX graph its sampled weights instead of its noise (``fresh`` on the CPU).

An exported Bayesian layer turns its noise input into weights with ``Add(mu, Mul(sigma, eps))``
where ``sigma = softplus(rho)`` and ``mu`` derive from constants only. Evaluated by the graph,
that costs a full pass over the noise (written by the generator, read by ``Mul``, written
again, read by ``Add``, written again) on every call. This module finds that pattern for each
noise input, evaluates ``mu`` and ``sigma`` once, and rewrites the graph so that the tensor
``Add`` produced becomes a graph input: the runtime's generator then writes ``mu + sigma * eps``
directly (the compiled noise kernel does it in the same pass that draws ``eps``), and memory is
touched once. Noise inputs that do not match keep their ``eps`` input.

The values are those of the original graph: ``mu + sigma * eps`` rounded twice (product, then
sum), as ``Mul`` then ``Add`` round them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from illia_export.runtime.backends.onnx_prune import keep_needed


@dataclass
class AffineSite:
    """One noise input whose only use is ``Add(mu, Mul(sigma, eps))`` with constant mu/sigma."""

    noise: str  # the noise input's name
    weight: str  # the name of the Add's output (the sampled weight), a graph input after rewrite
    mu: np.ndarray  # as produced by the graph's constants (broadcastable to the noise)
    sigma: np.ndarray
    drop: tuple[str, str]  # output names of the Mul and Add nodes removed by the rewrite


def _has_subgraph(node) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def find_affine_sites(model, noise_names: list[str]) -> list[AffineSite]:
    """The noise inputs of `model` (an ``onnx.ModelProto``) used only through
    ``Add(mu, Mul(sigma, eps))`` with constant ``mu``/``sigma`` (evaluated here, float32)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if any(_has_subgraph(n) for n in graph.node):
        return []  # control flow may read the noise inside a body: leave such graphs alone
    initializers = {t.name: t for t in graph.initializer}
    constant = set(initializers)
    const_nodes = []
    consumers: dict[str, list] = {}
    for node in graph.node:
        ins = [i for i in node.input if i]
        for i in ins:
            consumers.setdefault(i, []).append(node)
        if node.op_type.startswith("Random") or node.domain not in ("", "ai.onnx"):
            continue
        if all(i in constant for i in ins):
            const_nodes.append(node)
            constant.update(o for o in node.output if o)
    outputs = {o.name for o in graph.output}

    def other(node, name):
        ins = [i for i in node.input if i]
        if len(ins) != 2 or ins.count(name) != 1:
            return None
        return ins[1] if ins[0] == name else ins[0]

    found = []
    for eps in noise_names:
        uses = consumers.get(eps, [])
        muls = [u for u in uses if u.op_type == "Mul"]
        # besides the Mul, only Shape may read eps (the sample count): w has the same shape
        if len(muls) != 1 or any(u.op_type not in ("Mul", "Shape") for u in uses) or eps in outputs:
            continue
        mul = muls[0]
        sigma = other(mul, eps)
        if sigma is None or sigma not in constant:
            continue
        uses2 = consumers.get(mul.output[0], [])
        if len(uses2) != 1 or uses2[0].op_type != "Add" or mul.output[0] in outputs:
            continue
        add = uses2[0]
        mu = other(add, mul.output[0])
        if mu is None or mu not in constant:
            continue
        found.append((eps, mul, add, sigma, mu))
    if not found:
        return []

    # evaluate the constants mu/sigma (initializers directly, else a small graph of constant nodes)
    wanted = sorted({n for f in found for n in (f[3], f[4]) if n not in initializers})
    values = {
        n: numpy_helper.to_array(initializers[n]) for f in found for n in (f[3], f[4]) if n in initializers
    }
    if wanted:
        import onnxruntime as ort

        needed = set(wanted)
        chosen = []
        for node in reversed(const_nodes):
            if any(o in needed for o in node.output):
                chosen.append(node)
                needed.update(i for i in node.input if i)
        chosen.reverse()
        inits = [initializers[k] for k in initializers if k in needed]
        # mu and sigma of a float32 graph are float32 (anything else is rejected below anyway)
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in wanted]
        g = helper.make_graph(chosen, "affine_constants", [], outs, initializer=inits)
        m = helper.make_model(g, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
        )
        values.update(zip(wanted, sess.run(wanted, {})))
    sites = []
    for eps, mul, add, sigma, mu in found:
        s, m_ = np.asarray(values[sigma]), np.asarray(values[mu])
        if s.dtype != np.float32 or m_.dtype != np.float32:
            continue
        sites.append(AffineSite(eps, add.output[0], m_, s, (mul.output[0], add.output[0])))
    return sites


def per_sample(value: np.ndarray, shape: tuple[int, ...], vectorized: bool) -> np.ndarray | None:
    """`value` broadcast to the noise's per-sample `shape` (contiguous float32), or None when it
    would depend on the sample axis or enlarge the noise."""
    v = value
    if vectorized:
        if v.ndim > len(shape) + 1:
            return None
        if v.ndim == len(shape) + 1:
            if v.shape[0] != 1:
                return None
            v = v[0]
    if v.ndim > len(shape):
        return None
    try:
        if np.broadcast_shapes(v.shape, shape) != tuple(shape):
            return None
    except ValueError:
        return None
    return np.array(np.broadcast_to(v, shape), dtype=np.float32, order="C")  # own, writable copy


def rewrite(model, sites: list[AffineSite]) -> bytes:
    """`model` with each site's Mul/Add removed and its weight tensor a graph input (in place of
    the noise input; ``Shape`` nodes that read the noise read the weight), dead nodes and
    initializers pruned."""
    import copy

    from onnx import helper

    graph = model.graph
    drop = {o for s in sites for o in s.drop}
    by_noise = {s.noise: s for s in sites}
    inputs = []
    for inp in graph.input:
        site = by_noise.get(inp.name)
        if site is None:
            inputs.append(inp)
        else:
            w = helper.make_tensor_value_info(site.weight, inp.type.tensor_type.elem_type, None)
            w.type.CopyFrom(inp.type)
            inputs.append(w)
    rename = {s.noise: s.weight for s in sites}
    nodes = []
    for n in graph.node:
        if any(o in drop for o in n.output):
            continue
        if any(i in rename for i in n.input):
            n = copy.deepcopy(n)
            for k, i in enumerate(n.input):
                n.input[k] = rename.get(i, i)
        nodes.append(n)
    # prune nodes nobody reads any more (sigma = softplus(rho) and friends)
    kept, needed = keep_needed(nodes, (o.name for o in graph.output))
    inits = [t for t in graph.initializer if t.name in needed]
    g = helper.make_graph(kept, graph.name, inputs, list(graph.output), initializer=inits)
    g.value_info.extend(vi for vi in graph.value_info if vi.name in needed)
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    for prop in model.metadata_props:
        m.metadata_props.add(key=prop.key, value=prop.value)
    return m.SerializeToString()
