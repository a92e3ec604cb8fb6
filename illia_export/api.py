"""``illia_export.export``: one entry point for every source framework and format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from illia_export.artifact.manifest import Manifest
from illia_export.errors import ExportError


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
    path: str | os.PathLike,
    format: str = "onnx",
    *,
    samples: str = "vectorized",
    task: str = "raw",
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    validate: bool = True,
    tolerance: float = 1e-4,
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
        path: output file (``.onnx``, ``.pt``, ``.tflite``) or folder (SavedModel).
        format: ``"onnx"`` or ``"torchscript"`` (PyTorch); ``"onnx"``, ``"savedmodel"`` or
            ``"tflite"`` (JAX).
        samples: ``"vectorized"`` — noise ``[S, *shape]``, outputs ``[S, B, ...]``, S dynamic —
            or ``"per-call"`` — one sample per call.
        task: ``"classification"`` (logits on the last axis), ``"regression"`` or ``"raw"``:
            how runtimes summarize the outputs.
        opset: ONNX opset (default 17 for PyTorch).
        validate: run the artifact against the source model on several noise draws and zero
            noise; raise ``ToleranceError`` (and leave no file) above `tolerance`.
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
        **options: backend options, among them ``dynamic_axes`` — extra dynamic dims per input,
            keyed by input index or name, e.g. ``{0: {1: "seq_len"}}`` (PyTorch makes dim 1 of
            integer token inputs dynamic by itself) — and ``trust_pickle`` for pickled modules.

    Returns:
        The manifest written into (or beside) the artifact.

    Example:
        >>> manifest = illia_export.export(model, torch.zeros(2, 784), "mlp.onnx", task="classification")
        >>> [n.name for n in manifest.noise]  # doctest: +SKIP
        ['eps_fc1_weights_distribution', 'eps_fc1_bias_distribution', ...]
        >>> illia_export.export(reg, torch.zeros(2, 10), "reg.onnx", task="regression",
        ...                     likelihood="gaussian", scale="log_variance")  # doctest: +SKIP
    """
    common = dict(
        format=format,
        samples=samples,
        task=task,
        validate=validate,
        tolerance=tolerance,
        input_names=input_names,
        output_names=output_names,
        likelihood=likelihood,
        scale=scale,
        df=df,
        **options,
    )
    if _is_jax_model(model):
        from illia_export.exporters.jax.export import export_jax

        if opset is not None:
            common["opset"] = opset
        return export_jax(model, example_inputs, path, **common)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"cannot export a {type(model).__name__}: PyTorch is not installed (pip install 'illia-export[torch]')"
        ) from exc
    from illia_export.exporters.torch.export import export_torch

    return export_torch(model, example_inputs, path, opset=opset, **common)
