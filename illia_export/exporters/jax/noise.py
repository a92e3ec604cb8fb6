"""Turn a Flax-NNX model into a pure function of its inputs and its weight noise.

``f(inputs, noise) -> outputs`` where `noise` maps :func:`noise_input_name` of each
distribution's dotted path (e.g. ``"eps_fc1_weights_distribution"``) to its ``eps``. Every
distribution then samples ``mu + softplus(rho) * eps``; the model's parameters are closed over
(constants of the traced function), so ``jax2tf``/``jax2onnx`` see a deterministic graph whose
only randomness is the explicit noise. This is the one place that maps a JAX model to its noise
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

from illia_export.artifact.manifest import check_unique_names, noise_input_name
from illia_export.distributions.jax import GaussianDistribution
from illia_export.errors import ExportError, ShapeError
from illia_export.nn.jax.module import portable_ops

#: jaxpr primitives that mean randomness is drawn inside the graph.
RANDOM_PRIMITIVES = (
    "random_bits",
    "random_seed",
    "random_wrap",
    "threefry2x32",
    "rng_bit_generator",
    "rng_uniform",
)


@dataclass(frozen=True)
class JaxNoiseInput:
    """One noise input of a JAX model: graph name, distribution path and event shape."""

    name: str
    parameter: str
    shape: tuple[int, ...]


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

    def __init__(self, model: nnx.Module, *, vectorized: bool, portable: bool = True) -> None:
        #: Names of the outputs when the model returns a dict or a named tuple (set by a call).
        self.output_keys: list[str] | None = None
        self.noise = noise_inputs(model)
        if vectorized and not self.noise:
            raise ExportError(
                "the model has no Bayesian layer (no GaussianDistribution), so there is no noise to "
                "vectorize over; export it with samples='per-call'"
            )
        self.vectorized = vectorized
        self.portable = portable
        self._graphdef, self._state = nnx.split(model)
        self._paths = [e.parameter for e in self.noise]

    def single(self, inputs: tuple, noise: dict[str, jax.Array]) -> tuple:
        """One sample: noise arrays of the distributions' shapes."""
        model = nnx.merge(self._graphdef, self._state, copy=True)
        for entry in self.noise:
            dist = _get(model, tuple(int(k) if k.isdigit() else k for k in entry.parameter.split(".")))
            dist.set_noise(noise[entry.name])
        if self.portable:
            with portable_ops():
                out = model(*inputs)
        else:
            out = model(*inputs)
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
            want = len(e.shape) + (1 if self.vectorized else 0)
            if noise[e.name].ndim != want or tuple(noise[e.name].shape[-len(e.shape) :]) != e.shape:
                lead = "[S, " if self.vectorized else "["
                raise ShapeError(
                    f"noise {e.name!r} must have shape {lead}{', '.join(map(str, e.shape))}], "
                    f"got {tuple(noise[e.name].shape)}"
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


def make_pure_function(model: nnx.Module, *, vectorized: bool = True, portable: bool = True) -> PureFunction:
    """Build the :class:`PureFunction` of `model` (see there)."""
    return PureFunction(model, vectorized=vectorized, portable=portable)


def find_random_primitives(fn: Callable[..., Any], *args: Any) -> list[str]:
    """Names of random-number primitives in the jaxpr of ``fn(*args)`` (should be empty)."""
    found: set[str] = set()

    def walk(jaxpr: Any) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in RANDOM_PRIMITIVES:
                found.add(eqn.primitive.name)
            for value in eqn.params.values():
                for item in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(item, "jaxpr", None)
                    if inner is not None and hasattr(inner, "eqns"):
                        walk(inner)
                    elif hasattr(item, "eqns"):
                        walk(item)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return sorted(found)


def zeros_noise(noise: list[JaxNoiseInput], num_samples: int | None) -> dict[str, np.ndarray]:
    """Zero noise for every input (``num_samples=None``: no sample axis)."""
    lead = () if num_samples is None else (num_samples,)
    return {e.name: np.zeros(lead + e.shape, np.float32) for e in noise}


def random_noise(noise: list[JaxNoiseInput], num_samples: int | None, seed: int) -> dict[str, np.ndarray]:
    """Standard-normal noise for every input, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    lead = () if num_samples is None else (num_samples,)
    return {e.name: rng.standard_normal(lead + e.shape).astype(np.float32) for e in noise}
