"""The one tail of the PyTorch exporter: every capture strategy's record -> a validated artifact in place.

A capture strategy (:mod:`.strategy_export`: torch.export for live modules; :mod:`.strategy_script`:
TorchScript archives and ``format='torchscript'``, the traced-archive variant included) turns
the model into a :class:`~.capture_result.CaptureResult`; :func:`finish` then runs the same steps
for all of them: likelihood -> the one local-variant guard (:func:`local_unavailable_reason`) ->
temporary file (:func:`~illia_export.artifact.atomic.atomic_output`) -> write -> same-noise
validation (:func:`check_same_noise`: other sizes than captured, every draw, rtol + atol, NaN
fails, the artifact run twice on the same noise) -> distribution check (the source's own RNG vs
the runtime's noise, :func:`check_distribution`) -> local variant (written, checked for the same
noise and for the same distribution, or ``local_unavailable`` says why) -> digest stamped,
manifest embedded, digest verified -> renamed into place. A failure leaves nothing at the
output path (and no local variant beside it).

The torch.export strategy's stages are re-exported here (``prepare``, ``build_manifest``,
``same_noise``, ``reference_outputs``, ...) for the callers that drive them step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.artifact.atomic import atomic_output
from illia_export.artifact.digest import stamp_digest, verify_digest
from illia_export.errors import ExportError, IlliaExportError
from illia_export.exporters.torch.capture_result import (
    CaptureResult,
    Cases,
    LocalPlan,
    ValidationStep,
    injected_cases,
)
from illia_export.exporters.torch.strategy_export import (  # noqa: F401  (re-exported stages)
    CAPTURE_SAMPLES,
    DEFAULT_CAPTURE_OPSET,
    Capture,
    batch_multiple,
    build_manifest,
    no_distribution_validation,
    prepare,
    reference_outputs,
    same_noise,
    source_samples,
    token_range,
    validation_batches,
)
from illia_export.exporters.torch.writers import ArtifactRunner, embed_manifest
from illia_export.exporters.verify.distribution import DEFAULT_SAMPLES
from illia_export.exporters.verify.distribution import compare as compare_distributions
from illia_export.exporters.verify.same_noise import Comparison, check_deterministic

#: the seed of the distribution check (source RNG and the runtime's generator)
DISTRIBUTION_SEED = 4321
_FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": ".pt2", "aoti": "AOTInductor"}


# ------------------------------------------------------------------------------------ same noise
def check_same_noise(
    output_names: Sequence[str],
    steps: Sequence[ValidationStep],
    cases: Cases,
    runner: Callable[[list[np.ndarray]], list[np.ndarray]],
    tolerance: float,
    rtol: float,
    draws: int,
) -> mf.Validation:
    """The artifact against the source for the same noise, at every step; raises ToleranceError.

    The first case is also run twice (:func:`check_deterministic`: randomness hidden in the
    graph); a case whose noise is all zero (the mean-weight network) is recorded as such.
    """
    cmp = Comparison(output_names, tolerance, rtol)
    for i, step in enumerate(steps):
        cmp.note_batch(step.batch)
        arrays_in = [x.numpy() for x in step.inputs]
        for k, (noise, expected) in enumerate(cases(step, draws)):
            if i == 0 and k == 0:
                check_deterministic(runner, arrays_in + noise, output_names)
            zero = bool(noise) and not any(np.any(z) for z in noise)
            cmp.add(runner(arrays_in + noise), expected, zero_noise=zero)
    return cmp.result(draws)


# ------------------------------------------------------------------------------------ distribution
def check_distribution(
    result: CaptureResult, path: Path, manifest: mf.Manifest, num: int, strategy: str = "fresh"
) -> dict:
    """The artifact at `path` (read with `manifest`) sampled by the runtime against the source
    model's own sampling (:mod:`illia_export.exporters.verify.distribution`)."""
    from illia_export.runtime.predictor import Predictor

    xs = result.distribution_inputs
    source = result.source_samples(xs, num, DISTRIBUTION_SEED)
    # our own file, being written: not yet stamped, and ours (an AOTI package included)
    pred = Predictor(path, manifest, allow_unverified=True, trust_native_code=True).predict(
        [x.numpy() for x in xs], num_samples=num, seed=DISTRIBUTION_SEED, strategy=strategy
    )
    names = result.output_names
    what = "the local-reparameterization variant" if strategy == "local" else "the artifact"
    return compare_distributions(names, source, [pred.outputs[n] for n in names], what=what)


