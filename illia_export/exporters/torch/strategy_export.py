"""Capture strategy ``torch.export``: a live module -> an ExportedProgram -> ONNX / ``.pt2`` / AOTInductor.

The strategy for live modules (and state dict + factory sources): inference modes
(:mod:`.modes`: eval, or ``model.train()`` with normalization in eval for ``mc_dropout``) ->
:func:`~.capture.discover` the random draws at several sizes -> :class:`~.capture.CaptureWrapper`
+ ``torch.export`` -> one :class:`~.capture_result.CaptureResult` per format asked for (manifest
draft, writer, the eager reference for the same noise, the source's own sampling, the
local-variant facts) that the shared tail (:func:`.pipeline.finish`) writes, validates and
places. :func:`capture_formats` holds the modes, adapters and RNG fork for the whole export; the
caller's module modes and torch's global RNG are restored whatever happens.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError, IlliaExportError
from illia_export.exporters.torch import inputs as ti
from illia_export.exporters.torch.capture import (
    BatchTooSmall,
    CaptureWrapper,
    Discovery,
    Site,
    SpecializedDims,
    discover,
    export_program,
    flatten_outputs,
    vectorizable,
)
from illia_export.exporters.torch.capture_result import (
    CaptureResult,
    ValidationStep,
    injected_cases,
    sampled_once,
)
from illia_export.exporters.torch.draws import DrawMode
from illia_export.exporters.torch.mode_checks import check_selection, no_draws_error, set_modes
from illia_export.exporters.torch.modes import ModePlan, inference_modes, plan_modes
from illia_export.exporters.torch.registry import family_adapters
from illia_export.exporters.torch.sizes import batch_probes, follow_dims
from illia_export.exporters.torch.writers import write

#: Sample count of the captured example (validation uses others).
CAPTURE_SAMPLES = 3
DEFAULT_CAPTURE_OPSET = 18


@dataclass
class Capture:
    """A model prepared for export: its inputs, draws, outputs and the ExportedProgram."""

    model: torch.nn.Module
    inputs: list[torch.Tensor]  # at the capture batch
    input_names: list[str]
    axes: list[dict[int, str]]
    discovery: Discovery
    output_names: list[str]
    vectorized: bool
    program: Any = None
    noise_example: list[torch.Tensor] | None = None
    fixed_dims: dict[str, int] | None = None  # default dynamic dims torch.export had to fix

    @property
    def sites(self) -> list[Site]:
        return self.discovery.sites

    @property
    def batch(self) -> int:
        return int(self.inputs[0].shape[0])

    @property
    def sizes(self) -> dict[str, int]:
        """The capture's input sizes (``{"batch": B, "seq_len": T, ...}``)."""
        return self.discovery.sizes[0]

    @property
    def validation_sizes(self) -> list[dict[str, int]]:
        return self.discovery.validation_sizes


def _capture_batch(inputs: list[torch.Tensor]) -> int:
    """The batch size of the capture: the example's, at least 2, and not the capture's S (3)."""
    b = max(int(inputs[0].shape[0]), 2)
    return 2 * b if b == CAPTURE_SAMPLES else b


def validation_batches(batch: int, grouped: bool = False) -> tuple[int, int]:
    """Batch sizes of the same-noise validation: those discovery probed, other than the capture's
    (an odd one and one above 8), or multiples of it for models that split their batch into
    groups (BatchEnsembleLinear)."""
    first, second = batch_probes(batch, grouped)
    return first, second


def prepare(
    model, example_inputs, input_names, output_names, dynamic_axes, samples: str, plan: ModePlan | None = None
) -> Capture:
    """Discover the draws and capture the program (the caller holds the modes and RNG fork)."""
    inputs = ti.as_inputs(example_inputs)
    plan = plan or ModePlan()
    try:
        return _prepare_grouped(model, inputs, input_names, output_names, dynamic_axes, samples, plan)
    except SpecializedDims as exc:
        # torch's nn.GRU / nn.LSTM unroll over the sequence: a default (not user-named) sequence
        # axis is fixed at the example's length, said in a warning and in the manifest
        names = ti.check_names(input_names or ti.default_names("input", len(inputs)), len(inputs), "input")
        fixes = ti.default_axes_fixing(inputs, names, dynamic_axes, set(exc.fixed))
        if fixes is None:
            raise
        warnings.warn(
            f"{exc.fixed} became fixed: the model cannot run at other sizes of "
            f"{sorted(exc.fixed)} under torch.export (torch's nn.GRU / nn.LSTM unroll over the sequence); the "
            "artifact takes inputs of exactly that length",
            UserWarning,
            stacklevel=3,
        )
        cap = _prepare_grouped(model, inputs, input_names, output_names, fixes, samples, plan)
        cap.fixed_dims = dict(exc.fixed)
        return cap


