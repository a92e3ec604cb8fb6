"""``illia_export.export``: one entry point for every source framework and format."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from illia_export.artifact.manifest import Manifest
from illia_export.errors import ExportError
from illia_export.exporters.verify.same_noise import DEFAULT_RTOL, DEFAULT_TOLERANCE

#: What each artifact suffix means (longest first: ``.aoti.pt2`` before ``.pt2``). A ``.pt2``
#: file may hold an ExportedProgram or, with ``format="aoti"``, an AOTInductor package
#: (torch's AOTI loader needs the ``.pt2`` suffix, so a bare ``.aoti`` is not one). A path
#: without a suffix is a SavedModel folder.
SUFFIX_FORMATS: dict[str, tuple[str, ...]] = {
    ".aoti.pt2": ("aoti",),
    ".pt2": ("pt2", "aoti"),
    ".onnx": ("onnx",),
    ".pt": ("torchscript",),
    ".ts": ("torchscript",),
    ".tflite": ("tflite",),
    "": ("savedmodel",),
}
#: The ONNX opsets any backend may be asked for (torch.onnx's supported range); each backend's
#: default is used when `opset` is None.
MIN_OPSET, MAX_OPSET = 7, 23


def _suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for suffix in SUFFIX_FORMATS:
        if suffix and name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return Path(name).suffix


def format_from_path(path: str | os.PathLike, format: str | None = None) -> str:
    """The artifact format: `format` when given (it must agree with `path`'s suffix), else the
    suffix's (``.onnx``, ``.pt2``, ``.aoti.pt2``, ``.pt`` / ``.ts``, ``.tflite``, none: SavedModel).

    Raises:
        ExportError: a suffix that contradicts `format`, a bare ``.aoti``, or an unknown suffix
            without `format`.
    """
    suffix = _suffix(path)
    known = ", ".join(f"{s or '(none: a folder)'} -> {'/'.join(f)}" for s, f in SUFFIX_FORMATS.items())
    if suffix == ".aoti":
        raise ExportError(
            f"{os.fspath(path)!r} ends in '.aoti': AOTInductor packages must end in '.pt2' (torch's loader "
            "needs it); name it '<model>.aoti.pt2' (or '.pt2' with format='aoti')"
        )
    formats = SUFFIX_FORMATS.get(suffix)
    if format is None:
        if formats is None:
            raise ExportError(
                f"cannot tell the format of {os.fspath(path)!r} from its suffix {suffix!r}: pass format= or use "
                f"one of the known suffixes ({known})"
            )
        return formats[0]
    if not isinstance(format, str):
        raise ExportError(f"format must be a string such as 'onnx', got {type(format).__name__}")
    if formats is not None and format not in formats:
        raise ExportError(
            f"format={format!r} contradicts the path {os.fspath(path)!r}, whose suffix {suffix or '(none)'!r} means "
            f"{' or '.join(repr(f) for f in formats)}: change the suffix or the format"
        )
    return format


def check_opset(opset: Any) -> None:
    """Refuse an opset outside the range any ONNX backend here supports (None: the backend's default)."""
    if opset is None:
        return
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset={opset!r} is not a valid ONNX opset: pass an integer in [{MIN_OPSET}, {MAX_OPSET}], or None for "
            "the backend's default (18 for torch.export, 17 for TorchScript sources, 21 for JAX)"
        )


def _is_jax_model(model: Any) -> bool:
    mod = type(model).__module__
    if mod.startswith("flax") or mod.startswith("illia_export.nn.jax"):
        return True
    try:
        import sys

        nnx = sys.modules.get("flax.nnx")
        return nnx is not None and isinstance(model, nnx.Module)
    except Exception:
        return False


def export(
    model: Any,
    example_inputs: Any,
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    format: str | None = None,
    *,
    samples: str = "vectorized",
    task: str = "raw",
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    validate: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    rtol: float = DEFAULT_RTOL,
    likelihood: str | None = None,
    scale: str | None = None,
    df: float | None = None,
    **options: Any,
) -> Manifest:
    """Export a Bayesian model to a deterministic graph whose noise is an explicit input.

    Args:
        model: a ``torch.nn.Module`` built from ``illia_export.nn.torch`` layers, a path to a
            TorchScript archive of one, or a Flax-NNX model built from ``illia_export.nn.jax``.
        example_inputs: one array/tensor or a tuple of them, batch axis first (e.g.
            ``torch.zeros(2, 1, 28, 28)``). The batch axis is dynamic in the artifact.
        path: output file or folder; its suffix gives the format when `format` is None:
            ``.onnx``; ``.pt2`` (ExportedProgram); ``.aoti.pt2`` (AOTInductor package);
            ``.pt`` / ``.ts`` (TorchScript); ``.tflite``; no suffix: a SavedModel folder.
            PyTorch models also take ``{format: path, ...}``: several formats from one
            torch.export capture (ONNX, .pt2 and AOTInductor share it; each artifact is
            validated on its own), returning ``{format: manifest}``.
        format: ``"onnx"``, ``"pt2"``, ``"aoti"`` or ``"torchscript"`` (PyTorch); ``"onnx"``,
            ``"savedmodel"`` or ``"tflite"`` (JAX). Default: from `path`'s suffix; a suffix
            that contradicts it is an error (a ``.pt2`` file may be ``"pt2"`` or ``"aoti"``).
        samples: ``"vectorized"`` — noise ``[S, *shape]``, outputs ``[S, B, ...]``, S dynamic —
            or ``"per-call"`` — one sample per call.
        task: ``"classification"`` (logits on the last axis), ``"regression"`` or ``"raw"``:
            how runtimes summarize the outputs.
        opset: ONNX opset in [7, 23] (default 18 for torch.export, 17 for TorchScript sources,
            21 for JAX).
        validate: run the artifact against the source model on several noise draws and zero
            noise, at batch sizes (and sequence lengths) other than the example's; raise
            ``ToleranceError`` (and leave no file) when an element differs by more than
            ``tolerance + rtol * |expected|``.
        tolerance: absolute part of that bound (``DEFAULT_TOLERANCE``, shared by every exporter).
        rtol: relative part of that bound (``DEFAULT_RTOL``).
        likelihood: for a regression head that predicts a distribution per input (needs
            ``task="regression"``): ``"gaussian"``, ``"laplace"`` or ``"student_t"``, recorded
            in the manifest so that runtimes combine the predicted (aleatoric) spread with the
            spread over weight samples (docs/runtime.md). The model's first output is the mean
            and its second the scale parameter, or it returns a dict / named tuple with
            ``"mean"`` and a key named after the scale's parameterization.
        scale: how the scale output is parameterized: ``"variance"``, ``"log_variance"``,
            ``"std"`` or ``"softplus_std"`` (of the distribution's scale parameter: the Gaussian
            std, the Laplace ``b``, the Student-t scale). May be omitted when the outputs are
            named (``{"mean": ..., "log_variance": ...}``).
        df: Student-t degrees of freedom (> 0), for ``likelihood="student_t"`` only.
        **options: exporter options (an option the model's exporter does not take is an
            ``ExportError`` naming it), among them:

            * ``mc_dropout``: ``True`` samples what the model samples in training mode
              (``model.train()`` with normalization layers kept in eval: every dropout-like
              draw, attention dropout included); a list of module names samples only those
              (PyTorch modules; ``nnx.Dropout`` and other ``jax.random`` draws for JAX).
            * ``distribution_samples``: samples of the distribution check against the model's
              own sampling (default 1000; 0 skips it).
            * ``dynamic_axes`` — dynamic dims per input, keyed by input index or name:
              ``{0: {2: "height"}}`` names an axis (inputs that share a name share its size;
              per-example noise may follow it), ``{"input_ids": {1: None}}`` fixes one. PyTorch
              makes axis 1 of integer token inputs dynamic (``"seq_len"``) by itself.
            * ``trust_pickle`` (PyTorch): load a pickled module file.
            * ``deterministic`` (JAX): allow an artifact without any noise input (refused
              otherwise: an export that lost every draw must not pass silently).

    Returns:
        The manifest written into (or beside) the artifact (one per format for a path mapping).

    Example:
        >>> manifest = illia_export.export(model, torch.zeros(2, 784), "mlp.onnx", task="classification")
        >>> [n.name for n in manifest.noise]  # doctest: +SKIP
        ['eps_fc1_weights_distribution', 'eps_fc1_bias_distribution', ...]
        >>> illia_export.export(reg, torch.zeros(2, 10), "reg.onnx", task="regression",
        ...                     likelihood="gaussian", scale="log_variance")  # doctest: +SKIP
    """
    check_opset(opset)
    common = dict(
        samples=samples,
        task=task,
        validate=validate,
        tolerance=tolerance,
        rtol=rtol,
        input_names=input_names,
        output_names=output_names,
        likelihood=likelihood,
        scale=scale,
        df=df,
        **options,
    )
    if isinstance(path, Mapping):
        return _export_formats(model, example_inputs, path, format, opset, common, options)
    common["format"] = format = format_from_path(path, format)
    if _is_jax_model(model):
        from illia_export.exporters.jax.export import export_jax

        if opset is not None:
            common["opset"] = opset
        _check_options(export_jax, options, "JAX")
        return export_jax(model, example_inputs, path, **common)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"cannot export a {type(model).__name__}: PyTorch is not installed (pip install 'illia-export[torch]')"
        ) from exc
    from illia_export.exporters.torch.export import export_torch, export_torch_formats

    _check_options(export_torch_formats, options, "PyTorch")
    return export_torch(model, example_inputs, path, opset=opset, **common)