# ------------------------------------------------------------------------------------ local variant
def local_unavailable_reason(plan: LocalPlan | None, fmt: str, vectorized: bool) -> str | None:
    """The one guard: None when a local-reparameterization variant is exact for the capture, else why not.

    Exact needs: a format the strategy writes it for, a sample axis, float inputs, every draw an
    illia Linear's weight noise, and (where the strategy can observe calls) each Linear applied
    once to a 2-D input. Where calls cannot be observed (a TorchScript archive) the variant's
    distribution check, which runs for every variant, is what refuses a shared Linear.
    """
    if plan is None or fmt not in plan.formats:
        written = " and ".join(_FORMAT_NAMES.get(f, f) for f in plan.formats) if plan else "no"
        return f"the local-reparameterization variant is written for {written} artifacts, not {fmt}"
    if not vectorized:
        return "the local-reparameterization variant needs samples='vectorized'"
    if not plan.float_inputs:
        return "the model has integer (token) inputs; local reparameterization is exact for Linear layers only"
    for parameter, kind, owned_by_linear in plan.draws:
        if kind != "weight" or not owned_by_linear:
            return (
                f"the draw {parameter!r} does not belong to an illia Linear layer; local reparameterization "
                "is exact only when every random draw is a Linear layer's weight noise"
            )
    for path, ranks in (plan.linear_calls or {}).items():
        if len(ranks) != 1:
            return (
                f"Linear {path!r} is applied {len(ranks)} times per forward: its weights are shared across the "
                "calls, which independent pre-activation noise cannot express"
            )
        if ranks[0] != 2:
            return (
                f"Linear {path!r} gets a {ranks[0]}-D input: its weights are shared across positions, which "
                "independent pre-activation noise cannot express"
            )
    return None


def _local_steps(result: CaptureResult, outs: list[int]) -> list[ValidationStep]:
    """The main validation's sizes, fed pre-activation noise ``[S, B, out]`` per Linear."""
    return [
        ValidationStep(s.batch, s.inputs, [(s.batch, o) for o in outs], s.num_samples or 2, s.seed + 10)
        for s in result.steps
    ]


def write_local(
    result: CaptureResult, manifest: mf.Manifest, main_tmp: Path, local_file: Path, validate: bool,
    tolerance: float, rtol: float, draws: int, dist_samples: int,
) -> None:
    """Write, validate and place the local variant; on any failure record why in the manifest."""
    plan = result.local
    names = [mf.local_noise_input_name(p) for p in plan.layers]
    specs = [mf.NoiseSpec(n, p, [mf.SAMPLE_DIM, mf.BATCH_DIM, o]) for n, p, o in zip(names, plan.layers, plan.outputs)]
    try:
        mf.check_unique_names(result.input_names + names)
        main = local_file.with_name(local_file.stem.removesuffix(".local") + local_file.suffix)
        with atomic_output(local_file, part_of=main) as tmp:
            plan.write(tmp, names, specs)
            if validate:
                runner = ArtifactRunner(result.format, tmp, result.input_names + names)
                steps = _local_steps(result, plan.outputs)
                check_same_noise(
                    result.output_names, steps, injected_cases(plan.reference), runner, tolerance, rtol, draws
                )
        manifest.local = mf.LocalVariant(file=local_file.name, noise=specs)
        if validate:
            check_distribution(result, main_tmp, manifest, dist_samples, strategy="local")
    except (IlliaExportError, RuntimeError) as exc:  # RuntimeError: TorchScript's own, from a local wrapper
        manifest.local = None
        manifest.local_unavailable = f"the local variant failed its checks: {str(exc).splitlines()[0]}"
        if local_file.exists():
            local_file.unlink()


# ------------------------------------------------------------------------------------ the tail
def finish(
    result: CaptureResult,
    path,
    *,
    validate: bool = True,
    tolerance: float,
    rtol: float,
    noise_draws_count: int = 3,
    local_variant: bool | None = None,
    distribution_samples: int = DEFAULT_SAMPLES,
    likelihood=None,
    sources: Sequence[Path] = (),
) -> mf.Manifest:
    """Write, validate and place the artifact of `result` at `path`; return its final manifest.

    Called while the strategy's context (modes, RNG fork) is held: the source model is the
    reference of every check.
    """
    manifest = result.manifest
    if likelihood is not None:
        manifest.likelihood = likelihood(manifest.outputs) if callable(likelihood) else likelihood
        manifest.__post_init__()
    reason = local_unavailable_reason(result.local, result.format, result.vectorized)
    if local_variant is True and reason:
        raise ExportError(f"a local-reparameterization variant was asked for, but {reason}")
    want_local = local_variant is not False and reason is None
    if reason and result.vectorized and local_variant is not False:
        manifest.local_unavailable = reason
    final = Path(path)
    local_file = final.with_name(f"{final.stem}.local{final.suffix}")
    try:
        with atomic_output(final, sources=sources) as tmp:
            result.write(tmp)
            if validate:
                runner = ArtifactRunner(result.format, tmp, result.graph_names)
                checked = check_same_noise(
                    result.output_names, result.steps, result.cases, runner, tolerance, rtol, noise_draws_count
                )
                if result.source_samples is not None:
                    checked.distribution = check_distribution(result, tmp, manifest, distribution_samples)
                manifest.validation = checked
            if want_local:
                write_local(
                    result, manifest, tmp, local_file, validate, tolerance, rtol, noise_draws_count,
                    distribution_samples,
                )
            stamp_digest(tmp, manifest)
            embed_manifest(result.format, tmp, manifest)
            verify_digest(tmp, manifest)
    except BaseException:
        if want_local and local_file.exists() and not final.exists():
            local_file.unlink()
        raise
    return manifest
