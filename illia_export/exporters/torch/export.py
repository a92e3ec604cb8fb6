"""Export PyTorch models with every random draw as a graph input: the entry point and the legacy path.

:func:`export_torch` sends live modules (and state dict + factory sources) to the torch.export
pipeline (:mod:`.pipeline`: ONNX, ``.pt2``, AOTInductor), and TorchScript archives, or the
``torchscript`` format, to the legacy path below: source -> ``torch.jit.script`` -> generated
wrapper (:mod:`torch_wrapper`) -> TorchScript, or ONNX through the TorchScript-based exporter
(the only exporter that accepts an archive) -> validated -> manifest -> renamed into place. The
legacy path needs a scriptable model built from ``illia_export.nn.torch`` layers; it keeps
``freeze``/``unfreeze``/``kl_cost`` on TorchScript artifacts. A failed step leaves nothing at
the output path.

Length: the entry point plus the whole legacy TorchScript path (scripting, wrapper, legacy ONNX
exporter, its validation and local variant). Making that path a capture strategy that feeds the
torch.export pipeline's tail (issue #21) would remove most of it; it is the next step.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.artifact.atomic import atomic_output
from illia_export.errors import ExportError, ShapeError
from illia_export.exporters.likelihood import resolve_likelihood
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
from illia_export.exporters.torch.source import TorchSource, load_torch_source
from illia_export.exporters.torch.traced import export_traced_onnx, is_traced
from illia_export.exporters.torch.wrapper import OutputPath, build_wrapper, wrapper_source
from illia_export.exporters.torch.writers import check_onnx_graph, name_dims
from illia_export.exporters.verify.distribution import DEFAULT_SAMPLES
from illia_export.exporters.verify.same_noise import (
    DEFAULT_RTOL,
    DEFAULT_TOLERANCE,
    Comparison,
    check_deterministic,
    noise_draws,
)

DEFAULT_OPSET = 17
SAMPLE_MODES = ("vectorized", "per-call")
TORCH_FORMATS = ("onnx", "torchscript", "pt2", "aoti")


def _torch():
    from illia_export.errors import require

    return require("torch", "torch", "Exporting PyTorch models")


def _quietly(fn):
    """Silence TorchScript/ONNX deprecation chatter on the legacy path only.

    TorchScript archives can be read only by TorchScript and exported to ONNX only by the
    TorchScript-based exporter; there is no supported replacement for that source.
    """

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning, UserWarning):
                warnings.simplefilter("ignore", category)
            return fn(*args, **kwargs)

    return quiet


@dataclass
class _Prepared:
    source: TorchSource
    script: Any
    noise: ModelNoise
    inputs: list[Any]
    input_names: list[str]
    output_paths: list[OutputPath]
    output_names: list[str]
    dynamic: list[dict[int, str]]
    example_outputs: Any  # the model's outputs on `inputs` (tensor or nested tuple)


def _flatten_paths(out: Any, prefix: OutputPath = ()) -> list[OutputPath]:
    torch = _torch()
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


def _prepare(source: TorchSource, example_inputs, input_names, output_names, dynamic_axes) -> _Prepared:
    torch = _torch()
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
    return _Prepared(source, script, noise, inputs, input_names, paths, output_names, dynamic, out)


def _resize_batch(prep: _Prepared, batch: int, extra_len: int = 0) -> list[Any]:
    """The example inputs tiled to `batch` rows (:func:`torch_inputs.resize`)."""
    return resize(prep.inputs, prep.dynamic, batch, extra_len)


def _run_per_sample(
    prep: _Prepared,
    reference,
    inputs,
    noise: list[np.ndarray],
    targets: list[str],
    set_name: str,
    clear_name: str,
) -> list[np.ndarray]:
    """Source-model outputs ``[S, B, ...]``, one sample at a time.

    For sample s, module ``targets[k]`` of `reference` gets ``noise[k][s]`` through its method
    `set_name` (cleared with `clear_name` afterwards, also on error).
    """
    torch = _torch()
    modules = dict(reference.named_modules())
    per_sample: list[list[np.ndarray]] = []
    with torch.no_grad():
        for s in range(noise[0].shape[0]):
            for target, eps in zip(targets, noise):
                getattr(modules[target], set_name)(torch.from_numpy(eps[s]))
            try:
                out = reference(*inputs)
            finally:
                for target in targets:
                    getattr(modules[target], clear_name)()
            per_sample.append([_pick(out, p).numpy() for p in prep.output_paths])
    return [np.stack([ps[i] for ps in per_sample]) for i in range(len(prep.output_paths))]


def _reference(
    prep: _Prepared, reference, inputs, noise: list[np.ndarray], vectorized: bool
) -> list[np.ndarray]:
    """Source-model outputs with each distribution's eps injected (per-call noise has no sample axis)."""
    params = [site.parameter for site in prep.noise.noise]
    if vectorized:
        return _run_per_sample(prep, reference, inputs, noise, params, "set_noise", "clear_noise")
    stacked = [eps[None] for eps in noise]
    return [
        o[0] for o in _run_per_sample(prep, reference, inputs, stacked, params, "set_noise", "clear_noise")
    ]


