"""Compute sample-independent layers once per batch instead of once per sample.

The ``local`` variant of a vectorized graph repeats the model input over the samples before the
first layer (``Reshape(Expand(Unsqueeze(x, 0), [S, B, ...]), [S*B, ...])``) and then runs that
layer's mean and variance (``x·mu``, ``x²·sigma²``) on S*B identical copies of each row: S times
the work of the deterministic layer. This module rewrites such a graph so that every row-wise
operation whose inputs are all "repeated" tensors (or constants) runs on the B rows of the batch,
and the repetition happens only where a repeated tensor meets per-sample data:

* ``Op(T, Y)`` for an elementwise ``Op`` (Add, Sub, Mul, Div), ``T`` repeated (base ``T0`` of
  shape ``[B, ...]``) and ``Y`` per-sample ``[S*B, ...]``, becomes
  ``Reshape(Op(T0, Reshape(Y, [-1, B, ...])), [-1, ...])``: numpy broadcasting repeats ``T0``
  for free inside the op;
* any other reader of a repeated tensor gets it materialized with ``Tile(T0, [S, 1, ...])``.

Row-wise operations hoisted: ``Gemm`` (A repeated, not transposed, B and C constant), ``MatMul``
(A repeated, B a constant matrix), elementwise unary ops, and elementwise binary ops of repeated
tensors and constants that broadcast along rows only.

The rewrite is an optimization only: the backend checks once, on its first call, that the
rewritten graph gives the original graph's outputs (to float rounding) and otherwise keeps the
original graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from illia_export.runtime.backends.onnx_prune import keep_needed

_UNARY = {
    "Relu", "Sqrt", "Neg", "Abs", "Exp", "Log", "Tanh", "Sigmoid", "Softplus", "Identity", "Erf",
    "LeakyRelu", "Elu", "Selu", "Gelu", "HardSigmoid", "Softsign", "Reciprocal",
}  # fmt: skip
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow"}


def _attr(node, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def hoist_sample_broadcast(model_bytes_or_path, input_names: list[str]) -> bytes | None:
    """The rewritten graph (serialized), or None when the graph has no repeated model input or
    nothing to hoist."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = (
        onnx.load(model_bytes_or_path)
        if isinstance(model_bytes_or_path, str)
        else onnx.load_from_string(model_bytes_or_path)
    )
    graph = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        return None
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        return None
    ranks: dict[str, int] = {}
    dims: dict[str, list] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    initializers = {t.name: t for t in graph.initializer}
    for name, t in initializers.items():
        ranks[name] = len(t.dims)
        dims[name] = list(t.dims)
    constant = set(initializers)
    consumers: dict[str, list] = {}
    producer: dict[str, Any] = {}
    for node in graph.node:
        for i in node.input:
            if i:
                consumers.setdefault(i, []).append(node)
        for o in node.output:
            producer[o] = node
        ins = [i for i in node.input if i]
        if node.op_type == "Constant" or (ins and all(i in constant for i in ins)):
            constant.update(o for o in node.output if o)

    def axes_of(node) -> list[int] | None:
        if len(node.input) > 1 and node.input[1]:
            src = node.input[1]
            if src in initializers:
                return [int(v) for v in numpy_helper.to_array(initializers[src]).ravel()]
            p = producer.get(src)
            if p is not None and p.op_type == "Constant":
                return [int(v) for v in numpy_helper.to_array(_attr(p, "value")).ravel()]
            return None
        a = _attr(node, "axes")
        return list(a) if a is not None else None

    def ones_const(name: str) -> bool:
        """A constant tensor of ones (the trailing repeats of a Tile over the sample axis)."""
        if name in initializers:
            return bool(np.all(numpy_helper.to_array(initializers[name]) == 1))
        p = producer.get(name)
        if p is not None and p.op_type == "Constant":
            return bool(np.all(numpy_helper.to_array(_attr(p, "value")) == 1))
        return False

    # 1. repeated model inputs: R = Reshape(Expand(Unsqueeze(x, [0]), shape), ...)
    base: dict[str, str] = {}  # repeated tensor -> its [B, ...] base
    s_source: str | None = None  # a 1-D int64 tensor whose first element is S (the Expand shape)
    for x in input_names:
        for u in consumers.get(x, []):
            if u.op_type != "Unsqueeze" or axes_of(u) != [0]:
                continue
            e_nodes = consumers.get(u.output[0], [])
            if len(e_nodes) != 1 or e_nodes[0].op_type != "Expand":
                continue
            r_nodes = consumers.get(e_nodes[0].output[0], [])
            if (
                len(r_nodes) != 1
                or r_nodes[0].op_type != "Reshape"
                or ranks.get(r_nodes[0].output[0]) != ranks.get(x)
            ):
                continue
            base[r_nodes[0].output[0]] = x
            s_source = e_nodes[0].input[1]
        # torch.export captures fold with repeat: Tile(x, [S, 1, ...]), maybe after a no-op Expand
        for first in consumers.get(x, []):
            t = first
            if t.op_type == "Expand":
                nxt = consumers.get(t.output[0], [])
                if len(nxt) != 1:
                    continue
                t = nxt[0]
            if t.op_type != "Tile" or ranks.get(t.output[0]) != ranks.get(x):
                continue
            reps = producer.get(t.input[1])
            if reps is None or reps.op_type != "Concat" or len(reps.input) < 1:
                continue
            tail = reps.input[1:]
            if tail and not all(ones_const(i) for i in tail):
                continue
            base[t.output[0]] = x
            s_source = t.input[1]
    if not base or s_source is None:
        return None

    def row_broadcast_const(name: str, rank: int) -> bool:
        """A constant that broadcasts against a [rows, ...] tensor of `rank` along rows only."""
        d = dims.get(name)
        if d is None:
            return False
        return len(d) < rank or (len(d) == rank and d[0] == 1)

    # 2. hoist row-wise nodes whose non-constant inputs are all repeated
    hoisted: dict[int, Any] = {}  # id(original node) -> new node on the bases
    for node in graph.node:
        ins = [i for i in node.input if i]
        rep = [i for i in ins if i in base]
        if not rep or any(i not in base and i not in constant for i in ins):
            continue
        op = node.op_type
        r = ranks.get(rep[0])
        ok = False
        if op == "Gemm":
            ok = ins[0] in base and not _attr(node, "transA", 0) and all(i in constant for i in ins[1:])
            ok = ok and (len(ins) < 3 or row_broadcast_const(ins[2], 2))
        elif op == "MatMul":
            ok = ins[0] in base and ins[1] in constant and ranks.get(ins[1]) == 2
        elif op in _UNARY:
            ok = True
        elif op in _BINARY and r is not None:
            ok = all(i in base or row_broadcast_const(i, r) for i in ins)
            if op == "Pow":
                ok = ok and ins[0] in base and ins[1] in constant
        if not ok:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = (node.name or op) + "__per_batch"
        for k, i in enumerate(new.input):
            if i in base:
                new.input[k] = base[i]
        for k, o in enumerate(new.output):
            new.output[k] = o + "__per_batch"
            base[o] = new.output[k]
        hoisted[id(node)] = new
    if not hoisted:
        return None

    # 3. rebuild: hoisted nodes on the bases; readers of repeated tensors broadcast or Tile them
    extra_inits = []
    nodes: list = []
    tiled: dict[str, str] = {}  # repeated tensor -> name of its materialized [S*B, ...] version
    s_1d = "__illia_hoist_S"
    s_made = False

    def const_i64(name: str, values: list[int]):
        extra_inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def ensure_s():
        nonlocal s_made
        if not s_made:
            nodes.append(
                helper.make_node(
                    "Slice",
                    [s_source, const_i64("__illia_hoist_0", [0]), const_i64("__illia_hoist_1", [1])],
                    [s_1d],
                )
            )
            s_made = True

    originals = set(base) - {v for v in base.values()}
    chain_outputs = {
        n.output[0] for n in graph.node if n.output and n.output[0] in base and id(n) not in hoisted
    }

    def materialize(t: str) -> str:
        if t in chain_outputs:  # a repeated input itself: the original Reshape(Expand(...)) produces it
            return t
        if t not in tiled:
            r = ranks.get(t)
            if r is None:
                raise ValueError(f"unknown rank of {t}")
            ensure_s()
            reps = t + "__repeats"
            nodes.append(
                helper.make_node("Concat", [s_1d, const_i64(t + "__ones", [1] * (r - 1))], [reps], axis=0)
            )
            nodes.append(helper.make_node("Tile", [base[t], reps], [t]))
            tiled[t] = t
        return tiled[t]

    for node in graph.node:
        if id(node) in hoisted:
            nodes.append(hoisted[id(node)])
            continue
        rep_inputs = [i for i in node.input if i in base and i in originals]
        if not rep_inputs:
            nodes.append(node)
            continue
        ins = list(node.input)
        if node.op_type == "Shape" and not node.attribute and ranks.get(ins[0]):
            # Shape(T) = [rows(T0) * S, rest of T0's shape]: no need to repeat T for its shape
            t0, r, o = base[ins[0]], ranks[ins[0]], node.output[0]
            ensure_s()
            nodes += [
                helper.make_node("Shape", [t0], [o + "__shp0"]),
                helper.make_node(
                    "Slice",
                    [o + "__shp0", const_i64(o + "__0", [0]), const_i64(o + "__1", [1])],
                    [o + "__rows0"],
                ),
                helper.make_node("Mul", [o + "__rows0", s_1d], [o + "__rows"]),
                helper.make_node(
                    "Slice",
                    [o + "__shp0", const_i64(o + "__1b", [1]), const_i64(o + "__r", [r])],
                    [o + "__rest"],
                ),
                helper.make_node("Concat", [o + "__rows", o + "__rest"], [o], axis=0),
            ]
            continue
        if (
            node.op_type in ("Add", "Sub", "Mul", "Div")
            and len(ins) == 2
            and len(rep_inputs) == 1
            and ranks.get(rep_inputs[0])
        ):
            t = rep_inputs[0]
            y = ins[1] if ins[0] == t else ins[0]
            r = ranks[t]
            t0 = base[t]
            shp0, shp3, y3, z3, tail, shp_out = (
                f"{node.output[0]}__{k}" for k in ("shp0", "shp3", "y3", "z3", "tail", "shp")
            )
            nodes += [
                helper.make_node("Shape", [t0], [shp0]),
                helper.make_node("Concat", [const_i64(shp3 + "_m1", [-1]), shp0], [shp3], axis=0),
                helper.make_node("Reshape", [y, shp3], [y3]),
                helper.make_node(node.op_type, [t0, y3] if ins[0] == t else [y3, t0], [z3]),
                helper.make_node(
                    "Slice", [shp0, const_i64(tail + "_1", [1]), const_i64(tail + "_r", [r])], [tail]
                ),
                helper.make_node("Concat", [const_i64(shp_out + "_m1", [-1]), tail], [shp_out], axis=0),
                helper.make_node("Reshape", [z3, shp_out], [node.output[0]]),
            ]
            continue
        for t in rep_inputs:
            materialize(t)
        nodes.append(node)
    for out in graph.output:
        if out.name in base and out.name in originals:
            materialize(out.name)
    # keep only what the outputs need (the dropped per-sample layers, unused chains)
    kept, needed = keep_needed(nodes, (o.name for o in graph.output))
    inits = [t for t in list(graph.initializer) + extra_inits if t.name in needed]
    g = helper.make_graph(kept, graph.name, list(graph.input), list(graph.output), initializer=inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m.SerializeToString()
