"""Capture v2: any stochastic PyTorch module -> an ExportedProgram whose noise is explicit.

Stages (docs/architecture.md, "Capture pipeline"):

1. :func:`discover` runs the eager model at several sizes (:mod:`.sizes`: odd and large
   batches, every other dynamic input dim such as a token input's ``seq_len`` varied on its own)
   under a recording :class:`~illia_export.exporters.torch.draws.DrawMode`: every random draw
   is listed with the module that made it, its shape and its transform. Dims that follow an
   input dim (dropout masks, Flipout signs, ``k×`` the batch for models that repeat their batch,
   a token model's ``[batch, seq_len, hidden]`` masks) become ``"batch"`` / ``"k*batch"`` /
   ``"seq_len"``; a list of draws that differs between the runs is refused.
2. :class:`CaptureWrapper` is ``forward(*inputs, *noise)``: it feeds the noise to the draws in
   order. In a vectorized capture the inputs are repeated S times sample-major, per-sample
   noise carries a leading ``samples`` axis (weights ``[S, *shape]``), per-example noise is
   ``[S, B, ...]``, and the outputs are unfolded to ``[S, B, ...]``.
3. :func:`export_program` runs ``torch.export`` with one shared ``samples`` dim and one Dim per
   named input dim, shared across inputs and noise (derived dims for ``k*batch``), under ``backed_size_oblivious`` so no size is
   specialized to 0/1, and refuses a program that ignores one of its noise inputs.

Length: discovery and the capture wrapper share the Site records and the folding rules of the
vectorized graph; the size probing already lives in :mod:`.sizes`, the modes in :mod:`.modes`
and the draw interception in :mod:`.draws`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError
from illia_export.exporters.torch import inputs as ti
from illia_export.exporters.torch.draws import DrawMode, ModuleTracker, RecordedDraw
from illia_export.exporters.torch.modes import DROPOUT_TYPES, dropout_modules, inference_modes  # noqa: F401
from illia_export.exporters.torch.sizes import Probe, check_same_draws, follow_dims, parse_dim, resolve
from illia_export.nn.torch.module import sample_blocks

_OUR_DISTRIBUTION = "illia_export.distributions.torch"


@dataclass
class Site:
    """One noise input of the captured graph: a random draw of the source model."""

    name: str  # graph input name (mf.noise_input_name(parameter))
    parameter: str  # dotted path naming what the noise feeds
    module: str  # the module that drew it
    op: str
    kind: str  # mf.NOISE_KINDS
    transform: str  # mf.NOISE_TRANSFORMS
    dims: list[mf.Dim]  # without the sample axis: ints, "batch", "k*batch", other input dims ("seq_len")
    example_shape: tuple[int, ...]  # at the discovery's base sizes

    @property
    def per_example(self) -> bool:
        return any(mf.batch_multiple(d) is not None for d in self.dims)

    @property
    def dynamic(self) -> bool:
        """Whether some dim follows an input dim (the batch or another)."""
        return any(parse_dim(d) is not None for d in self.dims)

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The per-call shape at the input sizes `sizes` (``{"batch": 4, "seq_len": 9}``)."""
        return resolve(self.dims, sizes)

    def spec_shape(self, vectorized: bool) -> list[mf.Dim]:
        return ([mf.SAMPLE_DIM] if vectorized else []) + list(self.dims)


@dataclass
class Discovery:
    """What the eager runs showed: the draws, the dropout modules, how Linear layers are called."""

    sites: list[Site]
    dropout: list[mf.DropoutSite]
    linear_calls: dict[str, list[int]] = field(default_factory=dict)  # own Linear path -> input ranks
    outputs: Any = None  # the model's outputs at the first batch size
    outputs_b: Any = None  # and at the second
    sizes: list[dict[str, int]] = field(default_factory=list)  # the probed sizes, base first
    all_outputs: list[Any] = field(default_factory=list)  # the outputs at each of them
    validation_sizes: list[dict[str, int]] = field(default_factory=list)  # where to validate
    grouped_batch: bool = False  # the model refused odd batches (probed at multiples instead)
    vocab: dict[int, int] = field(default_factory=dict)  # integer input index -> rows of the table it indexes


