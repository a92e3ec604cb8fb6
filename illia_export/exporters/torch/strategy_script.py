"""Capture strategy ``torchscript``: TorchScript archives, and any model to ``format='torchscript'``.

torch.export cannot read a TorchScript archive, and the ``torchscript`` format needs
``torch.jit.script``; both take this strategy (illia layers only): the model is scripted (or the
archive read), :func:`~.registry.discover` finds its distributions, and a generated wrapper
(:mod:`.wrapper`) sets each distribution's noise from a graph input. The record
(:class:`~.capture_result.CaptureResult`) writes that wrapper as TorchScript or through the
TorchScript-based ONNX exporter (the only one that accepts an archive); the reference injects the
same noise with ``set_noise`` into an independent copy of the source. A *traced* archive
(:mod:`.traced`) is a variant: its draws are replaced by inputs after export.

The shared tail (:func:`.pipeline.finish`) does the rest. Validation sizes stay this path's own
(the example batch B and B + 2, the second with 3 more positions for token inputs, S = 2):
the strategy does not probe sizes, so it has no discovery to take the torch.export
strategy's sizes from. Local-variant facts: the calls of each Linear are observed (hooks) on a
live module; in an archive they cannot be, so a Linear shared between calls is left to the
variant's distribution check. The deprecation
warnings of the TorchScript APIs are silenced only inside :func:`capture`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError, ShapeError
from illia_export.exporters.torch.capture_result import (
    CaptureResult,
    LocalPlan,
    ValidationStep,
    inject_per_sample,
    injected_cases,
    sampled_once,
)
from illia_export.exporters.torch.inputs import (
    as_inputs,
    check_names,
    default_names,
    dtype_name,
    input_axes,
    resize,
    spec_shape,
)
from illia_export.exporters.torch.registry import BATCH_MIXING_LAYERS, ModelNoise, discover
from illia_export.exporters.torch.source import TorchSource
from illia_export.exporters.torch.strategy_export import source_samples
from illia_export.exporters.torch.wrapper import OutputPath, build_wrapper, wrapper_source
from illia_export.exporters.torch.writers import write_legacy_onnx, write_torchscript
from illia_export.exporters.verify.same_noise import noise_draws

DEFAULT_OPSET = 17


@dataclass
class Prepared:
    """The scripted model, its distributions, inputs and outputs."""

    source: TorchSource
    script: Any
    noise: ModelNoise
    inputs: list[Any]
    input_names: list[str]
    output_paths: list[OutputPath]
    output_names: list[str]
    dynamic: list[dict[int, str]]
    example_outputs: Any  # the model's outputs on `inputs` (tensor or nested tuple)

    def resize(self, batch: int, extra_len: int = 0) -> list[Any]:
        """The example inputs tiled to `batch` rows (:func:`.inputs.resize`)."""
        return resize(self.inputs, self.dynamic, batch, extra_len)

    @property
    def token_inputs(self) -> bool:
        return any(1 in axes and axes[1] != mf.BATCH_DIM for axes in self.dynamic)


def _flatten_paths(out: Any, prefix: OutputPath = ()) -> list[OutputPath]:
    import torch

    if isinstance(out, torch.Tensor):
        return [prefix]
    if isinstance(out, (tuple, list)):
        paths: list[OutputPath] = []
        for i, item in enumerate(out):
            paths += _flatten_paths(item, prefix + (i,))
        return paths
    raise ExportError(
        f"model outputs must be tensors or (nested) tuples of tensors, got {type(out).__name__}"
    )


def _pick(out: Any, path: OutputPath):
    for i in path:
        out = out[i]
    return out


def prepare(source: TorchSource, example_inputs, input_names, output_names, dynamic_axes) -> Prepared:
    """Script the model (or take the archive), find its distributions, run it once on the example."""
    import torch

    source.module.eval()
    if isinstance(source.module, torch.jit.ScriptModule):
        script = source.module
        if source.path is not None:
            script = source.fresh_reference()  # keep the validation reference independent
            script.eval()
    else:
        try:
            script = torch.jit.script(source.module)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"the model cannot be compiled with torch.jit.script ({first}), which format='torchscript' "
                "needs: export it to onnx, pt2 or aoti (torch.export) instead"
            ) from exc
    noise = discover(script)
    inputs = as_inputs(example_inputs)
    with torch.no_grad():
        try:
            out = script(*inputs)
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            detail = next(
                (line.strip() for line in reversed(msg) if "Error" in line or "expects" in line),
                msg[-1] if msg else "",
            )
            raise ShapeError(
                f"the model rejects the example inputs {[tuple(x.shape) for x in inputs]}: {detail}"
            ) from exc
    paths = _flatten_paths(out)
    input_names = check_names(input_names or default_names("input", len(inputs)), len(inputs), "input")
    output_names = check_names(output_names or default_names("output", len(paths)), len(paths), "output")
    dynamic = input_axes(inputs, input_names, dynamic_axes)
    return Prepared(source, script, noise, inputs, input_names, paths, output_names, dynamic, out)


def run_per_sample(
    prep: Prepared, reference, inputs, noise: list[np.ndarray], targets: list[str], set_name: str, clear_name: str
) -> list[np.ndarray]:
    """Source-model outputs ``[S, B, ...]`` with `noise` injected one sample at a time
    (:func:`~.capture_result.inject_per_sample`), the outputs picked at the model's output paths."""
    return inject_per_sample(
        reference, inputs, noise, targets, set_name, clear_name, lambda out: [_pick(out, p) for p in prep.output_paths]
    )


