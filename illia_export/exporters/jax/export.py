"""Export Flax-NNX Bayesian models: TF SavedModel, TFLite (jax2tf) and ONNX (jax2onnx).

Pipeline: a copy of the model in its export modes (``mc_dropout``, :mod:`.sampling`) ->
discover its ``jax.random`` draws (:mod:`.draws`) -> :class:`~illia_export.exporters.jax.noise.PureFunction`
(weight noise and draws as explicit inputs; key derivations removed by dead-code elimination)
-> refuse a model with no noise unless ``deterministic=True`` -> convert (jax2tf or jax2onnx)
into a temporary path -> validate against the nnx model on several noise draws and zero noise
at two batch sizes -> distribution check against the model's own sampling -> embed the
manifest -> move into place. A failed conversion or validation leaves nothing at the output path.

Graph conventions (the artifact contract): model inputs first (``"input"`` or ``"input_0"``,
...), then one noise input per distribution in manifest order, then one per ``jax.random``
draw in call order; outputs ``"output"`` or
``"output_0"``, .... The batch axis is dynamic; with ``samples="vectorized"`` the noise has a
dynamic leading ``"samples"`` axis and outputs are ``[S, B, ...]``.

TFLite: the graph uses builtin ops only (no Flex). Its dynamic axes are ``-1`` in
``shape_signature``; run it through the ``serving_default`` signature runner (which resizes
inputs to the arrays it is given) or call ``interpreter.resize_tensor_input`` for each input and
``allocate_tensors()`` before ``set_tensor``. Inputs and outputs carry the contract names as
signature keys.

Also here: the CLI's model convention for JAX (``pkg.module:factory`` + ``--weights``), see
:func:`load_jax_model` and :func:`save_jax_weights`.

Length: the JAX writers (SavedModel, TFLite, ONNX), their same-noise validation per format
and the export entry point; the capture stages already live in :mod:`.draws`, :mod:`.noise`
and :mod:`.sampling`. The writers are the next split (a ``writers`` module as on the torch side).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.artifact.atomic import atomic_output
from illia_export.artifact.digest import stamp_digest
from illia_export.errors import ArtifactError, ExportError, ShapeError
from illia_export.exporters.jax.sampling import distribution_check, inference_copy
from illia_export.exporters.likelihood import resolve_likelihood
from illia_export.exporters.verify.distribution import DEFAULT_SAMPLES
from illia_export.exporters.verify.same_noise import DEFAULT_RTOL, DEFAULT_TOLERANCE

FORMATS = ("savedmodel", "tflite", "onnx")
SAMPLE_MODES = ("vectorized", "per-call")
DEFAULT_OPSET = 21
#: onnxruntime 1.31 reads ONNX IR up to this version.
MAX_IR_VERSION = 10
_SYMBOL = {mf.BATCH_DIM: "b", mf.SAMPLE_DIM: "s"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence TF/absl/jax2onnx chatter during conversion."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "onnx_ir", "jax2onnx", "jax._src.xla_bridge")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ---------------------------------------------------------------------------------------------
# preparation


def _as_inputs(example_inputs: Any) -> list[np.ndarray]:
    items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    out = []
    for i, x in enumerate(items):
        arr = np.asarray(x)
        if arr.ndim == 0:
            raise ShapeError(f"example input {i} is a scalar; every input needs a leading batch axis")
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype == np.int64:
            arr = arr.astype(np.int32)
        if arr.dtype not in (np.float32, np.int32, np.bool_):
            raise ShapeError(f"example input {i} has dtype {arr.dtype}; use float32 or int32")
        out.append(arr)
    return out


def _input_dims(arr: np.ndarray, dynamic: dict[int, str]) -> list[mf.Dim]:
    dims: list[mf.Dim] = [mf.BATCH_DIM] + [int(d) for d in arr.shape[1:]]
    for axis, name in dynamic.items():
        if not 0 < axis < arr.ndim:
            raise ShapeError(f"dynamic axis {axis} is out of range for an input of rank {arr.ndim}")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or name in (mf.BATCH_DIM, mf.SAMPLE_DIM):
            raise ShapeError(f"dynamic axis name {name!r} must be an identifier other than 'batch'/'samples'")
        dims[axis] = name
    return dims


def _resize(arr: np.ndarray, batch: int) -> np.ndarray:
    """`arr` with its batch axis resized to `batch` (rows repeated cyclically)."""
    reps = -(-batch // arr.shape[0])
    return np.concatenate([arr] * reps, axis=0)[:batch]


class _Prepared:
    """Everything format-independent: pure functions, specs, symbolic shapes."""

    def __init__(
        self,
        model: Any,
        fmt: str,
        example_inputs: Any,
        samples: str,
        input_names: Sequence[str] | None,
        output_names: Sequence[str] | None,
        dynamic_axes: dict[int | str, dict[int, str]] | None,
        mc_dropout: Any = None,
        deterministic: bool = False,
    ) -> None:
        import jax

        from illia_export.exporters.jax.draws import clean
        from illia_export.exporters.jax.noise import discover_draws, make_pure_function, zeros_noise

        model, self.dropout = inference_copy(model, fmt, mc_dropout)
        #: the model in its export modes (a copy): the reference of the distribution check
        self.model = model
        self.vectorized = samples == "vectorized"
        self.inputs = _as_inputs(example_inputs)
        self.batch_multiple = batch_multiple(model)
        if any(x.shape[0] % self.batch_multiple for x in self.inputs):
            raise ShapeError(
                f"the example batch ({self.inputs[0].shape[0]}) must be a multiple of {self.batch_multiple} "
                "(the model's BatchEnsembleLinear num_members)"
            )
        n = len(self.inputs)
        self.input_names = list(input_names) if input_names else (["input"] if n == 1 else [f"input_{i}" for i in range(n)])
        if len(self.input_names) != n:
            raise ExportError(f"{len(self.input_names)} input names given for {n} inputs")
        dynamic_axes = dynamic_axes or {}
        self.input_dims = [
            _input_dims(x, dynamic_axes.get(i, dynamic_axes.get(name, {})))
            for i, (name, x) in enumerate(zip(self.input_names, self.inputs))
        ]
        draws = discover_draws(model, tuple(self.inputs))
        # the manifest says "sampled" only for a dropout module that owns a noise input
        owners = {d.module for d in draws}
        self.dropout = [mf.DropoutSite(d.path, d.p, d.sampled and d.path in owners) for d in self.dropout]
        self.pure = make_pure_function(model, vectorized=self.vectorized, portable=True, draws=draws)
        self.reference = make_pure_function(model, vectorized=self.vectorized, portable=False, draws=draws)
        self.noise = self.pure.noise
        if not self.noise:
            # a draw the capture cannot feed (randint, ...) is refused by its line before "no noise"
            probe = make_pure_function(model, vectorized=False, portable=False, draws=draws)
            jax.eval_shape(clean(probe.positional(n)), *self.inputs)
        self._check_noise(deterministic, samples)
        # the graph converters see: jax.random draws fed from the noise, key derivations removed
        self.fn = clean(self.pure.positional(n))
        self.reference_fn = clean(self.reference.positional(n))
        lead = 2 if self.vectorized else None
        base = self.inputs[0].shape[0]
        zero = zeros_noise(self.noise, lead, base)
        args = [*self.inputs, *(zero[e.name] for e in self.noise)]
        # output shapes; dims that change with the batch size are the batch axis
        out_a = jax.eval_shape(self.fn, *args)
        zero_b = zeros_noise(self.noise, lead, 2 * base)
        args_b = [_resize(x, 2 * x.shape[0]) for x in self.inputs] + [zero_b[e.name] for e in self.noise]
        out_b = jax.eval_shape(self.fn, *args_b)
        m = len(out_a)
        keys = self.pure.output_keys
        if output_names:
            self.output_names = list(output_names)
        elif keys is not None:
            for key in keys:
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                    raise ExportError(f"output name {key!r} (a key of the model's output) must be a valid identifier")
            self.output_names = list(keys)
        else:
            self.output_names = ["output"] if m == 1 else [f"output_{i}" for i in range(m)]
        if len(self.output_names) != m:
            raise ExportError(f"{len(self.output_names)} output names given for {m} outputs")
        self.output_dims: list[list[mf.Dim]] = []
        self.output_dtypes: list[str] = []
        for a, b in zip(out_a, out_b):
            dims: list[mf.Dim] = []
            for i, (da, db) in enumerate(zip(a.shape, b.shape)):
                if self.vectorized and i == 0:
                    dims.append(mf.SAMPLE_DIM)
                elif da != db:
                    dims.append(mf.BATCH_DIM)
                else:
                    dims.append(int(da))
            self.output_dims.append(dims)
            self.output_dtypes.append(str(np.dtype(a.dtype)))
        mf.check_unique_names(self.input_names + [e.name for e in self.noise])
        mf.check_unique_names(self.output_names)

    def _check_noise(self, deterministic: bool, samples: str) -> None:
        """Refuse a graph without noise unless the user says it is meant to be deterministic."""
        if deterministic:
            if self.noise:
                raise ExportError(
                    f"deterministic=True, but the model draws {len(self.noise)} random numbers after capture "
                    f"({', '.join(e.parameter for e in self.noise[:4])}): drop deterministic=True to export them "
                    "as noise inputs, or put the layers that draw in eval mode"
                )
            if self.vectorized:
                raise ExportError(
                    "deterministic=True exports a graph without noise, which has no sample axis: use samples='per-call'"
                )
            return
        if self.noise:
            return
        off = [s.path for s in self.dropout if not s.sampled]
        hint = (
            f"; its dropout modules {off} are off in the export: pass mc_dropout=True (or a list of their names) "
            "to sample them"
            if off
            else ""
        )
        raise ExportError(
            "the model draws no random numbers after capture (no illia_export GaussianDistribution, no jax.random "
            f"draw), so the artifact would be deterministic{hint}; if a deterministic artifact is what you want, "
            "pass deterministic=True (with samples='per-call')"
        )

    # symbolic specs ------------------------------------------------------------------------
    def arg_names(self) -> list[str]:
        return self.input_names + [e.name for e in self.noise]

    def arg_dims(self) -> list[list[mf.Dim]]:
        lead: list[mf.Dim] = [mf.SAMPLE_DIM] if self.vectorized else []
        return self.input_dims + [lead + list(e.dims) for e in self.noise]

    def arg_dtypes(self) -> list[str]:
        return [str(x.dtype) for x in self.inputs] + ["float32"] * len(self.noise)

    def manifest(self, fmt: str, task: str) -> mf.Manifest:
        return mf.Manifest(
            format=fmt,
            source="jax",
            inputs=[mf.TensorSpec(n, d, str(x.dtype)) for n, d, x in zip(self.input_names, self.input_dims, self.inputs)],
            noise=[
                mf.NoiseSpec(
                    e.name,
                    e.parameter,
                    ([mf.SAMPLE_DIM] if self.vectorized else []) + list(e.dims),
                    kind=e.kind,
                    transform=e.transform,
                )
                for e in self.noise
            ],
            dropout=list(self.dropout),
            outputs=[mf.TensorSpec(n, d, t) for n, d, t in zip(self.output_names, self.output_dims, self.output_dtypes)],
            sample_axis=0 if self.vectorized else None,
            task=task,
        )


def _symbol(dim: mf.Dim, batch_multiple: int = 1) -> str:
    if isinstance(dim, int):
        return str(dim)
    k = mf.batch_multiple(dim)
    if k is not None:
        k *= batch_multiple
        return "b" if k == 1 else f"{k}*b"
    return _SYMBOL.get(dim, dim)


def batch_multiple(model: Any) -> int:
    """The batch size must be a multiple of this (lcm of BatchEnsembleLinear ``num_members``)."""
    import math

    from flax import nnx

    from illia_export.nn.jax.batch_ensemble import BatchEnsembleLinear

    out = 1
    for _, module in nnx.iter_modules(model):
        if isinstance(module, BatchEnsembleLinear):
            out = math.lcm(out, module.num_members)
    return out


# ---------------------------------------------------------------------------------------------
# converters


def _tf_function(prep: _Prepared):
    """A ``tf.function`` (with input signature) of the model via jax2tf, outputs as a dict."""
    tf = _tensorflow()
    from jax.experimental import jax2tf

    poly = ["(" + ", ".join(_symbol(d, prep.batch_multiple) for d in dims) + ",)" for dims in prep.arg_dims()]
    converted = jax2tf.convert(prep.fn, polymorphic_shapes=poly, with_gradient=False)
    names = prep.output_names

    def serve(*args):
        outs = converted(*args)
        return {name: out for name, out in zip(names, outs)}

    signature = [
        tf.TensorSpec([None if isinstance(d, str) else d for d in dims], tf.as_dtype(dtype), name=name)
        for name, dims, dtype in zip(prep.arg_names(), prep.arg_dims(), prep.arg_dtypes())
    ]
    module = tf.Module()
    module.serve = tf.function(serve, input_signature=signature, autograph=False)
    return module


def _tensorflow():
    from illia_export.errors import require

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return require("tensorflow", "tf", "Exporting JAX models to SavedModel/TFLite")


def _model_layers(model: Any) -> str:
    from flax import nnx

    names = sorted({type(m).__name__ for _, m in nnx.iter_modules(model)} - {type(model).__name__, "GaussianDistribution"})
    return ", ".join(names) or type(model).__name__


def _write_savedmodel(prep: _Prepared, model: Any, tmp: Path) -> None:
    tf = _tensorflow()
    module = _tf_function(prep)
    try:
        with _quiet():
            concrete = module.serve.get_concrete_function()
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": concrete})
    except Exception as exc:  # jax2tf/TF raise many kinds
        raise ExportError(f"savedmodel: conversion failed for a model with layers [{_model_layers(model)}]: {exc}") from exc


def _write_tflite(prep: _Prepared, model: Any, tmp: Path) -> None:
    tf = _tensorflow()
    module = _tf_function(prep)
    try:
        with _quiet():
            concrete = module.serve.get_concrete_function()
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            data = converter.convert()
    except Exception as exc:
        raise ExportError(
            f"tflite: conversion with builtin ops only failed for a model with layers [{_model_layers(model)}]: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    flex = [op for op in tflite_ops(data) if op.startswith("Flex") or op == "CUSTOM"]
    if flex:
        raise ExportError(f"tflite: the graph needs non-builtin ops {sorted(set(flex))}")
    tmp.write_bytes(data)


def tflite_ops(data: bytes) -> list[str]:
    """Op names of a TFLite flatbuffer (``_get_ops_details``), e.g. ``["FULLY_CONNECTED", ...]``."""
    tf = _tensorflow()
    with _quiet():
        interp = tf.lite.Interpreter(model_content=data)
        return [str(op["op_name"]) for op in interp._get_ops_details()]


def _onnx_graph(prep: _Prepared, model: Any, opset: int):
    import jax
    import jax.numpy as jnp

    from illia_export.errors import require

    require("onnx", "onnx", "Exporting JAX models to ONNX")
    jax2onnx = require("jax2onnx", "jax", "Exporting JAX models to ONNX")
    # one shared symbolic scope for every argument ("k*batch" noise dims share the batch symbol)
    all_syms = sorted({d for dims in prep.arg_dims() for d in dims if isinstance(d, str)})
    scope = jax.export.SymbolicScope()
    exprs = [_symbol(d, prep.batch_multiple) for d in all_syms]
    sym = dict(zip(all_syms, jax.export.symbolic_shape(", ".join(exprs), scope=scope))) if all_syms else {}
    specs = [
        jax.ShapeDtypeStruct(tuple(sym[d] if isinstance(d, str) else d for d in dims), jnp.dtype(dtype))
        for dims, dtype in zip(prep.arg_dims(), prep.arg_dtypes())
    ]
    def direct():
        return prep.fn

    def replay():
        # Trace to a jaxpr first and hand jax2onnx a function that replays it: jax2onnx then
        # sees only lax primitives (its plugins for flax layers such as nnx.Linear have no
        # vmap rule, so a vectorized graph with plain flax layers fails the direct way).
        closed = jax.make_jaxpr(prep.fn)(*specs)
        return lambda *args: tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *args))

    errors = []
    onnx_model = None
    for strategy, build in (("direct", direct), ("jaxpr-replay", replay)):
        try:
            with _quiet():
                onnx_model = jax2onnx.to_onnx(
                    build(),
                    specs,
                    model_name="illia_export_jax",
                    opset=opset,
                    input_names=prep.arg_names(),
                    output_names=prep.output_names,
                )
            prep.onnx_strategy = strategy
            break
        except Exception as exc:  # jax2onnx raises many kinds
            errors.append(f"{strategy}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if onnx_model is None:
        raise ExportError(
            f"onnx: jax2onnx failed for a model with layers [{_model_layers(model)}]; tried " + "; ".join(errors)
        )
    onnx_model.ir_version = min(onnx_model.ir_version, MAX_IR_VERSION)
    _check_onnx(onnx_model, prep)
    return onnx_model


def _check_onnx(onnx_model: Any, prep: _Prepared) -> None:
    """Structural checks: inputs/outputs named and ordered as in the contract, no random ops."""
    import onnx

    try:
        onnx.checker.check_model(onnx_model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx: the exported graph is invalid: {exc}") from exc
    got_in = [i.name for i in onnx_model.graph.input]
    if got_in != prep.arg_names():
        raise ExportError(
            f"onnx: graph inputs are {got_in}, expected {prep.arg_names()} (an unused noise input is dropped "
            "when a Bayesian layer does not contribute to the outputs)"
        )
    got_out = [o.name for o in onnx_model.graph.output]
    if got_out != prep.output_names:
        raise ExportError(f"onnx: graph outputs are {got_out}, expected {prep.output_names}")
    random = sorted({n.op_type for n in onnx_nodes(onnx_model.graph) if n.op_type.startswith("Random")})
    if random:
        raise ExportError(f"onnx: the graph still draws noise internally ({', '.join(random)})")


def onnx_nodes(graph: Any) -> Iterator[Any]:
    """Every node of an ONNX graph, subgraphs (Loop/If/Scan bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from onnx_nodes(attr.g)
            for sub in attr.graphs:
                yield from onnx_nodes(sub)


# ---------------------------------------------------------------------------------------------
# running artifacts


def artifact_runner(fmt: str, path: Path) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """``run({name: array}) -> [outputs in manifest order]`` for an exported JAX artifact."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda feeds: [np.asarray(a) for a in session.run(names, feeds)]
    tf = _tensorflow()
    if fmt == "savedmodel":
        with _quiet():
            loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
        order = list(fn.structured_outputs)

        def run_sm(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            out = fn(**{k: tf.constant(v) for k, v in feeds.items()})
            return [out[k].numpy() for k in run_sm.order]  # type: ignore[attr-defined]

        run_sm.order = order  # type: ignore[attr-defined]
        return run_sm
    if fmt == "tflite":
        with _quiet():
            interp = tf.lite.Interpreter(model_path=str(path))
        runner = interp.get_signature_runner("serving_default")

        def run_tfl(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            out = runner(**feeds)
            return [np.asarray(out[k]) for k in run_tfl.order]  # type: ignore[attr-defined]

        run_tfl.order = list(interp.get_signature_list()["serving_default"]["outputs"])  # type: ignore[attr-defined]
        return run_tfl
    raise ExportError(f"unknown JAX export format {fmt!r}; expected one of {FORMATS}")


def _validate(
    prep: _Prepared, fmt: str, path: Path, tolerance: float, draws: int, batch_sizes: Sequence[int], rtol: float = 0.0
):
    import jax

    from illia_export.exporters.verify.same_noise import Comparison

    run = artifact_runner(fmt, path)
    order = getattr(run, "order", None)
    if order is not None and sorted(order) == sorted(prep.output_names):
        # SavedModel/TFLite signatures return a dict; read it in manifest order
        run.order = list(prep.output_names)  # type: ignore[attr-defined]
    reference = jax.jit(prep.reference_fn)
    comparison = Comparison(prep.output_names, tolerance, rtol)
    rng = np.random.default_rng(0)
    lead: tuple[int, ...] = (2,) if prep.vectorized else ()
    for batch in batch_sizes:
        comparison.note_batch(batch)
        inputs = [_resize(x, batch) for x in prep.inputs]
        for d in range(draws + 1):
            zero = d == draws
            noise = [
                (np.zeros if zero else lambda s: rng.standard_normal(s).astype(np.float32))(lead + e.shape_at(batch)).astype(np.float32)
                for e in prep.noise
            ]
            feeds = dict(zip(prep.arg_names(), inputs + noise))
            expected = [np.asarray(a) for a in reference(*inputs, *noise)]
            got = run(feeds)
            comparison.add(got, expected, zero_noise=zero)
    return comparison.result(draws)


def _distribution(prep: _Prepared, path: Path, manifest: mf.Manifest, num: int) -> dict:
    rows = min(prep.inputs[0].shape[0], 4)
    rows = max(prep.batch_multiple, rows - rows % prep.batch_multiple)
    xs = [_resize(x, rows) for x in prep.inputs]
    return distribution_check(prep.model, xs, prep.output_names, path, manifest, num)


# ---------------------------------------------------------------------------------------------
# public entry point


def export_jax(
    model: Any,
    example_inputs: Any,
    path: str | os.PathLike,
    format: str = "onnx",
    *,
    samples: str = "vectorized",
    task: str = "raw",
    validate: bool = True,
    opset: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    rtol: float = DEFAULT_RTOL,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: dict[int, dict[int, str]] | None = None,
    num_noise_draws: int = 3,
    batch_sizes: Sequence[int] | None = None,
    likelihood: str | None = None,
    scale: str | None = None,
    df: float | None = None,
    mc_dropout: bool | str | Sequence[str] | None = None,
    deterministic: bool = False,
    distribution_samples: int = DEFAULT_SAMPLES,
    **options: Any,
) -> mf.Manifest:
    """Export a Flax-NNX model built from ``illia_export.nn.jax`` (and plain flax) layers.

    Every random draw of the model becomes a standard-normal noise input: the weight noise of
    ``illia_export.nn.jax`` layers and every ``jax.random`` draw (``normal``, ``uniform``,
    ``bernoulli``, samplers built on ``uniform``, ``nnx.Dropout`` under `mc_dropout`), see
    :mod:`illia_export.exporters.jax.draws`.

    Args:
        model: the ``nnx.Module`` (called as ``model(*inputs)``; nested outputs are flattened;
            a dict or named tuple of arrays gives its keys as output names, in its order).
        example_inputs: one array or a tuple of arrays, batch axis first (float32 or int32).
        path: output file (``.onnx``, ``.tflite``) or folder (SavedModel).
        format: ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
        samples: ``"vectorized"`` (noise ``[S, *shape]``, outputs ``[S, B, ...]``, S dynamic) or
            ``"per-call"`` (one sample per call, noise of the distributions' shapes).
        task: ``"classification"``, ``"regression"`` or ``"raw"`` (recorded in the manifest).
        validate: compare the artifact with the model (``num_noise_draws`` draws + zero noise at
            two batch sizes); raise ``ToleranceError`` and write nothing above `tolerance`.
        opset: ONNX opset (default 21).
        input_names, output_names: override the contract's default graph names.
        dynamic_axes: extra dynamic axes per input, e.g. ``{0: {1: "time"}}`` for a variable
            sequence length (the batch axis 0 is always dynamic).
        batch_sizes: the batch sizes used by validation (default: the example's batch and twice it).
        likelihood, scale, df: the regression likelihood recorded in the manifest (needs
            ``task="regression"``); see :func:`illia_export.export` and
            :func:`illia_export.exporters.likelihood.resolve_likelihood`.
        mc_dropout: ``True`` samples every dropout module (``nnx.Dropout``, attention dropout:
            ``deterministic=False`` in the export), a list of module paths samples those; by
            default every dropout module is off (``deterministic=True``), whatever mode the
            model is in. The user's model is not modified (the export works on a copy).
        deterministic: say that an artifact without any noise input is intended (needs
            ``samples="per-call"``); without it such a model is refused.
        distribution_samples: samples per side of the distribution check (the model run with
            its own rngs against the artifact run by :mod:`illia_export.runtime`), recorded in
            ``manifest.validation.distribution``; 0 skips it.

    Returns:
        The manifest (also embedded in, or written beside, the artifact).

    Example:
        >>> manifest = export_jax(model, np.zeros((2, 64), np.float32), "mlp.tflite", "tflite")
        >>> [n.name for n in manifest.noise]  # doctest: +SKIP
        ['eps_fc1_bias_distribution', 'eps_fc1_weights_distribution', ...]
    """
    if options:
        raise ExportError(
            f"export options {sorted(options)} do not apply to a JAX model; JAX exports take mc_dropout, "
            "deterministic, dynamic_axes, batch_sizes, num_noise_draws, distribution_samples, tolerance, rtol"
        )
    if format not in FORMATS:
        raise ExportError(f"a JAX model can be exported to {FORMATS}, not {format!r}")
    if samples not in SAMPLE_MODES:
        raise ExportError(f"`samples` must be one of {SAMPLE_MODES}, got {samples!r}")
    if task not in mf.TASKS:
        raise ExportError(f"`task` must be one of {mf.TASKS}, got {task!r}")
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise ExportError(f"export_jax expects a flax.nnx.Module, got {type(model).__name__}")
    if likelihood is not None and task != "regression":
        resolve_likelihood(likelihood, scale, [], task, df)  # raises the explanation before converting
    prep = _Prepared(
        model, format, example_inputs, samples, input_names, output_names, dynamic_axes, mc_dropout, deterministic
    )
    manifest = prep.manifest(format, task)
    manifest.likelihood = resolve_likelihood(likelihood, scale, prep.output_names, task, df, prep.output_dims)
    base = prep.inputs[0].shape[0]
    sizes = list(batch_sizes) if batch_sizes else [base, 2 * base]
    final = Path(path)
    with atomic_output(final, directory=format == "savedmodel") as tmp:
        onnx_model = None
        if format == "savedmodel":
            _write_savedmodel(prep, model, tmp)
        elif format == "tflite":
            _write_tflite(prep, model, tmp)
        else:
            import onnx

            onnx_model = _onnx_graph(prep, model, opset or DEFAULT_OPSET)
            manifest.extra["onnx_conversion"] = prep.onnx_strategy
            onnx.save(onnx_model, str(tmp))
        if validate:
            manifest.validation = _validate(prep, format, tmp, tolerance, num_noise_draws, sizes, rtol)
            if prep.noise and distribution_samples > 0:
                manifest.validation.distribution = _distribution(prep, tmp, manifest, distribution_samples)
        stamp_digest(tmp, manifest)  # graph bytes only: the manifest embedded below is excluded
        if format == "savedmodel":
            assets = tmp / "assets"
            assets.mkdir(exist_ok=True)
            (assets / mf.EMBEDDED_NAME).write_text(manifest.to_json())
        elif format == "onnx":
            import onnx

            mf.embed_in_onnx(onnx_model, manifest)
            onnx.save(onnx_model, str(tmp))
    if format == "tflite":
        mf.write_sidecar(manifest, final)
    return manifest


# ---------------------------------------------------------------------------------------------
# CLI model convention: "pkg.module:factory" + weights file


def _flat_state(model: Any) -> dict[str, np.ndarray]:
    from flax import nnx

    out: dict[str, np.ndarray] = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value() if hasattr(var, "get_value") else var
        out[".".join(str(k) for k in path)] = np.asarray(value)
    return out


def _safetensors(error: type[Exception]) -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as exc:
        raise error(".safetensors weights need the 'safetensors' package: pip install safetensors (or use .npz)") from exc
    return st


def save_jax_weights(model: Any, path: str | os.PathLike) -> Path:
    """Save every ``nnx.Param`` of `model` (``mu``/``rho`` and plain flax params) to ``.npz``.

    Keys are dotted paths (``"fc1.weights_distribution.mu"``). Written atomically; returns the
    path. ``.safetensors`` is used when the path ends so and ``safetensors`` is installed.
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise ExportError(f"save_jax_weights expects a flax.nnx.Module, got {type(model).__name__}")
    arrays = _flat_state(model)
    final = Path(path)
    if final.suffix == ".safetensors":
        st = _safetensors(ExportError)
        with atomic_output(final) as tmp:
            st.save_file(arrays, str(tmp))
        return final
    if final.suffix != ".npz":
        raise ExportError(f"weights files must end in .npz or .safetensors, got {final.name!r}")
    with atomic_output(final) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return final


def load_jax_weights(model: Any, path: str | os.PathLike, strict: bool = True) -> Any:
    """Load ``.npz``/``.safetensors`` weights saved by :func:`save_jax_weights` into `model`.

    Never unpickles (``allow_pickle=False``). With `strict`, every ``nnx.Param`` of the model
    must be in the file with the same shape, and the file may hold nothing else.
    """
    from flax import nnx

    file = Path(path)
    if not file.exists():
        raise ArtifactError(f"weights file not found: {file}")
    if file.suffix == ".safetensors":
        st = _safetensors(ArtifactError)
        arrays = dict(st.load_file(str(file)))
    elif file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (ValueError, OSError) as exc:
            raise ArtifactError(f"{file} is not a readable .npz weights file: {exc}") from exc
    else:
        raise ArtifactError(f"weights files must end in .npz or .safetensors, got {file.name!r}")
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    seen = set()
    for path_keys, var in flat:
        key = ".".join(str(k) for k in path_keys)
        if key not in arrays:
            if strict:
                raise ArtifactError(f"{file} has no array {key!r} for the model's parameter")
            continue
        current = var.get_value() if hasattr(var, "get_value") else var
        if tuple(arrays[key].shape) != tuple(np.shape(current)):
            raise ArtifactError(
                f"{file}: {key!r} has shape {tuple(arrays[key].shape)}, the model expects {tuple(np.shape(current))}"
            )
        var.set_value(arrays[key].astype(np.asarray(current).dtype))
        seen.add(key)
    extra = sorted(set(arrays) - seen)
    if strict and extra:
        raise ArtifactError(f"{file} holds arrays the model does not have: {extra[:5]}")
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def load_jax_model(spec: str, weights: str | os.PathLike | None = None, **factory_kwargs: Any) -> Any:
    """Build a JAX model from ``"pkg.module:factory"`` and load `weights` into it.

    `factory` is a callable in an importable module (user code, imported by design) returning
    an ``nnx.Module``; it is called with `factory_kwargs`. `weights` is a ``.npz`` or
    ``.safetensors`` file from :func:`save_jax_weights` (never unpickled).

    Example:
        ``illia-export mypkg.models:make_mlp --weights mlp.npz --format tflite --input-shape 1,64``
    """
    from flax import nnx

    if ":" not in spec:
        raise ArtifactError(f"a JAX model is given as 'package.module:factory', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the user's module raising while it imports
        raise ArtifactError(f"cannot import {module_name!r} (from {spec!r}): {type(exc).__name__}: {exc}") from exc
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ArtifactError(f"{module_name!r} has no attribute {attr!r}")
    model = factory(**factory_kwargs) if callable(factory) and not isinstance(factory, nnx.Module) else factory
    if not isinstance(model, nnx.Module):
        raise ArtifactError(f"{spec!r} returned a {type(model).__name__}, not a flax.nnx.Module")
    if weights is not None:
        load_jax_weights(model, weights)
    return model