# ------------------------------------------------------------------------------------- discovery
def _record(model, inputs, tracker: ModuleTracker, seed: int) -> tuple[list[RecordedDraw], Any]:
    gen = torch.Generator().manual_seed(seed)
    mode = DrawMode(tracker=tracker, generator=gen)
    with torch.no_grad(), tracker, mode:
        out = model(*inputs)
    return mode.recorded, out


def _is_our_distribution(module: torch.nn.Module) -> bool:
    return type(module).__module__ == _OUR_DISTRIBUTION


def _parameter_name(model, draw: RecordedDraw, counts: dict[str, int]) -> str:
    """Name what a draw feeds.

    Draws shaped like a parameter (``randn_like(rho)``) are named after its owner when that is
    one of our GaussianDistributions (``fc1.weights_distribution``, the legacy names), else
    after the parameter (``fc1.weight_log_sigma``); in-place fills after their buffer
    (``fc1.eps_weight``); anything else after the module and the op (``drop.dropout``).
    """
    path = draw.module
    base = None
    like, target = draw.call.like, draw.call.target
    if like is not None:
        for owner_path, owner in model.named_modules():
            for name, par in owner.named_parameters(recurse=False):
                if par is like:
                    base = owner_path if _is_our_distribution(owner) else _join(owner_path, name)
    if base is None and target is not None:
        for owner_path, owner in model.named_modules():
            for name, buf in owner.named_buffers(recurse=False):
                if buf.data_ptr() == target.data_ptr() and buf.shape == target.shape:
                    base = _join(owner_path, name)
    if base is None:
        op = re.sub(r"[^A-Za-z0-9]+", "_", draw.call.op.replace("Tensor.", "")).strip("_")
        base = _join(path, op)
    n = counts.get(base, 0)
    counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def batch_dims(shape1: tuple[int, ...], shape2: tuple[int, ...], b1: int, b2: int, where: str) -> list[mf.Dim]:
    """Dims of a tensor seen at two batch sizes (other dims fixed): ints, ``"batch"``, ``"k*batch"``."""
    return follow_dims([shape1, shape2], [{mf.BATCH_DIM: b1}, {mf.BATCH_DIM: b2}], where)


def _kind(draw: RecordedDraw, dims: list[mf.Dim], module, train_only: bool = False) -> str:
    if draw.call.kind == "dropout" or train_only and draw.call.transform == "bernoulli":
        return "dropout"  # a mask drawn only in training mode (LockedDropout, DropPath, DropConnect)
    per_example = any(mf.batch_multiple(d) is not None for d in dims)
    if per_example and "flipout" in type(module).__name__.lower() and draw.call.transform == "uniform":
        return "flipout_sign"
    if not per_example:
        # noise sized by another input dim (a sequence-long draw shared across the batch) is no weight
        return "draw" if any(parse_dim(d) is not None for d in dims) else "weight"
    return "draw"


def draw_keys(draws: list[RecordedDraw]) -> list[tuple[str, str]]:
    return [(d.module, d.call.op) for d in draws]