def _prepare_grouped(model, inputs, input_names, output_names, dynamic_axes, samples: str, plan: ModePlan) -> Capture:
    try:
        return _prepare_at(model, inputs, input_names, output_names, dynamic_axes, samples, _capture_batch(inputs), plan)
    except BatchTooSmall as exc:  # the model splits its batch into groups: capture two of them
        return _prepare_at(model, inputs, input_names, output_names, dynamic_axes, samples, 2 * exc.multiple, plan)


def _prepare_at(
    model, inputs, input_names, output_names, dynamic_axes, samples: str, batch: int, plan: ModePlan
) -> Capture:
    names = ti.check_names(input_names or ti.default_names("input", len(inputs)), len(inputs), "input")
    axes = ti.input_axes(inputs, names, dynamic_axes)
    inputs_a = ti.resize(inputs, axes, batch)
    try:
        eval_draws = set_modes(model, inputs_a, plan)
        discovery = discover(model, inputs, axes, batch, eval_draws)
    except IlliaExportError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ExportError(
            f"the model rejects the example inputs {[tuple(x.shape) for x in inputs]}: {text[-1] if text else exc!r}"
        ) from exc
    tensors, keys = flatten_outputs(discovery.outputs)
    out_names = ti.check_names(output_names or keys or ti.default_names("output", len(tensors)), len(tensors), "output")
    vectorized = samples == "vectorized"
    check_selection(model, discovery, plan)
    if not discovery.sites or plan.active and not any(d.sampled for d in discovery.dropout):
        raise no_draws_error(model, inputs_a, discovery, plan)
    if vectorized:
        reason = vectorizable(discovery.sites)
        if reason:
            raise ExportError(f"{reason}: export with samples='per-call'")
    mf.check_unique_names(names + [s.name for s in discovery.sites])
    cap = Capture(model, inputs_a, names, axes, discovery, out_names, vectorized)
    gen = torch.Generator().manual_seed(0)
    lead = [CAPTURE_SAMPLES] if vectorized else []
    cap.noise_example = [torch.randn(lead + list(s.shape(cap.sizes)), generator=gen) for s in cap.sites]
    wrapper = CaptureWrapper(model, cap.sites, len(inputs_a), vectorized)
    cap.program = export_program(wrapper, inputs_a, axes, cap.noise_example)
    return cap


def _output_specs(cap: Capture, lead: list) -> list[mf.TensorSpec]:
    """Output specs from the outputs at the probed sizes: which dims follow the batch (or another input dim)."""
    runs = [flatten_outputs(out)[0] for out in cap.discovery.all_outputs]
    specs = []
    for i, (name, a) in enumerate(zip(cap.output_names, runs[0])):
        shapes = [tuple(run[i].shape) for run in runs]
        dims = follow_dims(shapes, cap.discovery.sizes, f"output {name!r}")
        if not dims or mf.batch_multiple(dims[0]) is None:
            raise ExportError(
                f"output {name!r} has shape {list(a.shape)} at batch {cap.batch}: every output needs the batch "
                "(or a multiple of it) as its first axis"
            )
        specs.append(mf.TensorSpec(name, lead + dims, ti.dtype_name(a)))
    return specs


def token_range(model: torch.nn.Module, inputs: list[torch.Tensor], index: int, vocab: dict[int, int]) -> list[int] | None:
    """``[0, vocabulary)`` of integer input `index`, else None.

    The vocabulary is the size of the embedding table(s) discovery saw the input index as is
    (a transformer's word table, not its position or token-type tables); for a model that
    transforms its ids first, the smallest embedding table when it has one integer input.
    The runtime refuses ids outside it: in a vectorized graph an out-of-range id would read
    another Monte Carlo sample's rows of the stacked tables.
    """
    if index in vocab:
        return [0, vocab[index]]
    integer = [x for x in inputs if not x.is_floating_point()]
    sizes = [
        int(m.num_embeddings)
        for m in model.modules()
        if isinstance(getattr(m, "num_embeddings", None), int) and type(m).__name__ == "Embedding"
    ]
    if len(integer) != 1 or not sizes:
        return None
    return [0, min(sizes)]


