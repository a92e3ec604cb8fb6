"""Split an ONNX graph into a noise-only prefix and the rest, for the ``bank`` strategy.

With a fixed noise bank, every node whose inputs derive only from the noise inputs and from
constants (``w = mu + softplus(rho) * eps``, its transposes and reshapes) computes the same
values on every call. The prefix graph computes those values once per bank chunk; the suffix
graph takes them as inputs next to the model inputs. Outputs equal the full graph's to float
rounding (ORT may fuse the split graph's kernels differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SplitGraphs:
    """Serialized prefix/suffix models and the tensors that cross between them."""

    prefix: bytes
    suffix: bytes
    noise_names: list[str]
    frontier: list[str]


def _has_subgraph(node) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def split_noise_prefix(path: Path, input_names: list[str], noise_names: list[str]) -> SplitGraphs | None:
    """Build the prefix/suffix pair of the graph at `path`, or None when nothing is gained
    (no noise-only node) or the graph is unsuitable (control flow with subgraphs, random
    ops, noise-only graph outputs, unknown tensor types)."""
    import onnx
    from onnx import helper, shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    if any(_has_subgraph(n) for n in graph.node):
        return None
    initializers = {t.name: t for t in graph.initializer}
    constant = set(initializers)
    noisy = set(noise_names)
    prefix_nodes, suffix_nodes, const_nodes = [], [], []
    for node in graph.node:
        if node.op_type.startswith("Random") or node.domain not in ("", "ai.onnx"):
            return None
        ins = [i for i in node.input if i]
        if all(i in constant for i in ins):
            const_nodes.append(node)
            constant.update(o for o in node.output if o)
        elif all(i in constant or i in noisy for i in ins):
            prefix_nodes.append(node)
            noisy.update(o for o in node.output if o)
        else:
            suffix_nodes.append(node)
    if not prefix_nodes:
        return None
    graph_outputs = [o.name for o in graph.output]
    if any(o in noisy for o in graph_outputs):
        return None
    frontier: list[str] = []
    for node in suffix_nodes:
        for i in node.input:
            if i in noisy and i not in frontier:
                frontier.append(i)
    if not frontier:
        return None
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; without types we cannot declare inputs
        return None
    infos = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    types = {name: vi.type.tensor_type.elem_type for name, vi in infos.items()}
    if any(not types.get(f) for f in frontier):
        return None

    def used_by(nodes) -> set[str]:
        return {i for n in nodes for i in n.input if i}

    def make(nodes, inputs, outputs, name):
        needed = used_by(nodes)
        consts = [n for n in const_nodes if any(o in needed for o in n.output)]
        # constant nodes may feed each other: close over their inputs
        changed = True
        while changed:
            changed = False
            more = used_by(consts)
            for n in const_nodes:
                if n not in consts and any(o in more for o in n.output):
                    consts.append(n)
                    changed = True
        order = {id(n): k for k, n in enumerate(graph.node)}
        all_nodes = sorted(consts + list(nodes), key=lambda n: order[id(n)])
        needed = used_by(all_nodes)
        inits = [initializers[k] for k in initializers if k in needed]
        g = helper.make_graph(all_nodes, name, inputs, outputs, initializer=inits)
        m = helper.make_model(g, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        return m.SerializeToString()

    by_name = {i.name: i for i in graph.input}
    # typed and, where inference knows it, shaped: later rewrites of the suffix (ort_conv) read
    # the static dims of these inputs
    frontier_info = []
    for f in frontier:
        info = helper.make_tensor_value_info(f, types[f], None)
        if infos[f].type.tensor_type.HasField("shape"):
            info.type.CopyFrom(infos[f].type)
        frontier_info.append(info)
    prefix = make(
        prefix_nodes, [by_name[n] for n in noise_names if n in by_name], frontier_info, "noise_prefix"
    )
    suffix = make(
        suffix_nodes, [by_name[n] for n in input_names] + frontier_info, list(graph.output), "noise_suffix"
    )
    return SplitGraphs(prefix=prefix, suffix=suffix, noise_names=list(noise_names), frontier=frontier)