def discover(
    model,
    inputs: list[torch.Tensor],
    axes: list[dict[int, str]],
    batch: int,
    eval_draws: list[tuple[str, str]] | None = None,
) -> Discovery:
    """Run the eager model at the probed sizes and list its draws (see the module docstring).

    `inputs` are the examples, `axes` their dynamic axes; the base run has `batch` rows and the
    examples' other sizes, the others vary one dynamic dim at a time (:mod:`.sizes`). The caller
    has put the model in its inference modes (:mod:`.modes`) and forked torch's RNG; draws come
    from a private generator. `eval_draws` (``(module, op)`` of each draw in eval mode, when
    ``mc_dropout`` changed the modes) tells which draws only training mode makes: those are the
    dropout-like ones of the manifest's ``dropout`` list.
    """
    modules = dict(model.named_modules())
    tracker = ModuleTracker(model)
    linear_calls: dict[str, list[int]] = {}
    hooks = []
    from illia_export.nn.torch.linear import Linear as OurLinear

    for path, module in modules.items():
        if isinstance(module, OurLinear):

            def hook(mod, args, _path=path):
                linear_calls.setdefault(_path, []).append(int(args[0].dim()) if args else -1)

            hooks.append(module.register_forward_pre_hook(hook))
    first_calls: dict[str, list[int]] = {}
    vocab: dict[int, int] = {}
    base_inputs: list[torch.Tensor] = []
    for module in modules.values():
        if isinstance(getattr(module, "num_embeddings", None), int):
            hooks.append(module.register_forward_pre_hook(_table_hook(base_inputs, vocab)))

    def run(sizes: dict[str, int]):
        linear_calls.clear()
        xs = ti.resize_to(inputs, axes, sizes)
        base_inputs[:] = xs if not probe.results else []
        result = _record(model, xs, tracker, seed=1 + len(probe.results))
        if not probe.results:
            first_calls.update({k: list(v) for k, v in linear_calls.items()})
        return result

    probe = Probe(run, {**ti.base_sizes(inputs, axes), mf.BATCH_DIM: batch})
    try:
        probe.go()
    finally:
        for h in hooks:
            h.remove()
    draw_lists = [draws for draws, _ in probe.results]
    check_same_draws(draw_lists, probe.sizes)
    counts: dict[str, int] = {}
    sites: list[Site] = []
    in_eval = Counter(eval_draws or [])
    owners: dict[str, float | None] = {}
    for i, a in enumerate(draw_lists[0]):
        key = (a.module, a.call.op)
        train_only = eval_draws is not None and in_eval[key] == 0
        if not train_only:
            in_eval[key] -= 1
        if train_only or a.call.kind == "dropout":
            owners.setdefault(a.module, a.call.p)
        where = f"the draw of module {a.module!r} ({a.call.op})" if a.module else f"a draw ({a.call.op}) of the forward"
        dims = follow_dims([draws[i].call.shape for draws in draw_lists], probe.sizes, where)
        parameter = _parameter_name(model, a, counts)
        sites.append(
            Site(
                name=mf.noise_input_name(parameter),
                parameter=parameter,
                module=a.module,
                op=a.call.op,
                kind=_kind(a, dims, modules.get(a.module), train_only),
                transform=a.call.transform,
                dims=dims,
                example_shape=a.call.shape,
            )
        )
    outputs = [out for _, out in probe.results]
    return Discovery(
        sites, dropout_sites(model, sites, owners), first_calls, outputs[0], outputs[1], sizes=probe.sizes,
        all_outputs=outputs, validation_sizes=probe.validation_sizes(), grouped_batch=probe.grouped, vocab=vocab,
    )


def dropout_sites(model, sites: list[Site], owners: dict[str, float | None]) -> list[mf.DropoutSite]:
    """The manifest's ``dropout`` list: every ``nn.Dropout*`` module and every module that draws a
    dropout-like mask; ``sampled`` only where the module owns a noise input of the graph."""
    drawing = {s.module for s in sites}
    modules = dict(model.named_modules())
    out = [
        mf.DropoutSite(path, float(getattr(m, "p", 0.0)), path in drawing) for path, m in dropout_modules(model).items()
    ]
    listed = {d.path for d in out}
    for path, p in owners.items():
        if path in listed:
            continue
        module = modules.get(path)
        attr = next((getattr(module, a) for a in ("p", "drop_prob", "dropout_prob", "dropout") if isinstance(getattr(module, a, None), float)), None)
        out.append(mf.DropoutSite(path, float(p if p is not None else attr if attr is not None else 0.0), True))
    return out


