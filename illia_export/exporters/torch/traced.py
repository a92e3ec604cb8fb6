"""ONNX export of *traced* TorchScript archives: replace the traced noise draws by inputs.

Tracing bakes each layer's ``randn_like`` into the graph, so noise cannot be injected through
``set_noise``. The legacy ONNX exporter turns every draw into a ``RandomNormalLike`` node whose
input is the distribution's ``rho`` initializer (named ``<path>.rho``); this pass replaces each
such node by a graph input named after the distribution. The result is a per-call graph (a
trace has no sample axis). It is a variant of the TorchScript capture strategy
(:mod:`.strategy_script`): its record goes through the same tail, whose same-noise validation
here replays the global torch generator: with the same seed, ``torch.randn(shape)`` in node
order yields exactly the eps the traced module drew.
"""

from __future__ import annotations

import io

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError
from illia_export.exporters.torch.capture_result import CaptureResult, ValidationStep

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


def traced_result(prep, manifest: mf.Manifest, opset: int, reference, dist_inputs) -> CaptureResult:
    """The record of a traced archive (a variant of the TorchScript strategy): a per-call ONNX graph
    whose noise inputs replace the traced draws, exported here (the noise order is the graph's)."""
    import onnx
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
    manifest.extra["traced_archive"] = True
    shapes = [tuple(by_name[n].shape) for n in order]
    base = int(prep.inputs[0].shape[0])
    steps = [ValidationStep(b, prep.resize(b), shapes, None, seed=i) for i, b in enumerate([base, base + 2])]
    return CaptureResult(
        manifest=manifest,
        write=lambda tmp: onnx.save(model, str(tmp)),
        graph_names=prep.input_names + order,
        steps=steps,
        cases=_replayed(reference),
        distribution_inputs=dist_inputs,
        # no distribution check, as before this path joined the tail: its same-noise cases replay the
        # module's own generator, and the check's median |z| over a per-call graph's few, correlated
        # outputs refused a correct traced CNN in a trial (z = 2 at 2 rows x 2 outputs)
        source_samples=None,
        local=None,  # a trace has no sample axis, so no local variant either
    )


def _replayed(reference):
    """Cases that replay the global generator: with the same seed, ``torch.randn(shape)`` in node
    order yields exactly the eps the traced module drew (its noise cannot be injected)."""
    import torch

    def cases(step: ValidationStep, draws: int):
        for k in range(draws):
            seed = 1000 * (step.seed + 1) + k
            torch.manual_seed(seed)
            with torch.no_grad():
                out = reference(*step.inputs)
            expected = [out] if isinstance(out, torch.Tensor) else list(out)
            torch.manual_seed(seed)
            noise = [torch.randn(list(shape)).numpy() for shape in step.noise_shapes]
            yield noise, [np.asarray(e) for e in expected]

    return cases