def _reference(prep: Prepared, reference, vectorized: bool):
    """``(inputs, noise) -> outputs`` with each distribution's eps injected (per-call noise has no sample axis)."""
    params = [site.parameter for site in prep.noise.noise]

    def run(inputs, noise: list[np.ndarray]) -> list[np.ndarray]:
        if vectorized:
            return run_per_sample(prep, reference, inputs, noise, params, "set_noise", "clear_noise")
        stacked = [eps[None] for eps in noise]
        return [o[0] for o in run_per_sample(prep, reference, inputs, stacked, params, "set_noise", "clear_noise")]

    return run


def validation_steps(prep: Prepared, shapes: list[tuple[int, ...]], num_samples: int | None) -> list[ValidationStep]:
    """This path's sizes: B and B + 2 (3 more positions for token inputs at the second)."""
    base = int(prep.inputs[0].shape[0])
    return [
        ValidationStep(batch, prep.resize(batch, 3 if (prep.token_inputs and i) else 0), shapes, num_samples, seed=i)
        for i, batch in enumerate([base, base + 2])
    ]


def build_manifest(prep: Prepared, fmt: str, samples: str, task: str, opset: int) -> mf.Manifest:
    vectorized = samples == "vectorized"
    noise_names = [mf.noise_input_name(s.parameter) for s in prep.noise.noise]
    mf.check_unique_names(prep.input_names + noise_names)
    lead = [mf.SAMPLE_DIM] if vectorized else []
    outputs = []
    for name, p in zip(prep.output_names, prep.output_paths):
        t = _pick(prep.example_outputs, p)
        shape = lead + [mf.BATCH_DIM] + [int(d) for d in t.shape[1:]]
        outputs.append(mf.TensorSpec(name, shape, str(t.dtype).replace("torch.", "")))
    return mf.Manifest(
        format=fmt,
        source=prep.source.kind,
        inputs=[
            mf.TensorSpec(n, spec_shape(x, axes), dtype_name(x))
            for n, x, axes in zip(prep.input_names, prep.inputs, prep.dynamic)
        ],
        noise=[
            mf.NoiseSpec(name, s.parameter, lead + list(s.shape)) for name, s in zip(noise_names, prep.noise.noise)
        ],
        outputs=outputs,
        sample_axis=0 if vectorized else None,
        task=task,
        extra={"exporter": "illia_export.torch", "opset": opset if fmt == "onnx" else None},
    )


def _check_samples(prep: Prepared, vectorized: bool) -> None:
    if vectorized and not prep.noise.noise:
        raise ExportError(
            "the model has no weight noise (only BatchEnsembleLinear layers): export it with samples='per-call'"
        )
    if vectorized:
        mixing = [s.path for s in prep.noise.layers if s.layer_type in BATCH_MIXING_LAYERS]
        if mixing:
            raise ExportError(
                f"BatchEnsembleLinear at {mixing} assigns batch rows to ensemble members, which the folded "
                "sample axis of a vectorized graph would mix up: export with samples='per-call'"
            )


def _dynamic(manifest: mf.Manifest, prep: Prepared, vectorized: bool) -> dict:
    dyn = {n: axes for n, axes in zip(prep.input_names, prep.dynamic)}
    if vectorized:
        dyn.update({n.name: {0: mf.SAMPLE_DIM} for n in manifest.noise})
    for spec in manifest.outputs:
        dyn[spec.name] = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
    return dyn


def _writer(fmt: str, module, args: list, names: list[str], prep: Prepared, dyn: dict, opset: int, outputs=()):
    def write(tmp) -> None:
        try:
            if fmt == "torchscript":
                write_torchscript(module, tmp)
            else:
                write_legacy_onnx(module, args, tmp, names, prep.output_names, dyn, opset, outputs)
        except RuntimeError as exc:  # TorchScript's own failures while saving
            raise ExportError(f"writing the {fmt} artifact failed: {str(exc).strip().splitlines()[0]}") from exc

    return write