def _local_reference(prep: _Prepared, reference, inputs, local_noise: list[np.ndarray]) -> list[np.ndarray]:
    """Source-model outputs under local reparameterization, per sample."""
    layers = [site.path for site in prep.noise.bayesian_layers]
    return _run_per_sample(
        prep, reference, inputs, local_noise, layers, "set_local_noise", "clear_local_noise"
    )


class _ArtifactRunner:
    """Runs a written artifact (TorchScript via torch, ONNX via onnxruntime) on numpy inputs."""

    def __init__(self, fmt: str, path: Path, names: list[str], num_outputs: int) -> None:
        self.fmt = fmt
        self.names = names
        self.num_outputs = num_outputs
        if fmt == "onnx":
            from illia_export.errors import require

            ort = require("onnxruntime", "onnx", "Validating ONNX exports")
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ExportError(f"onnxruntime cannot load the exported graph: {exc}") from exc
        else:
            torch = _torch()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(str(path), map_location="cpu")

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.fmt == "onnx":
            return list(self.session.run(None, dict(zip(self.names, arrays))))
        torch = _torch()
        with torch.no_grad():
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return [o.numpy() for o in outs]


def _write(
    fmt: str,
    wrapper,
    prep: _Prepared,
    arg_names: list[str],
    args: list[Any],
    dynamic: dict,
    path: Path,
    opset: int,
    outputs: Sequence[mf.TensorSpec] = (),
) -> None:
    torch = _torch()
    if fmt == "torchscript":
        torch.jit.save(wrapper, str(path))
        return
    from illia_export.errors import require

    require("onnx", "onnx", "ONNX export")
    buf = io.BytesIO()
    try:
        torch.onnx.export(
            wrapper,
            tuple(args),
            buf,
            dynamo=False,
            input_names=arg_names,
            output_names=prep.output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed: {first}") from exc
    import onnx

    model = onnx.load_from_string(buf.getvalue())
    name_dims(model.graph.output, outputs)  # name the output dims as the manifest does
    check_onnx_graph(model, arg_names)
    onnx.save(model, str(path))


def _finalize(fmt: str, path: Path, manifest: mf.Manifest) -> None:
    """Stamp the digest and embed the final manifest in the artifact at `path` (rewritten in place)."""
    from illia_export.artifact.digest import stamp_digest, verify_digest

    _embed(fmt, path, manifest)  # the first TorchScript re-save rewrites data.pkl too: settle it first
    stamp_digest(path, manifest)
    _embed(fmt, path, manifest)
    verify_digest(path, manifest)


def _embed(fmt: str, path: Path, manifest: mf.Manifest) -> None:
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        mf.embed_in_onnx(model, manifest)
        onnx.save(model, str(path))
    else:
        torch = _torch()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
            torch.jit.save(module, str(path), _extra_files={mf.EMBEDDED_NAME: manifest.to_json()})


def _validate(
    runner: _ArtifactRunner,
    prep: _Prepared,
    reference,
    noise_shapes: list[tuple[int, ...]],
    vectorized: bool,
    tolerance: float,
    draws: int,
    local: bool = False,
    rtol: float = 0.0,
) -> mf.Validation:
    base = prep.inputs[0].shape[0]
    batches = [base, base + 2]
    token_inputs = any(1 in axes and axes[1] != mf.BATCH_DIM for axes in prep.dynamic)
    cmp = Comparison(prep.output_names, tolerance, rtol)
    for b_i, batch in enumerate(batches):
        inputs = _resize_batch(prep, batch, extra_len=3 if (token_inputs and b_i) else 0)
        cmp.note_batch(batch)
        if local:
            shapes = [(batch, *shape) for shape in noise_shapes]
        else:
            shapes = noise_shapes
        sets = noise_draws(shapes, draws, 2 if (vectorized or local) else None, seed=b_i)
        for k, noise in enumerate(sets):
            if local:
                expected = _local_reference(prep, reference, inputs, noise)
            else:
                expected = _reference(prep, reference, inputs, noise, vectorized)
            if b_i == 0 and k == 0:
                check_deterministic(runner, [x.numpy() for x in inputs] + noise, prep.output_names)
            got = runner([x.numpy() for x in inputs] + noise)
            cmp.add(got, expected, zero_noise=k == len(sets) - 1)
    return cmp.result(draws)


def export_torch(
    model,
    example_inputs,
    path: str | os.PathLike,
    *,
    format: str = "onnx",
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
) -> mf.Manifest:
    """Export a PyTorch model; see :func:`illia_export.export` for the arguments."""
    if format not in TORCH_FORMATS:
        raise ExportError(
            f"format {format!r} is not available for PyTorch models; choose one of {TORCH_FORMATS}"
        )
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

    if source.kind == "torchscript" or format == "torchscript":
        if format in ("pt2", "aoti"):
            raise ExportError(
                f"format {format!r} needs torch.export, which cannot read a TorchScript archive: export the live "
                "module (or its state dict with --factory) instead"
            )
        if mc_dropout:
            raise ExportError(
                "mc_dropout needs the torch.export capture: export a live module to onnx, pt2 or aoti "
                "(the TorchScript path keeps dropout modules as the model has them)"
            )
        manifest = _export_legacy(
            source, example_inputs, path, format=format, samples=samples, task=task, opset=opset or DEFAULT_OPSET,
            input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes, validate=validate,
            tolerance=tolerance, rtol=rtol, noise_draws_count=noise_draws_count, local_variant=local_variant,
            likelihood=resolve, sources=sources,
        )
        return manifest
    from illia_export.exporters.torch.pipeline import export_capture

    return export_capture(
        source.module, example_inputs, path, format=format, samples=samples, task=task, opset=opset,
        input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes, validate=validate,
        tolerance=tolerance, rtol=rtol, noise_draws_count=noise_draws_count, local_variant=local_variant,
        mc_dropout=mc_dropout, distribution_samples=distribution_samples, likelihood=resolve, sources=sources,
    )


@_quietly
def _export_legacy(
    source: TorchSource,
    example_inputs,
    path: str | os.PathLike,
    *,
    format: str,
    samples: str,
    task: str,
    opset: int,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic_axes: dict[int | str, dict[int, str]] | None,
    validate: bool,
    tolerance: float,
    rtol: float,
    noise_draws_count: int,
    local_variant: bool | None,
    likelihood=None,
    sources: Sequence[Path] = (),
) -> mf.Manifest:
    """The TorchScript path (archives, or format='torchscript'): see the module docstring."""
    prep = _prepare(source, example_inputs, input_names, output_names, dynamic_axes)
    vectorized = samples == "vectorized"
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
    noise_names = [mf.noise_input_name(s.parameter) for s in prep.noise.noise]
    mf.check_unique_names(prep.input_names + noise_names)
    lead = [mf.SAMPLE_DIM] if vectorized else []
    noise_specs = [
        mf.NoiseSpec(name, s.parameter, lead + list(s.shape))
        for name, s in zip(noise_names, prep.noise.noise)
    ]
    torch = _torch()
    outputs = []
    for name, p in zip(prep.output_names, prep.output_paths):
        t = _pick(prep.example_outputs, p)
        shape = lead + [mf.BATCH_DIM] + [int(d) for d in t.shape[1:]]
        outputs.append(mf.TensorSpec(name, shape, str(t.dtype).replace("torch.", "")))
    inputs = [
        mf.TensorSpec(n, spec_shape(x, axes), dtype_name(x))
        for n, x, axes in zip(prep.input_names, prep.inputs, prep.dynamic)
    ]
    manifest = mf.Manifest(
        format=format,
        source=prep.source.kind,
        inputs=inputs,
        noise=noise_specs,
        outputs=outputs,
        sample_axis=0 if vectorized else None,
        task=task,
        extra={"exporter": "illia_export.torch", "opset": opset if format == "onnx" else None},
    )
    source = wrapper_source(prep.noise, prep.input_names, noise_names, prep.output_paths, samples)
    wrapper = build_wrapper(prep.script, source)
    shapes = [s.shape for s in prep.noise.noise]
    args = list(prep.inputs) + [
        torch.from_numpy(a) for a in noise_draws(shapes, 1, 2 if vectorized else None)[0]
    ]
    dyn = {n: axes for n, axes in zip(prep.input_names, prep.dynamic)}
    if vectorized:
        dyn.update({n: {0: mf.SAMPLE_DIM} for n in noise_names})
    for spec in outputs:
        dyn[spec.name] = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
    reference = prep.source.fresh_reference()
    reference.eval()

    if prep.source.kind == "torchscript" and is_traced(prep.script, prep.noise):
        if format != "onnx" or vectorized:
            raise ExportError(
                "this TorchScript archive was traced, which baked the noise draws into the graph: it exports "
                "to ONNX with samples='per-call' only. For TorchScript or vectorized exports, save a scripted "
                "model (torch.jit.save(torch.jit.script(model), path))"
            )
        manifest.extra["traced_archive"] = True
        with atomic_output(path, sources=sources) as tmp:
            export_traced_onnx(
                prep, tmp, manifest, opset, validate, tolerance, noise_draws_count, _resize_batch
            )
            _finalize(format, tmp, manifest)
        return manifest

    want_local = vectorized and prep.noise.linear_only and all(x.is_floating_point() for x in prep.inputs)
    if local_variant is True and not want_local:
        raise ExportError(
            "a local-reparameterization variant needs a vectorized export of a model whose Bayesian layers "
            "are all Linear with float inputs (it is exact only there)"
        )
    if vectorized and not want_local and local_variant is not False:
        manifest.local_unavailable = (
            "local reparameterization is exact only for models whose Bayesian layers are all Linear with float inputs"
        )
    want_local = want_local and local_variant is not False
    if likelihood is not None:
        manifest.likelihood = likelihood(manifest.outputs)
        manifest.__post_init__()
    final = Path(path)
    local_file = final.with_name(f"{final.stem}.local{final.suffix}")
    try:
        with atomic_output(final, sources=sources) as tmp:
            _write(format, wrapper, prep, prep.input_names + noise_names, args, dyn, tmp, opset, outputs)
            if validate:
                runner = _ArtifactRunner(format, tmp, prep.input_names + noise_names, len(outputs))
                manifest.validation = _validate(
                    runner, prep, reference, shapes, vectorized, tolerance, noise_draws_count, rtol=rtol
                )
                manifest.validation.distribution = _distribution(prep, reference, tmp, manifest, "fresh")
            if want_local:
                try:
                    manifest.local = _export_local(
                        format,
                        prep,
                        reference,
                        local_file,
                        dyn,
                        opset,
                        validate,
                        tolerance,
                        noise_draws_count,
                    )
                    if validate:
                        _distribution(prep, reference, tmp, manifest, "local")
                except ExportError as exc:
                    manifest.local = None
                    manifest.local_unavailable = f"the local variant failed its checks: {str(exc).splitlines()[0]}"
                    if local_file.exists():
                        local_file.unlink()
            _finalize(format, tmp, manifest)
    except BaseException:
        if want_local and local_file.exists() and not final.exists():
            local_file.unlink()
        raise
    return manifest


def _distribution(prep: _Prepared, reference, path: Path, manifest: mf.Manifest, strategy: str) -> dict:
    """The distribution check (:mod:`distribution_check`) of a legacy-path artifact."""
    from illia_export.exporters.torch.pipeline import source_samples
    from illia_export.exporters.verify.distribution import compare
    from illia_export.runtime.predictor import Predictor

    torch = _torch()
    xs = _resize_batch(prep, min(int(prep.inputs[0].shape[0]), 4))
    with torch.random.fork_rng(devices=[]):
        source = source_samples(reference, xs, DEFAULT_SAMPLES, seed=4321)
    # our own file, being written: not yet stamped, and ours (an AOTI package included)
    pred = Predictor(path, manifest, allow_unverified=True, trust_native_code=True).predict(
        [x.numpy() for x in xs], num_samples=DEFAULT_SAMPLES, seed=4321, strategy=strategy
    )
    what = "the local-reparameterization variant" if strategy == "local" else "the artifact"
    return compare(prep.output_names, source, [pred.outputs[n] for n in prep.output_names], what=what)


def _export_local(
    format, prep: _Prepared, reference, local_file: Path, dyn: dict, opset, validate, tolerance, draws
):
    """Write the local-reparameterization graph beside the artifact; return its manifest entry."""
    torch = _torch()
    layers = list(prep.noise.bayesian_layers)
    names = [mf.local_noise_input_name(s.path) for s in layers]
    modules = dict(prep.script.named_modules())
    outs = [int(modules[s.path].output_size) for s in layers]
    specs = [
        mf.NoiseSpec(n, s.path, [mf.SAMPLE_DIM, mf.BATCH_DIM, o]) for n, s, o in zip(names, layers, outs)
    ]
    mf.check_unique_names(prep.input_names + names)
    source = wrapper_source(prep.noise, prep.input_names, names, prep.output_paths, "local", layers)
    wrapper = build_wrapper(prep.script, source)
    batch = prep.inputs[0].shape[0]
    args = list(prep.inputs) + [torch.zeros(2, batch, o) for o in outs]
    local_dyn = {k: v for k, v in dyn.items() if not k.startswith("eps_")}
    local_dyn.update({n: {0: mf.SAMPLE_DIM, 1: mf.BATCH_DIM} for n in names})
    main = local_file.with_name(local_file.stem.removesuffix(".local") + local_file.suffix)
    with atomic_output(local_file, part_of=main) as tmp:
        try:
            _write(format, wrapper, prep, prep.input_names + names, args, local_dyn, tmp, opset)
            if validate:
                runner = _ArtifactRunner(format, tmp, prep.input_names + names, len(prep.output_names))
                _validate(runner, prep, reference, [(o,) for o in outs], True, tolerance, draws, local=True)
        except (ExportError, RuntimeError) as exc:
            raise ExportError(f"the local-reparameterization variant failed: {exc}") from exc
    return mf.LocalVariant(file=local_file.name, noise=specs)
