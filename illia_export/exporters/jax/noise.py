"""Turn a Flax-NNX model into a pure function of its inputs and its noise.

``f(inputs, noise) -> outputs`` where `noise` maps :func:`noise_input_name` of each
distribution's dotted path (e.g. ``"eps_fc1_weights_distribution"``) to its ``eps``. Every
distribution then samples ``mu + softplus(rho) * eps``; the model's parameters are closed over
(constants of the traced function), so ``jax2tf``/``jax2onnx`` see a deterministic graph whose
only randomness is the explicit noise. Draws made through ``jax.random`` (``nnx.Dropout``, a
layer calling ``jax.random.normal(self.rngs.noise(), shape)``) become noise inputs too, fed in
call order by :class:`~illia_export.exporters.jax.draws.DrawMode`; they are discovered by
tracing the model at two batch sizes (:func:`discover_draws`), and a draw whose size follows
the batch gets a ``"batch"`` dim. This is the one place that maps a JAX model to its noise
inputs; every JAX exporter uses it.

Example:
    >>> pure = make_pure_function(model, vectorized=True)
    >>> noise = {s.name: np.zeros((8, *s.shape), np.float32) for s in pure.noise}
    >>> outputs = pure(x, noise)          # tuple of [8, B, ...] arrays
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from illia_export.artifact import manifest as mf
from illia_export.artifact.manifest import check_unique_names, noise_input_name
from illia_export.distributions.jax import GaussianDistribution
from illia_export.errors import ExportError, ShapeError
from illia_export.exporters.jax.draws import DrawMode, module_paths
from illia_export.nn.jax.module import portable_ops


@dataclass(frozen=True)
class JaxNoiseInput:
    """One noise input of a JAX model.

    `shape` is the example's shape (at the example batch size); `dims` the manifest dims
    (``"batch"``/``"k*batch"`` where the draw follows the batch). Weight noise of a
    ``GaussianDistribution`` has ``kind="weight"``, ``transform="affine"`` and ``module=None``;
    a ``jax.random`` draw names the module that drew it and its transform.
    """

    name: str
    parameter: str
    shape: tuple[int, ...]
    dims: tuple[mf.Dim, ...] = ()
    kind: str = "weight"
    transform: str = "affine"
    module: str | None = None

    def __post_init__(self) -> None:
        if not self.dims:
            object.__setattr__(self, "dims", tuple(self.shape))

    @property
    def is_draw(self) -> bool:
        return self.module is not None

    def shape_at(self, batch: int) -> tuple[int, ...]:
        """The per-call shape at batch size `batch`."""
        return tuple(d if isinstance(d, int) else mf.batch_multiple(d) * batch for d in self.dims)


def _path_str(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key] if isinstance(key, int) else getattr(obj, key)
    return obj


def model_distributions(model: nnx.Module) -> list[tuple[str, GaussianDistribution]]:
    """``(dotted path, distribution)`` of every ``GaussianDistribution`` in `model`.

    The order is flax's graph traversal order (attribute names sorted), which is also the
    order of the noise inputs in exported graphs and manifests.
    """
    if not isinstance(model, nnx.Module):
        raise ExportError(f"expected a flax.nnx.Module, got {type(model).__name__}")
    return [
        (_path_str(path), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, GaussianDistribution)
    ]


def noise_inputs(model: nnx.Module) -> list[JaxNoiseInput]:
    """The noise inputs of `model`, one per distribution, in graph order."""
    entries = [JaxNoiseInput(noise_input_name(p), p, tuple(d.shape)) for p, d in model_distributions(model)]
    check_unique_names([e.name for e in entries])
    return entries


class PureFunction:
    """``outputs = f(inputs, noise)``: a model with its weight noise as an explicit argument.

    Args:
        model: an ``nnx.Module`` built from illia-export JAX layers and/or plain flax layers.
        vectorized: with True, every noise array has a leading sample axis ``[S, *shape]`` and
            every output gains a leading ``S`` axis (``jax.vmap`` over the noise); with False,
            one call evaluates one sample.
        portable: trace layers to export-friendly primitives (see ``portable_ops``).

    Call:
        inputs: one array or a tuple of arrays (the model's positional arguments).
        noise: ``{noise name: array}`` for every entry of :attr:`noise`.

    Returns:
        The model's outputs flattened to a tuple (:func:`flatten_outputs`: a dict or named tuple
        in its own order, anything else in ``jax.tree_util.tree_leaves`` order).
    """

    def __init__(
        self,
        model: nnx.Module,
        *,
        vectorized: bool,
        portable: bool = True,
        example_inputs: Any = None,
        draws: list[JaxNoiseInput] | None = None,
    ) -> None:
        #: Names of the outputs when the model returns a dict or a named tuple (set by a call).
        self.output_keys: list[str] | None = None
        self.weights = noise_inputs(model)
        if draws is None:
            draws = discover_draws(model, example_inputs) if example_inputs is not None else []
        self.draws = list(draws)
        self.noise = self.weights + self.draws
        check_unique_names([e.name for e in self.noise])
        self.vectorized = vectorized
        self.portable = portable
        self._graphdef, self._state = nnx.split(model)
        self._paths = [e.parameter for e in self.weights]

    def single(self, inputs: tuple, noise: dict[str, jax.Array]) -> tuple:
        """One sample: noise arrays of the per-call shapes."""
        model = nnx.merge(self._graphdef, self._state, copy=True)
        for entry in self.weights:
            dist = _get(model, tuple(int(k) if k.isdigit() else k for k in entry.parameter.split(".")))
            dist.set_noise(noise[entry.name])
        with DrawMode(module_paths(model), feed=[noise[e.name] for e in self.draws]) as mode:
            if self.portable:
                with portable_ops():
                    out = model(*inputs)
            else:
                out = model(*inputs)
        if mode.used != len(self.draws):
            raise ExportError(
                f"the model made {mode.used} random draws, but {len(self.draws)} when it was first run: the number "
                "of draws depends on the data or on the batch size"
            )
        names, leaves = flatten_outputs(out)
        self.output_keys = names
        return leaves

    def __call__(self, inputs: Any, noise: dict[str, Any]) -> tuple:
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        missing = [e.name for e in self.noise if e.name not in noise]
        if missing:
            raise ShapeError(f"missing noise inputs {missing}; expected {[e.name for e in self.noise]}")
        noise = {e.name: jnp.asarray(noise[e.name]) for e in self.noise}
        for e in self.noise:
            got = tuple(noise[e.name].shape)
            want = len(e.dims) + (1 if self.vectorized else 0)
            tail = got[len(got) - len(e.dims) :] if e.dims else ()
            if len(got) != want or any(isinstance(d, int) and d != g for d, g in zip(e.dims, tail)):
                lead = "[S, " if self.vectorized else "["
                raise ShapeError(
                    f"noise {e.name!r} must have shape {lead}{', '.join(map(str, e.dims))}], got {got}"
                )
        if not self.vectorized:
            return self.single(inputs, noise)
        return jax.vmap(lambda n: self.single(inputs, n))(noise)

    def positional(self, num_inputs: int) -> Callable[..., tuple]:
        """``g(*inputs, *noise_in_order) -> outputs``: the calling convention of exported graphs."""

        def g(*args: Any) -> tuple:
            inputs = args[:num_inputs]
            noise = {e.name: a for e, a in zip(self.noise, args[num_inputs:])}
            return self(inputs, noise)

        return g


def flatten_outputs(out: Any) -> tuple[list[str] | None, tuple]:
    """``(names, arrays)`` of a model's outputs.

    A dict (in insertion order, not sorted as ``tree_leaves`` would) or a named tuple (in field
    order) whose values are single arrays gives its keys as names; anything else gives
    ``None`` and the ``jax.tree_util.tree_leaves`` of the output.
    """
    if isinstance(out, dict) or (isinstance(out, tuple) and hasattr(out, "_fields")):
        items = list(out.items()) if isinstance(out, dict) else list(zip(out._fields, out))
        for key, value in items:
            if not isinstance(key, str) or not hasattr(value, "shape") or isinstance(value, (dict, tuple, list)):
                raise ExportError(
                    f"a model returning a {type(out).__name__} must map string names to single arrays; "
                    f"entry {key!r} is a {type(value).__name__}"
                )
        return [k for k, _ in items], tuple(v for _, v in items)
    return None, tuple(jax.tree_util.tree_leaves(out))


def make_pure_function(
    model: nnx.Module,
    *,
    vectorized: bool = True,
    portable: bool = True,
    example_inputs: Any = None,
    draws: list[JaxNoiseInput] | None = None,
) -> PureFunction:
    """Build the :class:`PureFunction` of `model` (see there).

    With `example_inputs` (batch axis first) the model's ``jax.random`` draws are discovered
    (:func:`discover_draws`) and become noise inputs after the distributions' ones; pass
    `draws` to reuse a discovery.
    """
    return PureFunction(model, vectorized=vectorized, portable=portable, example_inputs=example_inputs, draws=draws)


def _resize_batch(x: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // x.shape[0])
    return np.concatenate([x] * reps, axis=0)[:batch]


def _record(model: nnx.Module, inputs: tuple) -> list:
    """The draws of one abstract forward pass (weight noise fixed at zero)."""
    graphdef, state = nnx.split(model)
    weights = noise_inputs(model)
    found: list = []

    def run(*xs: Any) -> Any:
        m = nnx.merge(graphdef, state, copy=True)
        for e in weights:
            _get(m, tuple(int(k) if k.isdigit() else k for k in e.parameter.split("."))).set_noise(
                jnp.zeros(e.shape, jnp.float32)
            )
        with DrawMode(module_paths(m)) as mode:
            out = m(*xs)
        found[:] = mode.recorded
        return jax.tree_util.tree_leaves(out)

    jax.eval_shape(run, *inputs)
    return found


def discover_draws(model: nnx.Module, example_inputs: Any) -> list[JaxNoiseInput]:
    """The ``jax.random`` draws of `model`, in call order, as noise inputs.

    The model is traced abstractly at the example's batch size and at twice it; a draw dim
    that changes with the batch becomes ``"batch"`` (``"k*batch"`` for ``k`` times it). Each
    draw is named after its module and op (``"drop.dropout"``, ``"noisy.normal"``, a
    ``_1`` suffix for the next one of the same module and op).

    Raises:
        ExportError: a different number of draws at the two batch sizes, or a draw whose size
            is not a multiple of the batch.
    """
    items = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    xs_a = tuple(np.asarray(x) for x in items)
    b1 = int(xs_a[0].shape[0])
    b2 = 2 * b1
    xs_b = tuple(_resize_batch(x, b2) for x in xs_a)
    rec_a, rec_b = _record(model, xs_a), _record(model, xs_b)
    if len(rec_a) != len(rec_b) or any((a.module, a.op) != (b.module, b.op) for a, b in zip(rec_a, rec_b)):
        raise ExportError(
            f"the model made {len(rec_a)} random draws at batch {b1} but {len(rec_b)} (or other ones) at batch {b2}: "
            "a data-dependent number of draws cannot become a fixed list of noise inputs"
        )
    counts: dict[str, int] = {}
    out: list[JaxNoiseInput] = []
    for a, b in zip(rec_a, rec_b):
        where = f"module {a.module!r}" if a.module else "the model's forward"
        dims = _batch_dims(a.shape, b.shape, b1, b2, where)
        base = f"{a.module}.{a.op}" if a.module else a.op
        n = counts.get(base, 0)
        counts[base] = n + 1
        parameter = base if n == 0 else f"{base}_{n}"
        per_example = any(isinstance(d, str) for d in dims)
        kind = "dropout" if a.op == "dropout" else ("draw" if per_example else "weight")
        out.append(JaxNoiseInput(noise_input_name(parameter), parameter, a.shape, tuple(dims), kind, a.transform, a.module))
    return out


def _batch_dims(shape1: tuple[int, ...], shape2: tuple[int, ...], b1: int, b2: int, where: str) -> list[mf.Dim]:
    if len(shape1) != len(shape2):
        raise ExportError(f"{where} draws noise of rank {len(shape1)} at batch {b1} but {len(shape2)} at batch {b2}")
    dims: list[mf.Dim] = []
    for d1, d2 in zip(shape1, shape2):
        if d1 == d2:
            dims.append(int(d1))
            continue
        k, rem = divmod(d2 - d1, b2 - b1)
        if rem or k <= 0 or d1 != k * b1:
            raise ExportError(
                f"{where} draws noise whose size ({d1} at batch {b1}, {d2} at batch {b2}) is not a multiple of the "
                "batch: a graph input cannot be sized from it"
            )
        dims.append(mf.BATCH_DIM if k == 1 else f"{k}*{mf.BATCH_DIM}")
    return dims


def zeros_noise(noise: list[JaxNoiseInput], num_samples: int | None, batch: int | None = None) -> dict[str, np.ndarray]:
    """Zero noise for every input (``num_samples=None``: no sample axis; `batch` sizes per-example draws)."""
    lead = () if num_samples is None else (num_samples,)
    return {e.name: np.zeros(lead + (e.shape if batch is None else e.shape_at(batch)), np.float32) for e in noise}


def random_noise(
    noise: list[JaxNoiseInput], num_samples: int | None, seed: int, batch: int | None = None
) -> dict[str, np.ndarray]:
    """Standard-normal noise for every input, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    lead = () if num_samples is None else (num_samples,)
    return {
        e.name: rng.standard_normal(lead + (e.shape if batch is None else e.shape_at(batch))).astype(np.float32)
        for e in noise
    }
