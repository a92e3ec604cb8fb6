"""The regression likelihood of an export: which outputs are the mean and the scale, and how.

One resolver, :func:`resolve_likelihood`, serves every exporter (PyTorch and JAX): it turns the
user's ``likelihood=``/``scale=``/``df=`` arguments and the model's output names into the
manifest's :class:`~illia_export.artifact.manifest.Likelihood` (contract v2), or explains what
is wrong with an :class:`~illia_export.errors.ExportError`.

Conventions (docs/runtime.md, "Regression with a likelihood"):

* Positional outputs (a tuple): output 0 is the mean (location), output 1 the scale parameter;
  `scale` must say how output 1 is parameterized.
* Named outputs (a dict, a named tuple, or ``output_names=``): an output named ``"mean"`` and
  one named after its parameterization (``"variance"``, ``"log_variance"``, ``"std"``,
  ``"softplus_std"``). `scale` may then be omitted; when given it must match that name.

The scale output parameterizes the distribution's *scale parameter* ``s`` (Gaussian: the standard
deviation; Laplace: ``b``; Student-t: the scale): ``"std"`` is ``s``, ``"variance"`` is ``s**2``,
``"log_variance"`` is ``log s**2`` and ``"softplus_std"`` is ``softplus^-1(s)`` (the runtime
applies ``softplus``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from illia_export.artifact.manifest import LIKELIHOODS, SCALE_PARAMETERIZATIONS, Likelihood
from illia_export.errors import ExportError

__all__ = ["resolve_likelihood"]

MEAN_NAME = "mean"


def resolve_likelihood(
    likelihood: str | None,
    scale: str | None,
    output_names: list[str],
    task: str,
    df: float | None = None,
    output_shapes: Sequence[Sequence[int | str]] | None = None,
) -> Likelihood | None:
    """Resolve the export arguments into the manifest's likelihood (None without one).

    Args:
        likelihood: ``"gaussian"``, ``"laplace"``, ``"student_t"`` or None (no likelihood: the
            runtime summarizes the first output's samples as before).
        scale: how the scale output is parameterized: ``"variance"``, ``"log_variance"``,
            ``"std"`` or ``"softplus_std"``. May be omitted when the outputs are named
            ``"mean"`` and one of those names.
        output_names: the artifact's output names, in manifest order.
        task: the export's task; a likelihood needs ``"regression"``.
        df: Student-t degrees of freedom (> 0, finite); only for ``"student_t"``.
        output_shapes: the outputs' manifest shapes (optional); when given, the mean and the
            scale output must have the same shape.

    Returns:
        The :class:`~illia_export.artifact.manifest.Likelihood`, or None when `likelihood` is None.

    Raises:
        ExportError: an unknown likelihood or scale, a task other than regression, fewer than two
            outputs, outputs whose names do not say which is which, or a bad `df`.
    """
    if likelihood is None:
        if scale is not None or df is not None:
            given = ", ".join(f"{k}={v!r}" for k, v in (("scale", scale), ("df", df)) if v is not None)
            raise ExportError(
                f"{given} needs a likelihood: pass likelihood='gaussian', 'laplace' or 'student_t' "
                "(CLI: --likelihood)"
            )
        return None
    if likelihood not in LIKELIHOODS:
        raise ExportError(f"unknown likelihood {likelihood!r}; expected one of {', '.join(LIKELIHOODS)}")
    if task != "regression":
        raise ExportError(
            f"likelihood={likelihood!r} describes a regression head, but task={task!r}; "
            "export with task='regression' (CLI: --task regression)"
        )
    if scale is not None and scale not in SCALE_PARAMETERIZATIONS:
        raise ExportError(
            f"unknown scale parameterization {scale!r}; expected one of {', '.join(SCALE_PARAMETERIZATIONS)}"
        )
    df = _check_df(likelihood, df)
    names = list(output_names)
    if len(names) < 2:
        raise ExportError(
            f"likelihood={likelihood!r} needs a model with two outputs (the mean and the scale parameter); "
            f"this one has {len(names)} ({', '.join(names) or 'none'}). Return (mean, scale) or "
            "{'mean': ..., '<scale kind>': ...} from forward()"
        )
    mean_name, scale_name, kind = _pick_outputs(names, scale)
    if output_shapes is not None:
        shapes = dict(zip(names, (list(s) for s in output_shapes)))
        if shapes.get(mean_name) != shapes.get(scale_name):
            raise ExportError(
                f"the mean output {mean_name!r} has shape {shapes.get(mean_name)} but the scale output "
                f"{scale_name!r} has shape {shapes.get(scale_name)}; a likelihood needs one scale per mean"
            )
    return Likelihood(name=likelihood, mean=mean_name, scale=scale_name, scale_kind=kind, df=df)


def _check_df(likelihood: str, df: float | None) -> float | None:
    if likelihood != "student_t":
        if df is not None:
            raise ExportError(
                f"df={df!r} is the Student-t degrees of freedom; likelihood={likelihood!r} takes none"
            )
        return None
    if df is None:
        raise ExportError(
            "likelihood='student_t' needs the degrees of freedom: pass df=... (CLI: --df), df > 0"
        )
    try:
        value = float(df)
    except (TypeError, ValueError):
        raise ExportError(f"df must be a number > 0, got {df!r}") from None
    if isinstance(df, bool) or not math.isfinite(value) or value <= 0:
        raise ExportError(
            f"df must be a finite number > 0, got {df!r} (for df -> infinity use likelihood='gaussian')"
        )
    return value


def _pick_outputs(names: list[str], scale: str | None) -> tuple[str, str, str]:
    """(mean output, scale output, scale kind) from the output names and the `scale` argument."""
    named_scales = [n for n in names if n in SCALE_PARAMETERIZATIONS]
    if MEAN_NAME in names and named_scales:
        if scale is not None:
            if scale not in named_scales:
                raise ExportError(
                    f"scale={scale!r}, but the model's outputs {names} name the scale "
                    f"{' and '.join(repr(n) for n in named_scales)}; pass scale={named_scales[0]!r} or rename "
                    "the output"
                )
            return MEAN_NAME, scale, scale
        if len(named_scales) > 1:
            raise ExportError(
                f"the model's outputs {names} hold several scale names ({', '.join(named_scales)}); pass "
                "scale=... to say which one the likelihood uses"
            )
        return MEAN_NAME, named_scales[0], named_scales[0]
    if MEAN_NAME in names and names[0] != MEAN_NAME:
        raise ExportError(
            f"the model's outputs {names} have a 'mean' that is not first and no output named after a scale "
            f"parameterization ({', '.join(SCALE_PARAMETERIZATIONS)}); name the scale output by its "
            "parameterization, e.g. {'mean': ..., 'log_variance': ...}"
        )
    if scale is None:
        raise ExportError(
            f"which parameterization does the scale output {names[1]!r} use? Pass scale= one of "
            f"{', '.join(SCALE_PARAMETERIZATIONS)} (CLI: --scale), or return a dict "
            "{'mean': ..., '<scale kind>': ...}"
        )
    return names[0], names[1], scale