def linear_calls(prep: Prepared) -> dict[str, list[int]] | None:
    """Input rank of each call of each illia Linear in one forward of a live module; None for an
    archive (a ScriptModule runs no Python hooks), where the local variant's distribution check decides."""
    import torch

    from illia_export.nn.torch.linear import Linear

    if prep.source.kind != "torch" or isinstance(prep.source.module, torch.jit.ScriptModule):
        return None
    calls: dict[str, list[int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, _p=p: calls.setdefault(_p, []).append(int(args[0].dim())))
        for p, m in prep.source.module.named_modules()
        if isinstance(m, Linear)
    ]
    try:
        with torch.no_grad():
            prep.source.module(*prep.inputs)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _local_plan(prep: Prepared, reference, fmt: str, dyn: dict, opset: int) -> LocalPlan:
    """The facts for the one local guard, and the writer of a local wrapper (TorchScript or ONNX)."""
    import torch

    layers = list(prep.noise.bayesian_layers)
    owners = {s.path: s.layer_type for s in prep.noise.layers}
    draws = [(s.parameter, "weight", owners.get(s.layer) == "Linear") for s in prep.noise.noise]
    modules = dict(prep.script.named_modules())
    exact_owners = all(linear for _, _, linear in draws) and bool(draws)
    outs = [int(modules[s.path].output_size) for s in layers] if exact_owners else []

    def write(tmp, names: list[str], specs) -> None:
        source = wrapper_source(prep.noise, prep.input_names, names, prep.output_paths, "local", layers)
        wrapper = build_wrapper(prep.script, source)
        batch = prep.inputs[0].shape[0]
        args = list(prep.inputs) + [torch.zeros(2, batch, o) for o in outs]
        local_dyn = {k: v for k, v in dyn.items() if not k.startswith("eps_")}
        local_dyn.update({n: {0: mf.SAMPLE_DIM, 1: mf.BATCH_DIM} for n in names})
        _writer(fmt, wrapper, args, prep.input_names + names, prep, local_dyn, opset)(tmp)

    paths = [s.path for s in layers]
    return LocalPlan(
        formats=("onnx", "torchscript"),
        draws=draws,
        linear_calls=linear_calls(prep),
        float_inputs=all(x.is_floating_point() for x in prep.inputs),
        layers=paths,
        outputs=outs,
        write=write,
        reference=lambda xs, noise: run_per_sample(
            prep, reference, xs, noise, paths, "set_local_noise", "clear_local_noise"
        ),
    )


@contextlib.contextmanager
def _legacy_context() -> Iterator[None]:
    """Silence TorchScript/ONNX deprecation chatter on this path only, and fork torch's RNG.

    TorchScript archives can be read only by TorchScript and exported to ONNX only by the
    TorchScript-based exporter; there is no supported replacement for that source.
    """
    import torch

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


@contextlib.contextmanager
def capture(
    source: TorchSource,
    example_inputs,
    *,
    format: str,
    samples: str,
    task: str,
    opset: int | None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: dict | None = None,
) -> Iterator[CaptureResult]:
    """Script (or read) the model and yield its record; the tail runs inside (warnings silenced, RNG forked)."""
    import torch

    from illia_export.exporters.torch.traced import is_traced, traced_result

    opset = opset or DEFAULT_OPSET
    with _legacy_context():
        prep = prepare(source, example_inputs, input_names, output_names, dynamic_axes)
        vectorized = samples == "vectorized"
        _check_samples(prep, vectorized)
        manifest = build_manifest(prep, format, samples, task, opset)
        reference = prep.source.fresh_reference()
        reference.eval()
        xs = prep.resize(min(int(prep.inputs[0].shape[0]), 4))

        own_sampling = sampled_once(lambda inputs, num, seed: source_samples(reference, inputs, num, seed))

        if prep.source.kind == "torchscript" and is_traced(prep.script, prep.noise):
            if format != "onnx" or vectorized:
                raise ExportError(
                    "this TorchScript archive was traced, which baked the noise draws into the graph: it exports "
                    "to ONNX with samples='per-call' only. For TorchScript or vectorized exports, save a scripted "
                    "model (torch.jit.save(torch.jit.script(model), path))"
                )
            yield traced_result(prep, manifest, opset, reference, xs)
            return
        noise_names = [n.name for n in manifest.noise]
        wrapper = build_wrapper(
            prep.script, wrapper_source(prep.noise, prep.input_names, noise_names, prep.output_paths, samples)
        )
        shapes = [s.shape for s in prep.noise.noise]
        num_samples = 2 if vectorized else None
        args = list(prep.inputs) + [torch.from_numpy(a) for a in noise_draws(shapes, 1, num_samples)[0]]
        dyn = _dynamic(manifest, prep, vectorized)
        names = prep.input_names + noise_names
        yield CaptureResult(
            manifest=manifest,
            write=_writer(format, wrapper, args, names, prep, dyn, opset, manifest.outputs),
            graph_names=names,
            steps=validation_steps(prep, shapes, num_samples),
            cases=injected_cases(_reference(prep, reference, vectorized)),
            distribution_inputs=xs,
            source_samples=own_sampling,
            local=_local_plan(prep, reference, format, dyn, opset),
        )