def _table_hook(base_inputs: list[torch.Tensor], vocab: dict[int, int]):
    """A pre-hook on embedding tables: which integer input indexes which table, as is (a
    transformer's position and token-type tables get other ids, which say nothing of the input)."""

    def hook(module, args):
        ids = args[0] if args else None
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
            return
        for i, x in enumerate(base_inputs):
            if not x.is_floating_point() and ids.shape == x.shape and torch.equal(ids, x):
                vocab[i] = min(vocab.get(i, module.num_embeddings), int(module.num_embeddings))

    return hook


# ---------------------------------------------------------------------------------- the wrapper
def flatten_outputs(out: Any) -> tuple[list[torch.Tensor], list[str] | None]:
    """Output tensors in order, and their names when the model returned a dict or named tuple."""
    if isinstance(out, torch.Tensor):
        return [out], None
    if isinstance(out, dict):
        tensors, names = [], []
        for key, value in out.items():
            if type(value).__module__.startswith("transformers.cache_utils"):
                continue  # a decoder's key/value cache (GPT-2 ...): generation state, not a prediction
            if not isinstance(value, torch.Tensor):
                raise ExportError(
                    f"output {key!r} of the model is a {type(value).__name__}, not a tensor: return tensors only "
                    "(wrap the model, or turn the extra output off in its config)"
                )
            tensors.append(value)
            names.append(str(key))
        return tensors, names
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        flat = [flatten_outputs(v)[0] for v in out]
        if all(len(f) == 1 for f in flat):
            return [f[0] for f in flat], list(out._fields)
    if isinstance(out, (tuple, list)):
        tensors = []
        for item in out:
            tensors += flatten_outputs(item)[0]
        return tensors, None
    raise ExportError(
        f"model outputs must be tensors, (nested) tuples/lists, dicts or named tuples of tensors, got "
        f"{type(out).__name__}"
    )


class CaptureWrapper(torch.nn.Module):
    """``forward(*inputs, *noise) -> tuple(outputs)`` with every draw fed from `noise`."""

    def __init__(self, model: torch.nn.Module, sites: Sequence[Site], num_inputs: int, vectorized: bool) -> None:
        super().__init__()
        self.model = model
        self.sites = list(sites)
        self.num_inputs = num_inputs
        self.vectorized = vectorized

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = list(args[: self.num_inputs])
        noise = list(args[self.num_inputs :])
        if not self.vectorized:
            with DrawMode(feed=noise) as mode:
                out = self.model(*inputs)
            self._check_used(mode)
            return tuple(flatten_outputs(out)[0])
        num_samples = noise[0].shape[0]
        for n in noise[1:]:
            torch._check(n.shape[0] == num_samples)
        batch = inputs[0].shape[0]
        folded = [x.repeat(num_samples, *([1] * (x.dim() - 1))) for x in inputs]
        reshape: list[Callable | None] = [_fold_noise if s.per_example else None for s in self.sites]
        with DrawMode(feed=noise, reshape=reshape, sampled_weights=True) as mode, sample_blocks(num_samples):
            out = self.model(*folded)
        self._check_used(mode)
        return tuple(o.reshape(num_samples, batch, *o.shape[1:]) for o in flatten_outputs(out)[0])

    def _check_used(self, mode: DrawMode) -> None:
        if mode.used != len(mode.feed):
            raise ExportError(
                f"the model made {mode.used} random draws, but {len(mode.feed)} when it was first run: the number "
                "of draws depends on the data or on the batch size"
            )


