"""Export PyTorch models with every random draw as a graph input: the entry point.

:func:`export_torch` checks the arguments, loads the source (:mod:`.source`) and chooses the
capture strategy: live modules (and state dict + factory sources) to ONNX, ``.pt2`` or
AOTInductor take ``torch.export`` (:mod:`.strategy_export`); TorchScript archives, and the
``torchscript`` format, take the TorchScript strategy (:mod:`.strategy_script`; a traced archive
is its :mod:`.traced` variant). Each strategy yields one :class:`~.capture_result.CaptureResult`,
and the one tail (:func:`.pipeline.finish`) writes, validates and places the artifact. A failed
step leaves nothing at the output path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.artifact.atomic import check_output_path
from illia_export.errors import ExportError
from illia_export.exporters.likelihood import resolve_likelihood
from illia_export.exporters.torch.source import TorchSource, load_torch_source
from illia_export.exporters.verify.distribution import DEFAULT_SAMPLES
from illia_export.exporters.verify.same_noise import DEFAULT_RTOL, DEFAULT_TOLERANCE

SAMPLE_MODES = ("vectorized", "per-call")
TORCH_FORMATS = ("onnx", "torchscript", "pt2", "aoti")


def _torch():
    from illia_export.errors import require

    return require("torch", "torch", "Exporting PyTorch models")


def export_torch(
    model,
    example_inputs,
    path: str | os.PathLike,
    *,
    format: str = "onnx",
    **options,
) -> mf.Manifest:
    """Export a PyTorch model; see :func:`illia_export.export` for the arguments."""
    return export_torch_formats(model, example_inputs, {format: path}, **options)[format]


def export_torch_formats(
    model,
    example_inputs,
    paths: Mapping[str, str | os.PathLike],
    *,
    samples: str = "vectorized",
    task: str = "raw",
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: dict[int | str, dict[int, str]] | None = None,
    validate: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    rtol: float = DEFAULT_RTOL,
    noise_draws_count: int = 3,
    local_variant: bool | None = None,
    trust_pickle: bool = False,
    factory: str | None = None,
    mc_dropout: bool | Sequence[str] | None = None,
    distribution_samples: int = DEFAULT_SAMPLES,
    likelihood: str | None = None,
    scale: str | None = None,
    df: float | None = None,
) -> dict[str, mf.Manifest]:
    """Export a PyTorch model to several formats, ``{format: path}``, from one capture: ONNX, .pt2
    and AOTInductor are written from the same torch.export program (each artifact validated on its
    own); ``torchscript`` takes its own strategy. Returns ``{format: manifest}``. A failure leaves
    the artifacts already written (each complete and validated) in place."""
    if not isinstance(paths, Mapping) or not paths:
        raise ExportError("paths must be a non-empty mapping {format: path}")
    for fmt in paths:
        if fmt not in TORCH_FORMATS:
            raise ExportError(f"format {fmt!r} is not available for PyTorch models; choose one of {TORCH_FORMATS}")
    if len({os.path.abspath(os.fspath(p)) for p in paths.values()}) != len(paths):
        raise ExportError(f"each format needs its own output path, got {dict(paths)}")
    if samples not in SAMPLE_MODES:
        raise ExportError(f"samples must be one of {SAMPLE_MODES}, got {samples!r}")
    if task not in mf.TASKS:
        raise ExportError(f"task must be one of {mf.TASKS}, got {task!r}")
    for name, value in (("tolerance", tolerance), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ExportError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(noise_draws_count, bool) or not isinstance(noise_draws_count, int) or noise_draws_count < 1:
        raise ExportError(f"noise_draws_count must be an integer >= 1, got {noise_draws_count!r}")
    if isinstance(distribution_samples, bool) or not isinstance(distribution_samples, int) or distribution_samples < 100:
        raise ExportError(f"distribution_samples must be an integer >= 100, got {distribution_samples!r}")
    torch = _torch()
    sources = [Path(model)] if isinstance(model, (str, os.PathLike)) else []
    if isinstance(model, (str, os.PathLike)):
        source = load_torch_source(model, trust_pickle=trust_pickle, factory=factory)
    elif isinstance(model, torch.jit.ScriptModule):
        source = TorchSource(model, "torchscript")
    elif isinstance(model, torch.nn.Module):
        source = TorchSource(model, "torch")
    else:
        raise ExportError(f"cannot export a {type(model).__name__}: expected a torch.nn.Module or a .pt path")
    resolve = None
    if likelihood is not None or scale is not None:

        def resolve(outputs):
            return resolve_likelihood(likelihood, scale, [o.name for o in outputs], task, df, [o.shape for o in outputs])

    from illia_export.exporters.torch import pipeline

    scripted = [f for f in paths if source.kind == "torchscript" or f == "torchscript"]
    captured = [f for f in paths if f not in scripted]
    if source.kind == "torchscript" and captured:
        raise ExportError(
            f"format {captured[0]!r} needs torch.export, which cannot read a TorchScript archive: export the live "
            "module (or its state dict with --factory) instead"
        )
    if scripted and mc_dropout:
        raise ExportError(
            "mc_dropout needs the torch.export capture: export a live module to onnx, pt2 or aoti "
            "(the TorchScript path keeps dropout modules as the model has them)"
        )
    for p in paths.values():
        check_output_path(p, sources=sources)  # before any capture work
    tail = dict(
        validate=validate, tolerance=tolerance, rtol=rtol, noise_draws_count=noise_draws_count,
        local_variant=local_variant, distribution_samples=distribution_samples, likelihood=resolve, sources=sources,
    )
    common = dict(
        samples=samples, task=task, opset=opset, input_names=input_names, output_names=output_names,
        dynamic_axes=dynamic_axes,
    )
    manifests: dict[str, mf.Manifest] = {}
    for fmt in paths:
        if fmt in scripted:
            from illia_export.exporters.torch import strategy_script

            with strategy_script.capture(source, example_inputs, format=fmt, **common) as result:
                manifests[fmt] = pipeline.finish(result, paths[fmt], **tail)
        elif fmt == captured[0]:
            from illia_export.exporters.torch import strategy_export

            with strategy_export.capture_formats(
                source.module, example_inputs, formats=captured, mc_dropout=mc_dropout, **common
            ) as results:
                for f in captured:
                    manifests[f] = pipeline.finish(results[f], paths[f], **tail)
    return {f: manifests[f] for f in paths}