def build_manifest(cap: Capture, fmt: str, task: str, source_kind: str, opset: int) -> mf.Manifest:
    lead = [mf.SAMPLE_DIM] if cap.vectorized else []
    return mf.Manifest(
        format=fmt,
        source=source_kind,
        inputs=[
            mf.TensorSpec(
                n,
                ti.spec_shape(x, ax),
                ti.dtype_name(x),
                range=None if x.is_floating_point() else token_range(cap.model, cap.inputs, i, cap.discovery.vocab),
            )
            for i, (n, x, ax) in enumerate(zip(cap.input_names, cap.inputs, cap.axes))
        ],
        noise=[
            mf.NoiseSpec(s.name, s.parameter, s.spec_shape(cap.vectorized), kind=s.kind, transform=s.transform)
            for s in cap.sites
        ],
        outputs=_output_specs(cap, lead),
        sample_axis=0 if cap.vectorized else None,
        task=task,
        extra={
            "exporter": "illia_export.torch",
            "capture": "torch.export",
            "opset": opset if fmt == "onnx" else None,
        },
        dropout=list(cap.discovery.dropout),
    )


# ------------------------------------------------------------------------------------ validation
def reference_outputs(model, inputs: list[torch.Tensor], noise: list[np.ndarray], vectorized: bool) -> list[np.ndarray]:
    """The eager model's outputs for this noise (one sample at a time when vectorized)."""

    def once(feed: list[np.ndarray]) -> list[np.ndarray]:
        with DrawMode(feed=[torch.from_numpy(np.ascontiguousarray(z)) for z in feed]) as mode:
            out = model(*inputs)
        if mode.used != len(feed):
            raise ExportError(
                f"the model made {mode.used} random draws during validation, {len(feed)} when first run: the "
                "number of draws depends on the data"
            )
        return [t.detach().numpy() for t in flatten_outputs(out)[0]]

    with torch.no_grad():
        if not vectorized:
            return once(noise)
        per = [once([z[s] for z in noise]) for s in range(noise[0].shape[0])]
    return [np.stack([p[i] for p in per]) for i in range(len(per[0]))]



def source_samples(model, inputs: list[torch.Tensor], num: int, seed: int) -> list[np.ndarray]:
    """`num` forward passes of the eager model with its own RNG: ``[num, B, ...]`` per output."""
    torch.manual_seed(seed)
    per: list[list[np.ndarray]] = []
    with torch.no_grad():
        for _ in range(num):
            per.append([t.detach().numpy() for t in flatten_outputs(model(*inputs))[0]])
    return [np.stack([p[i] for p in per]) for i in range(len(per[0]))]


def batch_multiple(cap: Capture) -> int:
    """The number every batch must be a multiple of: what torch.export asked for, and the
    member count of each layer that splits its batch into groups (BatchEnsembleLinear)."""
    import math

    from illia_export.exporters.torch.registry import BATCH_MIXING_LAYERS, class_name

    k = int(getattr(cap.program, "illia_batch_multiple", 1) or 1)
    for m in cap.model.modules():
        if class_name(m) in BATCH_MIXING_LAYERS:
            k = math.lcm(k, int(m.num_members))
    return k


@contextlib.contextmanager
def no_distribution_validation():
    """torch.distributions' argument checks (``.all()`` on values) are data-dependent branches
    that torch.export cannot trace; layers that compute log-priors in forward (blitz,
    torch-uncertainty) build such distributions. Off during capture, restored after."""
    from torch.distributions import Distribution

    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)




def validation_steps(cap: Capture, samples_per_batch: Sequence[int] = (2, 5)) -> list[ValidationStep]:
    """The same-noise validation's sizes: those discovery probed other than the capture's, with S other than 3."""
    return [
        ValidationStep(
            sizes[mf.BATCH_DIM],
            ti.resize_to(cap.inputs, cap.axes, sizes),
            [s.shape(sizes) for s in cap.sites],
            num_samples if cap.vectorized else None,
            seed=10 + i,
        )
        for i, (sizes, num_samples) in enumerate(zip(cap.validation_sizes, samples_per_batch))
    ]