def _fold_noise(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(-1, *z.shape[2:])


def vectorizable(sites: Sequence[Site]) -> str | None:
    """None when every draw can take a sample axis, else the reason it cannot."""
    for s in sites:
        if s.per_example and (mf.batch_multiple(s.dims[0]) != 1 or any(mf.batch_multiple(d) for d in s.dims[1:])):
            return (
                f"the draw {s.parameter!r} ({s.op}) has per-example dims {s.dims} that do not lead with the batch "
                "(the model repeats or reshapes its batch), which a folded sample axis cannot follow"
            )
        if not s.per_example and s.dynamic:
            return (
                f"the draw {s.parameter!r} ({s.op}) of module {s.module!r} has dims {s.dims}: it follows an input "
                "dim but not the batch (one draw shared by every row), which a folded sample axis cannot follow"
            )
    return None


# ----------------------------------------------------------------------------------- torch.export
def export_program(
    wrapper: CaptureWrapper,
    inputs: list[torch.Tensor],
    input_axes: list[dict[int, str]],
    noise: list[torch.Tensor],
) -> Any:
    """``torch.export`` the wrapper with dynamic samples / batch / named input axes.

    Some code cannot be traced for a size of 1 (a reshape of an expanded tensor guards on it,
    e.g. einops' ``repeat``): the capture is then retried with those dims starting at 2, which
    the program records in ``program.illia_min_sizes`` (ONNX graphs have no such limit). A
    dim the model bounds (a transformer's position table: ``min(64, seq_len)``) is retried with
    that maximum, recorded in ``program.illia_max_sizes``.
    """
    import warnings

    import torch.fx.experimental._config as fx_config

    min_sizes: dict[str, int] = {}
    max_sizes: dict[str, int] = {}
    multiples: dict[str, int] = {}
    shapes: Any = (tuple(_dynamic_shapes(wrapper, input_axes, min_sizes, multiples, max_sizes)),)
    refined: list[str] = []
    for attempt in range(3):
        # control-flow operators (the LSTM's while_loop) trace their bodies with dynamo, whose code
        # cache would carry sizes from an earlier capture (e.g. a per-call one) into this one
        torch._dynamo.reset()
        try:
            with fx_config.patch(backed_size_oblivious=True), torch.no_grad(), warnings.catch_warnings():
                # layers that keep their last sample as a plain attribute (ours, blitz) trip this; the
                # attribute is never read back by the graph, so it says nothing about the artifact
                warnings.filterwarnings("ignore", message=".*assigned during export", category=UserWarning)
                program = torch.export.export(wrapper, tuple(inputs + noise), dynamic_shapes=shapes, strict=False)
            break
        except ExportError:
            raise
        except Exception as exc:
            text = str(exc)
            if isinstance(exc, BatchTooSmall):
                raise
            fixed = {
                name: int(size)
                for name, size in re.findall(r"^\s*(\w+) = (\d+)\s*$", text, re.M)
                if name not in (mf.BATCH_DIM, mf.SAMPLE_DIM) and not name.startswith("_")
            }
            if fixed:
                raise SpecializedDims(fixed) from exc
            if attempt == 2 or "Suggested fixes" not in text and "!= 1" not in text and "min(" not in text:
                raise ExportError(f"torch.export could not capture the model: {_first_line(exc)}") from exc
            found = dict(re.findall(r"^\s*(\w+) = (\d+)\*_\1\s*$", text, re.M))
            not_one = re.findall(r"Not all values of (\w+) = .*?!= 1", text)
            bounded = {
                name: int(high)
                for name, high in re.findall(r"Not all values of (\w+) = .*?min\((\d+), ", text)
                if name not in (mf.BATCH_DIM, mf.SAMPLE_DIM) and name not in max_sizes
            }
            max_sizes.update(bounded)
            if not found and not not_one and not bounded:
                raise ExportError(f"torch.export could not capture the model: {_first_line(exc)}") from exc
            # the model constrains a size: a multiple of k (BatchEnsembleLinear splits its batch into
            # groups), or at least 2 (a reshape of an expanded tensor guards on a size of 1)
            multiples.update({name: int(k) for name, k in found.items()})
            batch = int(inputs[0].shape[0])
            k_batch = multiples.get(mf.BATCH_DIM)
            if k_batch and batch // k_batch < 2:  # a multiple of 1 x k would be traced as a constant
                raise BatchTooSmall(k_batch) from exc
            refined += [f"{name} is a multiple of {k}" for name, k in found.items()]
            min_sizes.update(dict.fromkeys(not_one, 2))
            shapes = (tuple(_dynamic_shapes(wrapper, input_axes, min_sizes, multiples, max_sizes)),)
    check_noise_used(program, [s.name for s in wrapper.sites], wrapper.num_inputs)
    program.illia_min_sizes = min_sizes
    program.illia_max_sizes = max_sizes
    program.illia_size_constraints = refined
    program.illia_batch_multiple = multiples.get(mf.BATCH_DIM, 1)
    return program


class BatchTooSmall(ExportError):
    """The model needs a batch that is a multiple of `multiple`, and the capture's was too small."""

    def __init__(self, multiple: int) -> None:
        super().__init__(f"the model needs a batch that is a multiple of {multiple}")
        self.multiple = multiple


class SpecializedDims(ExportError):
    """torch.export specialized dynamic input dims other than the batch to the example's sizes
    (``{name: size}``): some op of the model unrolls over them (nn.GRU / nn.LSTM over a sequence)."""

    def __init__(self, fixed: dict[str, int]) -> None:
        dims = ", ".join(f"{k}={v}" for k, v in fixed.items())
        super().__init__(
            f"torch.export fixed the dynamic dims {dims} at the example's sizes: an op of the model unrolls over "
            "them (torch's nn.GRU / nn.LSTM loop over the sequence). Export with them fixed "
            "(dynamic_axes={<input>: {<axis>: None}}, CLI: --input-shape with '=N' at that axis)"
        )
        self.fixed = fixed


def _dynamic_shapes(
    wrapper: CaptureWrapper,
    input_axes: list[dict[int, str]],
    min_sizes: dict[str, int],
    multiples: dict[str, int],
    max_sizes: dict[str, int] | None = None,
) -> list:
    from torch.export import Dim

    named: dict[str, Any] = {}

    def dim(name: str):
        key = re.sub(r"\W", "_", name)
        if key not in named:
            k = multiples.get(key)
            if k:
                named[key] = k * Dim(f"_{key}", min=max(1, -(-min_sizes.get(key, 1) // k)))
            elif max_sizes and key in max_sizes:
                named[key] = Dim(key, min=min_sizes.get(key, 1), max=max_sizes[key])
            else:
                named[key] = Dim(key, min=min_sizes.get(key, 1))
        return named[key]

    shapes: list[dict[int, Any]] = [{axis: dim(name) for axis, name in axes.items()} for axes in input_axes]
    lead = 1 if wrapper.vectorized else 0
    for site in wrapper.sites:
        spec: dict[int, Any] = {0: dim(mf.SAMPLE_DIM)} if wrapper.vectorized else {}
        for i, d in enumerate(site.dims):
            parsed = parse_dim(d)
            if parsed is not None:
                k, name = parsed
                spec[lead + i] = dim(name) if k == 1 else k * dim(name)
        shapes.append(spec)
    return shapes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_SHAPE_ONLY = ("sym_size", "_assert", "sym_constrain", "sym_is_contiguous", "sym_stride", "sym_numel")


def check_noise_used(program, noise_names: list[str], num_inputs: int) -> None:
    """Refuse a program in which a noise input does not reach any output (a draw baked in)."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = [
        n
        for n, spec in zip(placeholders, program.graph_signature.input_specs)
        if spec.kind.name == "USER_INPUT"
    ]
    for name, node in zip(noise_names, user[num_inputs:]):
        real = [u for u in node.users if not any(tag in str(u.target) for tag in _SHAPE_ONLY)]
        if not real:
            raise ExportError(
                f"the captured graph ignores noise input {name!r}: the draw's value is not used (a module fills a "
                "buffer in place, e.g. `buf.data.normal_()`, and reads the buffer later, which bakes one draw into "
                "the graph). Register the layer in illia_export's family registry or draw with torch.randn_like"
            )
