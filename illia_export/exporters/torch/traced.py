"""ONNX export of *traced* TorchScript archives: replace the traced noise draws by inputs.

Tracing bakes each layer's ``randn_like`` into the graph, so noise cannot be injected through
``set_noise``. The legacy ONNX exporter turns every draw into a ``RandomNormalLike`` node whose
input is the distribution's ``rho`` initializer (named ``<path>.rho``); this pass replaces each
such node by a graph input named after the distribution. The result is a per-call graph (a
trace has no sample axis). Validation replays the global torch generator: with the same seed,
``torch.randn(shape)`` in node order yields exactly the eps the traced module drew.
"""

from __future__ import annotations

import io

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError
from illia_export.exporters.verify.same_noise import Comparison

RHO_SUFFIX = ".rho"


def is_traced(script, noise) -> bool:
    """True when the archive's Bayesian layers were traced (their forward ignores injected noise).

    A scripted layer's forward reads its distributions' ``use_noise`` flag (directly, or after
    TorchScript inlined ``sample()``); a traced one recorded a fixed ``randn_like`` path and never
    does. (Looking for ``randn_like`` alone would misfire: exporting a scripted model to ONNX
    inlines the layer classes' shared graphs in place.)
    """
    modules = dict(script.named_modules())
    for site in noise.bayesian_layers:
        graph = str(modules[site.path].graph)
        if "use_noise" not in graph and "sample" not in graph:
            return True
    return False


def replace_random_nodes(model, noise_sites) -> list[str]:
    """Turn RandomNormalLike(rho of distribution P) into graph input ``eps_P``; return the names in node order."""
    import onnx
    from onnx import TensorProto, helper

    by_param = {s.parameter: s for s in noise_sites}
    graph = model.graph
    order: list[str] = []
    keep = []
    renames: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            keep.append(node)
            continue
        source = node.input[0]
        param = source[: -len(RHO_SUFFIX)] if source.endswith(RHO_SUFFIX) else None
        if param not in by_param:
            raise ExportError(
                f"cannot tell which distribution the traced noise draw on {source!r} belongs to"
            )
        name = mf.noise_input_name(param)
        if name in order:
            raise ExportError(f"distribution {param!r} draws noise twice in the traced graph")
        order.append(name)
        renames[node.output[0]] = name
        graph.input.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, list(by_param[param].shape))
        )
    del graph.node[:]
    graph.node.extend(keep)
    for node in graph.node:
        for i, inp in enumerate(node.input):
            if inp in renames:
                node.input[i] = renames[inp]
    for out in graph.output:
        if out.name in renames:
            raise ExportError("a traced graph output is raw noise")
    missing = [
        mf.noise_input_name(s.parameter) for s in noise_sites if mf.noise_input_name(s.parameter) not in order
    ]
    if missing:
        raise ExportError(f"the traced graph has no noise draw for {missing}")
    onnx.checker.check_model(model)
    return order


def export_traced_onnx(
    prep, path, manifest: mf.Manifest, opset: int, validate: bool, tolerance: float, draws: int, resize
):
    """Write the per-call ONNX graph of a traced archive to `path` and fill `manifest`."""
    import onnx
    import onnxruntime as ort
    import torch

    if any(site.layer_type == "LSTM" for site in prep.noise.layers):
        raise ExportError(
            "this TorchScript archive was traced: the trace unrolled the LSTM loop to the example's sequence "
            "length. Save a scripted model instead (torch.jit.save(torch.jit.script(model), path))"
        )
    dyn = {n: axes for n, axes in zip(prep.input_names, prep.dynamic)}
    for spec in manifest.outputs:
        dyn[spec.name] = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
    buf = io.BytesIO()
    torch.onnx.export(
        prep.script,
        tuple(prep.inputs),
        buf,
        dynamo=False,
        input_names=prep.input_names,
        output_names=prep.output_names,
        dynamic_axes=dyn,
        opset_version=opset,
        do_constant_folding=False,
    )
    model = onnx.load_from_string(buf.getvalue())
    order = replace_random_nodes(model, prep.noise.noise)
    by_name = {mf.noise_input_name(s.parameter): s for s in prep.noise.noise}
    manifest.noise = [mf.NoiseSpec(n, by_name[n].parameter, list(by_name[n].shape)) for n in order]
    onnx.save(model, str(path))
    if not validate:
        return
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cmp = Comparison(prep.output_names, tolerance)
    base = prep.inputs[0].shape[0]
    reference = prep.source.fresh_reference()
    for b_i, batch in enumerate([base, base + 2]):
        inputs = resize(prep, batch)
        cmp.note_batch(batch)
        for k in range(draws):
            seed = 1000 * (b_i + 1) + k
            torch.manual_seed(seed)
            with torch.no_grad():
                out = reference(*inputs)
            expected = [out] if isinstance(out, torch.Tensor) else list(out)
            torch.manual_seed(seed)
            noise = [torch.randn(list(by_name[n].shape)).numpy() for n in order]
            feeds = dict(zip(prep.input_names, [x.numpy() for x in inputs]))
            feeds.update(dict(zip(order, noise)))
            cmp.add(sess.run(None, feeds), [np.asarray(e) for e in expected])
    manifest.validation = cmp.result(draws)
