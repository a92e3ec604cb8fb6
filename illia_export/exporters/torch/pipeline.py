"""The torch.export pipeline (capture v2): live module -> ONNX / ``.pt2`` / AOTInductor.

source (live module) -> inference modes (:mod:`.modes`: eval, or ``model.train()`` with
normalization in eval for ``mc_dropout``) -> :func:`discover`
the random draws -> :class:`CaptureWrapper` + ``torch.export`` -> writer (temporary file) ->
same-noise validation (other S and B than captured, every draw, rtol + atol, NaN fails) ->
distribution validation (source's own RNG vs the runtime's noise) -> optional local variant ->
manifest embedded -> renamed into place. The caller's module modes and torch's global RNG are
restored whatever happens.

Length: the pipeline's orchestration and its verification steps (same-noise, distribution,
local variant, mc_dropout's mode planning and messages) are one sequence whose order matters;
the stages themselves live in :mod:`.capture`, :mod:`.writers`, :mod:`.modes` and
:mod:`illia_export.exporters.verify`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from illia_export.artifact import manifest as mf
from illia_export.artifact.atomic import atomic_output, check_output_path
from illia_export.artifact.digest import stamp_digest, verify_digest
from illia_export.errors import ExportError, IlliaExportError
from illia_export.exporters.torch import inputs as ti
from illia_export.exporters.torch.capture import (
    BatchTooSmall,
    CaptureWrapper,
    Discovery,
    Site,
    SpecializedDims,
    discover,
    draw_keys,
    export_program,
    flatten_outputs,
    vectorizable,
)
from illia_export.exporters.torch.draws import DrawMode
from illia_export.exporters.torch.modes import (
    ModePlan,
    apply_modes,
    find_hidden_randomness,
    inference_modes,
    plan_modes,
    probe,
)
from illia_export.exporters.torch.registry import family_adapters
from illia_export.exporters.torch.sizes import batch_probes, follow_dims
from illia_export.exporters.torch.writers import ArtifactRunner, embed_manifest, write
from illia_export.exporters.verify.distribution import DEFAULT_SAMPLES
from illia_export.exporters.verify.distribution import compare as compare_distributions
from illia_export.exporters.verify.same_noise import Comparison, check_deterministic, noise_draws
from illia_export.nn.torch.module import sample_blocks

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


def _train_draws(model, inputs: list[torch.Tensor]) -> list[tuple[str, str]]:
    """The (module, op) of each draw the model would make with ``mc_dropout=True``."""
    from illia_export.exporters.torch.capture import _record
    from illia_export.exporters.torch.draws import ModuleTracker

    plan = plan_modes(model, True)
    apply_modes(model, plan.train)
    try:
        return draw_keys(_record(model, inputs, ModuleTracker(model), seed=3)[0])
    except IlliaExportError:
        return []
    finally:
        apply_modes(model, [])


def _describe(keys: Sequence[tuple[str, str]]) -> str:
    seen = list(dict.fromkeys(f"{m!r} ({op})" if m else f"the model's forward ({op})" for m, op in keys))
    return ", ".join(seen[:8]) + (f" and {len(seen) - 8} more" if len(seen) > 8 else "")


def _no_draws_error(model, inputs, discovery: Discovery, plan: ModePlan) -> ExportError:
    """Why there is nothing to sample, naming what would draw in training mode."""
    if plan.active:
        return ExportError(
            "mc_dropout is set, but no module draws more random numbers in training mode than in eval mode (no "
            "dropout module, no functional dropout, DropPath or other mask is active): there is nothing to sample; "
            "export without mc_dropout"
        )
    would = _train_draws(model, inputs)
    off = [d.path for d in discovery.dropout if not d.sampled]
    if would:
        return ExportError(
            "the model draws no random numbers in eval mode, so there is nothing to sample (no Bayesian layer, no "
            f"active dropout); in training mode it draws in {_describe(would)}"
            + (f" (dropout modules {off})" if off else "")
            + ": pass mc_dropout=True (CLI --mc-dropout) to sample them as model.train() does"
        )
    hint = f"; its dropout modules {off} draw nothing even in training mode (p=0?)" if off else ""
    return ExportError(
        "the model draws no random numbers, in eval or in training mode, so there is nothing to sample (no Bayesian "
        f"layer, no dropout){hint}"
    )


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


def _set_modes(model, inputs_a: list[torch.Tensor], plan: ModePlan) -> list[tuple[str, str]] | None:
    """Apply the plan (probing flags that change more than randomness); the eval-mode draws."""
    from illia_export.exporters.torch.capture import _record
    from illia_export.exporters.torch.draws import ModuleTracker

    if not plan.active:
        find_hidden_randomness(model, inputs_a)
        return None
    tracker = ModuleTracker(model)
    apply_modes(model, [])
    eval_draws = draw_keys(_record(model, inputs_a, tracker, seed=5)[0])
    apply_modes(model, plan.train)
    find_hidden_randomness(model, inputs_a)

    def run():
        draws, out = _record(model, inputs_a, tracker, seed=7)
        return draw_keys(draws), [t.detach() for t in flatten_outputs(out)[0]]

    own = {m for m, _ in run()[0]}
    probe(model, plan, run, own)
    return eval_draws


def _check_selection(model, discovery: Discovery, plan: ModePlan) -> None:
    """Each module ``mc_dropout`` names must sample something in training mode."""
    sampling = {d.path for d in discovery.dropout if d.sampled}
    if isinstance(plan.requested, list):
        idle = [n for n in plan.requested if not any(p == n or p.startswith(f"{n}.") or not n for p in sampling)]
        if idle:
            from illia_export.exporters.torch.modes import likely_dropout

            raise ExportError(
                f"mc_dropout names {idle}, which draw nothing in training mode beyond eval mode (they are not dropout "
                f"modules); the modules that sample in training mode are {sorted(sampling) or likely_dropout(model)}"
            )


def _prepare_at(
    model, inputs, input_names, output_names, dynamic_axes, samples: str, batch: int, plan: ModePlan
) -> Capture:
    names = ti.check_names(input_names or ti.default_names("input", len(inputs)), len(inputs), "input")
    axes = ti.input_axes(inputs, names, dynamic_axes)
    inputs_a = ti.resize(inputs, axes, batch)
    try:
        eval_draws = _set_modes(model, inputs_a, plan)
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
    _check_selection(model, discovery, plan)
    if not discovery.sites or plan.active and not any(d.sampled for d in discovery.dropout):
        raise _no_draws_error(model, inputs_a, discovery, plan)
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


def same_noise(
    cap: Capture, runner, tolerance: float, rtol: float, draws: int, samples_per_batch: Sequence[int] = (2, 5)
) -> mf.Validation:
    """The artifact against the eager model for the same noise, at batch sizes and S other than captured."""
    cmp = Comparison(cap.output_names, tolerance, rtol)
    for i, (sizes, num_samples) in enumerate(zip(cap.validation_sizes, samples_per_batch)):
        xs = ti.resize_to(cap.inputs, cap.axes, sizes)
        cmp.note_batch(sizes[mf.BATCH_DIM])
        shapes = [s.shape(sizes) for s in cap.sites]
        sets = noise_draws(shapes, draws, num_samples if cap.vectorized else None, seed=10 + i)
        for k, noise in enumerate(sets):
            expected = reference_outputs(cap.model, xs, noise, cap.vectorized)
            if i == 0 and k == 0:
                check_deterministic(runner, [x.numpy() for x in xs] + noise, cap.output_names)
            got = runner([x.numpy() for x in xs] + noise)
            cmp.add(got, expected, zero_noise=k == len(sets) - 1)
    return cmp.result(draws)


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


def distribution(cap: Capture, path: Path, manifest: mf.Manifest, num: int, strategy: str = "fresh") -> dict:
    """Distribution check of the artifact at `path` (read with `manifest`) against the source."""
    from illia_export.runtime.predictor import Predictor

    # a model that splits its batch into groups (BatchEnsembleLinear) needs a multiple of k rows
    k = batch_multiple(cap)
    rows = max(k, k * (min(cap.batch, 4) // k))
    xs = ti.resize(cap.inputs, cap.axes, rows)
    source = source_samples(cap.model, xs, num, seed=4321)
    # our own file, being written: not yet stamped, and ours (an AOTI package included)
    pred = Predictor(path, manifest, allow_unverified=True, trust_native_code=True).predict(
        [x.numpy() for x in xs], num_samples=num, seed=4321, strategy=strategy
    )
    artifact = [pred.outputs[n] for n in cap.output_names]
    what = "the local-reparameterization variant" if strategy == "local" else "the artifact"
    return compare_distributions(cap.output_names, source, artifact, what=what)


# ------------------------------------------------------------------------------------ local variant
def local_unavailable_reason(cap: Capture, fmt: str) -> str | None:
    """None when a local-reparameterization variant is exact for this model, else why not."""
    from illia_export.nn.torch.linear import Linear

    if fmt != "onnx":
        return f"the local-reparameterization variant is written for ONNX artifacts, not {fmt}"
    if not cap.vectorized:
        return "the local-reparameterization variant needs samples='vectorized'"
    if not all(x.is_floating_point() for x in cap.inputs):
        return "the model has integer (token) inputs; local reparameterization is exact for Linear layers only"
    modules = dict(cap.model.named_modules())
    for s in cap.sites:
        owner = s.parameter.rpartition(".")[0]
        if s.kind != "weight" or not isinstance(modules.get(owner), Linear):
            return (
                f"the draw {s.parameter!r} does not belong to an illia Linear layer; local reparameterization "
                "is exact only when every random draw is a Linear layer's weight noise"
            )
    for path, ranks in cap.discovery.linear_calls.items():
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


class LocalWrapper(torch.nn.Module):
    """``forward(*inputs, *pre_activation_noise)``: every Linear uses local reparameterization."""

    def __init__(self, model: torch.nn.Module, layers: list[str], num_inputs: int) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        self.num_inputs = num_inputs

    def forward(self, *args):
        inputs, noise = list(args[: self.num_inputs]), list(args[self.num_inputs :])
        num_samples, batch = noise[0].shape[0], inputs[0].shape[0]
        for n in noise[1:]:
            torch._check(n.shape[0] == num_samples)
        folded = [x.repeat(num_samples, *([1] * (x.dim() - 1))) for x in inputs]
        modules = [self.model.get_submodule(p) for p in self.layers]
        for m, z in zip(modules, noise):
            m.set_local_noise(z.reshape(-1, z.shape[2]))
        try:
            with sample_blocks(num_samples):
                out = self.model(*folded)
        finally:
            for m in modules:
                m.clear_local_noise()
        return tuple(o.reshape(num_samples, batch, *o.shape[1:]) for o in flatten_outputs(out)[0])


def local_reference(cap: Capture, layers: list[str], inputs, noise: list[np.ndarray]) -> list[np.ndarray]:
    modules = [cap.model.get_submodule(p) for p in layers]
    per = []
    with torch.no_grad():
        for s in range(noise[0].shape[0]):
            for m, z in zip(modules, noise):
                m.set_local_noise(torch.from_numpy(z[s]))
            try:
                per.append([t.numpy() for t in flatten_outputs(cap.model(*inputs))[0]])
            finally:
                for m in modules:
                    m.clear_local_noise()
    return [np.stack([p[i] for p in per]) for i in range(len(per[0]))]


def write_local(
    cap: Capture, manifest: mf.Manifest, main_tmp: Path, local_file: Path, opset: int, validate: bool,
    tolerance: float, rtol: float, draws: int, dist_samples: int,
) -> None:
    """Write, validate and place the local variant; on any failure record why in the manifest."""
    layers: list[str] = []  # the Linear layers, in draw order
    for s in cap.sites:
        owner = s.parameter.rpartition(".")[0]
        if owner not in layers:
            layers.append(owner)
    modules = dict(cap.model.named_modules())
    outs = [int(modules[p].output_size) for p in layers]
    names = [mf.local_noise_input_name(p) for p in layers]
    specs = [mf.NoiseSpec(n, p, [mf.SAMPLE_DIM, mf.BATCH_DIM, o]) for n, p, o in zip(names, layers, outs)]
    try:
        mf.check_unique_names(cap.input_names + names)
        wrapper = LocalWrapper(cap.model, layers, len(cap.inputs))
        example = [torch.randn(CAPTURE_SAMPLES, cap.batch, o) for o in outs]
        program = _export_local(wrapper, cap, example, names)
        main = local_file.with_name(local_file.stem.removesuffix(".local") + local_file.suffix)
        with atomic_output(local_file, part_of=main) as tmp:
            graph_inputs = manifest.inputs + specs
            write("onnx", program, cap.inputs + example, tmp, graph_inputs, manifest.outputs, opset)
            if validate:
                runner = ArtifactRunner("onnx", tmp, cap.input_names + names)
                cmp = Comparison(cap.output_names, tolerance, rtol)
                for i, sizes in enumerate(cap.validation_sizes):
                    batch = sizes[mf.BATCH_DIM]
                    xs = ti.resize_to(cap.inputs, cap.axes, sizes)
                    for noise in noise_draws([(batch, o) for o in outs], draws, 2 + 3 * i, seed=20 + i):
                        cmp.add(runner([x.numpy() for x in xs] + noise), local_reference(cap, layers, xs, noise))
                cmp.result(draws)
        manifest.local = mf.LocalVariant(file=local_file.name, noise=specs)
        if validate:
            distribution(cap, main_tmp, manifest, dist_samples, strategy="local")
    except IlliaExportError as exc:
        manifest.local = None
        manifest.local_unavailable = f"the local variant failed its checks: {str(exc).splitlines()[0]}"
        if local_file.exists():
            local_file.unlink()


def _export_local(wrapper: LocalWrapper, cap: Capture, example, names) -> Any:
    import torch.fx.experimental._config as fx_config
    from torch.export import Dim

    batch, samples = Dim("batch", min=1), Dim("samples", min=1)
    shapes = [{0: batch} for _ in cap.inputs] + [{0: samples, 1: batch} for _ in example]
    import warnings

    try:
        with fx_config.patch(backed_size_oblivious=True), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assigned during export", category=UserWarning)
            return torch.export.export(wrapper, tuple(cap.inputs + example), dynamic_shapes=(tuple(shapes),), strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export could not capture the local variant: {exc}") from exc


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


# ------------------------------------------------------------------------------------ entry point
def export_capture(
    model: torch.nn.Module,
    example_inputs,
    path,
    *,
    format: str,
    samples: str,
    task: str,
    opset: int | None,
    input_names=None,
    output_names=None,
    dynamic_axes=None,
    validate: bool = True,
    tolerance: float,
    rtol: float,
    noise_draws_count: int = 3,
    local_variant: bool | None = None,
    mc_dropout: bool | Sequence[str] | None = None,
    distribution_samples: int = DEFAULT_SAMPLES,
    source_kind: str = "torch",
    likelihood=None,
    sources: Sequence[Path] = (),
) -> mf.Manifest:
    """Export a live module through torch.export; see :func:`illia_export.export` for the arguments."""
    opset = opset or DEFAULT_CAPTURE_OPSET
    plan = plan_modes(model, mc_dropout)
    final = Path(path)
    local_file = final.with_name(f"{final.stem}.local{final.suffix}")
    check_output_path(final, sources=sources)
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
        manifest = build_manifest(cap, format, task, source_kind, opset)
        if plan.kept:
            manifest.extra["kept_in_eval"] = dict(plan.kept)
        if getattr(cap.program, "illia_min_sizes", None) and format != "onnx":
            # the torch program asserts these (ONNX graphs run at any size)
            manifest.extra["min_sizes"] = dict(cap.program.illia_min_sizes)
        if getattr(cap.program, "illia_max_sizes", None):
            # the model bounds these dims (a position table); longer inputs fail in the graph
            manifest.extra["max_sizes"] = dict(cap.program.illia_max_sizes)
        if cap.fixed_dims:
            manifest.extra["fixed_dims"] = dict(cap.fixed_dims)
        if getattr(cap.program, "illia_size_constraints", None):
            manifest.extra["size_constraints"] = list(cap.program.illia_size_constraints)
        if likelihood is not None:
            manifest.likelihood = likelihood(manifest.outputs) if callable(likelihood) else likelihood
            manifest.__post_init__()
        reason = local_unavailable_reason(cap, format)
        if local_variant is True and reason:
            raise ExportError(f"a local-reparameterization variant was asked for, but {reason}")
        want_local = local_variant is not False and reason is None
        if reason and cap.vectorized and local_variant is not False:
            manifest.local_unavailable = reason
        try:
            with atomic_output(final, sources=sources) as tmp:
                graph_inputs = manifest.inputs + manifest.noise
                write(format, cap.program, cap.inputs + cap.noise_example, tmp, graph_inputs, manifest.outputs, opset)
                if validate:
                    runner = ArtifactRunner(format, tmp, cap.input_names + [s.name for s in cap.sites])
                    result = same_noise(cap, runner, tolerance, rtol, noise_draws_count)
                    result.distribution = distribution(cap, tmp, manifest, distribution_samples)
                    manifest.validation = result
                if want_local:
                    write_local(
                        cap, manifest, tmp, local_file, opset, validate, tolerance, rtol, noise_draws_count,
                        distribution_samples,
                    )
                stamp_digest(tmp, manifest)
                embed_manifest(format, tmp, manifest)
                verify_digest(tmp, manifest)
        except BaseException:
            if want_local and local_file.exists() and not final.exists():
                local_file.unlink()
            raise
    return manifest