def _export_formats(
    model, example_inputs, paths: Mapping, format, opset, common: dict, options: dict
) -> dict[str, Manifest]:
    """``export(model, x, {format: path, ...})``: PyTorch models, several formats from one capture
    (`common`: export()'s keyword arguments, `options` among them)."""
    if format is not None:
        raise ExportError("give the formats as the keys of the path mapping, not as format=")
    if _is_jax_model(model):
        raise ExportError("several formats at once ({format: path}) are for PyTorch models; export a JAX model once per format")
    for fmt, p in paths.items():
        if not isinstance(fmt, str):
            raise ExportError(f"path mapping key {fmt!r} is not the format of {os.fspath(p)!r}")
        format_from_path(p, fmt)  # a key its path's suffix contradicts is refused, naming both
    from illia_export.exporters.torch.export import export_torch_formats

    _check_options(export_torch_formats, options, "PyTorch")
    return export_torch_formats(model, example_inputs, dict(paths), opset=opset, **common)


def _check_options(exporter, options: dict[str, Any], framework: str) -> None:
    """An option the exporter does not take is an ExportError naming it, not a raw TypeError."""
    import inspect

    params = inspect.signature(exporter).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the exporter checks its own options
    known = set(params) - {"model", "example_inputs", "path", "paths"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ExportError(
            f"the {framework} exporter takes no option {', '.join(repr(u) for u in unknown)}; its options are "
            f"{sorted(known)}"
        )