def _cases(cap: Capture):
    return injected_cases(lambda xs, noise: reference_outputs(cap.model, xs, noise, cap.vectorized))


def same_noise(
    cap: Capture, runner, tolerance: float, rtol: float, draws: int, samples_per_batch: Sequence[int] = (2, 5)
) -> mf.Validation:
    """The artifact against the eager model for the same noise, at batch sizes and S other than captured
    (the tail's one check, :func:`.pipeline.check_same_noise`, on this capture's steps)."""
    from illia_export.exporters.torch.pipeline import check_same_noise

    steps = validation_steps(cap, samples_per_batch)
    return check_same_noise(cap.output_names, steps, _cases(cap), runner, tolerance, rtol, draws)


def distribution_inputs(cap: Capture) -> list[torch.Tensor]:
    """The rows the distribution check samples: up to 4, a multiple of what the model's groups need
    (BatchEnsembleLinear splits its batch into k members)."""
    k = batch_multiple(cap)
    return ti.resize(cap.inputs, cap.axes, max(k, k * (min(cap.batch, 4) // k)))


def _extras(cap: Capture, manifest: mf.Manifest, plan: ModePlan, fmt: str) -> None:
    """What the capture had to decide about modes and sizes, said in ``extra``."""
    if plan.kept:
        manifest.extra["kept_in_eval"] = dict(plan.kept)
    if getattr(cap.program, "illia_min_sizes", None) and fmt != "onnx":
        # the torch program asserts these (ONNX graphs run at any size)
        manifest.extra["min_sizes"] = dict(cap.program.illia_min_sizes)
    if getattr(cap.program, "illia_max_sizes", None):
        # the model bounds these dims (a position table); longer inputs fail in the graph
        manifest.extra["max_sizes"] = dict(cap.program.illia_max_sizes)
    if cap.fixed_dims:
        manifest.extra["fixed_dims"] = dict(cap.fixed_dims)
    if getattr(cap.program, "illia_size_constraints", None):
        manifest.extra["size_constraints"] = list(cap.program.illia_size_constraints)


@contextlib.contextmanager
def capture_formats(
    model: torch.nn.Module,
    example_inputs,
    *,
    formats: Sequence[str],
    samples: str,
    task: str,
    opset: int | None,
    input_names=None,
    output_names=None,
    dynamic_axes=None,
    mc_dropout: bool | Sequence[str] | None = None,
    source_kind: str = "torch",
) -> Iterator[dict[str, CaptureResult]]:
    """One torch.export capture and one record per format written from it (ONNX, .pt2 and
    AOTInductor all start from the same ExportedProgram): ``{format: CaptureResult}``, yielded
    while the modes, family adapters and RNG fork are held."""
    from illia_export.exporters.torch.export_local import local_plan

    opset = opset or DEFAULT_CAPTURE_OPSET
    plan = plan_modes(model, mc_dropout)
    with (
        torch.random.fork_rng(devices=[]),
        inference_modes(model, []),
        family_adapters(model),
        no_distribution_validation(),
        warnings.catch_warnings(),
    ):
        # torch 2.13's own pytree code (deep copies inside torch.export / the ONNX exporter) trips
        # its deprecation of LeafSpec checks; nothing in this package calls that API
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        cap = prepare(model, example_inputs, input_names, output_names, dynamic_axes, samples, plan)
        steps, cases, rows = validation_steps(cap), _cases(cap), distribution_inputs(cap)
        sampling = sampled_once(lambda xs, num, seed: source_samples(cap.model, xs, num, seed))
        results = {}
        for fmt in formats:
            manifest = build_manifest(cap, fmt, task, source_kind, opset)
            _extras(cap, manifest, plan, fmt)
            results[fmt] = CaptureResult(
                manifest=manifest,
                write=_writer(cap, fmt, manifest, opset),
                graph_names=cap.input_names + [s.name for s in cap.sites],
                steps=steps,
                cases=cases,
                distribution_inputs=rows,
                source_samples=sampling,
                local=local_plan(cap, manifest, opset),
            )
        yield results


def _writer(cap: Capture, fmt: str, manifest: mf.Manifest, opset: int):
    """``write(tmp)``: the captured program as `fmt`."""

    def write_main(tmp) -> None:
        graph_inputs = manifest.inputs + manifest.noise
        write(fmt, cap.program, cap.inputs + cap.noise_example, tmp, graph_inputs, manifest.outputs, opset)

    return write_main
