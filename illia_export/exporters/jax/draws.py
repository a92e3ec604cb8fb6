"""Every ``jax.random`` draw of a Flax-NNX model becomes a standard-normal input.

Every sampler of ``jax.random`` ends in the ``random_bits`` primitive (threefry or rbg keys
alike): ``normal`` is ``sqrt(2) erfinv(uniform)``, ``bernoulli`` is ``uniform < p``,
``nnx.Dropout`` is ``bernoulli``, and ``uniform`` turns 23 random mantissa bits into a float.
Feeding *bits* from a normal input would keep that bit arithmetic (uint32 shifts, a bitcast:
neither ONNX nor TFLite builtins have a bitcast) and give ``normal`` back only to 2^-23
resolution, clipped at ~5.3 sigma. So the capture sits one level up, at the three samplers the
others are built from (``jax._src.random.core._normal``, ``_uniform``, ``_bernoulli``, which the
public functions look up at call time, whatever way the user imported ``jax.random``):

=================================  ==============================================
call                               value computed from the standard-normal ``z``
=================================  ==============================================
``jax.random.normal``              ``z``                       (``affine``)
``jax.random.uniform``             ``lo + (hi - lo) Φ(z)``     (``uniform``)
``jax.random.bernoulli``           ``Φ(z) < p``                (``bernoulli``)
``bernoulli`` in ``nnx.Dropout``   keep ``Φ(z) >= rate``       (``dropout``)
=================================  ==============================================

The same contract as the PyTorch capture (:mod:`illia_export.exporters.torch.draws`). While a
:class:`DrawMode` is active the three functions are replaced (a process-wide patch under a
lock, undone on exit). Samplers that reach them through another *jitted* jax.random helper
(``gumbel``, ``truncated_normal``, ``categorical``, ...) are refused: jax caches a jitted
function's trace, so a second trace would silently reuse the first one's draw. The key
derivation (``rngs.noise()`` = ``fold_in``) is still traced but feeds nothing any more:
:func:`clean` removes it by dead-code elimination and refuses a graph that still holds a
random primitive (``randint``, ``permutation``, a direct ``random_bits`` call, a draw inside a
user ``jax.jit`` function traced before), naming the source line.

Φ is computed with elementary ops (:func:`phi`), because ``lax.erf`` lowers to a StableHLO
composite that TF's converter (SavedModel/TFLite) cannot read.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from illia_export.errors import ExportError

_LOCK = threading.RLock()
#: The public samplers whose private core the capture replaces; anything else reaching it is refused.
_PUBLIC = ("normal", "uniform", "bernoulli")
_SQRT_HALF = np.float32(1.0 / np.sqrt(2.0))
#: Abramowitz & Stegun 7.1.26: erfc(x) = t P(t) exp(-x^2), t = 1/(1 + 0.3275911 x), |error| < 1.5e-7.
_AS_P = np.float32(0.3275911)
_AS_A = [np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]
_BELOW_ONE = np.float32(1.0 - 2.0**-24)

#: jaxpr primitives that draw (or derive) random numbers; none may remain in an exported graph.
RANDOM_PRIMITIVES = ("threefry2x32", "rng_bit_generator", "rng_uniform")


def is_random_primitive(name: str) -> bool:
    return name.startswith("random_") or name in RANDOM_PRIMITIVES


def phi(z: jax.Array) -> jax.Array:
    """The standard normal CDF Φ(z) with mul/add/div/exp/select only (portable to TFLite builtins).

    The tail ``z < 0`` is computed as ``erfc/2`` directly, so small probabilities keep their
    relative precision (``log(u)`` in Gumbel draws); absolute error < 1e-7.
    """
    z = jnp.asarray(z, jnp.float32)
    x = jnp.abs(z) * _SQRT_HALF
    t = 1.0 / (1.0 + _AS_P * x)
    poly = t * (_AS_A[0] + t * (_AS_A[1] + t * (_AS_A[2] + t * (_AS_A[3] + t * _AS_A[4]))))
    tail = 0.5 * poly * jnp.exp(-x * x)
    return jnp.where(z < 0, tail, 1.0 - tail)


@dataclass
class RecordedDraw:
    """A draw seen while recording: where it happened and what it needs."""

    module: str  # dotted path of the innermost nnx module that drew ("" = the root's own code)
    module_type: str
    op: str  # normal | uniform | bernoulli | dropout
    transform: str  # manifest NOISE_TRANSFORMS
    shape: tuple[int, ...]


@dataclass
class DrawMode:
    """Replaces jax.random's samplers while active (see the module docstring).

    Args:
        paths: ``id(module) -> dotted path`` of the modules of the model being traced (the
            merged copy inside the trace), to name each draw after its module.
        feed: the standard-normal arrays, one per draw in call order; None records instead
            (the real sampler runs and the draw is listed in :attr:`recorded`).
    """

    paths: dict[int, str]
    feed: Sequence[Any] | None = None
    recorded: list[RecordedDraw] = field(default_factory=list)
    used: int = 0
    _saved: tuple = ()
    _inside: bool = False

    def __enter__(self) -> DrawMode:
        from jax._src.random import core as rc

        missing = [n for n in ("_normal", "_uniform", "_bernoulli") if not hasattr(rc, n)]
        if missing:
            raise ExportError(
                f"this jax version ({jax.__version__}) has no jax._src.random.core.{missing[0]}: the JAX draw capture "
                "needs jax 0.8-0.10; export with an illia_export.nn.jax Bayesian model only, or pin jax"
            )
        _LOCK.acquire()
        self._saved = (rc._normal, rc._uniform, rc._bernoulli)
        originals = self._saved
        rc._normal = lambda key, shape, dtype: self._draw(
            "normal", originals[0], (key, shape, dtype), shape, dtype
        )
        rc._uniform = lambda key, minval, maxval, shape, dtype: self._draw(
            "uniform", originals[1], (key, minval, maxval, shape, dtype), shape, dtype, lo=minval, hi=maxval
        )
        rc._bernoulli = lambda key, p, shape, mode: self._draw(
            "bernoulli",
            originals[2],
            (key, p, shape, mode),
            shape if shape is not None else np.shape(p),
            None,
            p=p,
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        from jax._src.random import core as rc

        try:
            rc._normal, rc._uniform, rc._bernoulli = self._saved
        finally:
            _LOCK.release()

    # ------------------------------------------------------------------------------------
    def _module(self) -> tuple[str, Any]:
        frame = sys._getframe(2)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in self.paths:
                return self.paths[id(owner)], owner
            frame = frame.f_back
        return "", None

    def _draw(self, op: str, original: Callable, args: tuple, shape: Any, dtype: Any, **params: Any) -> Any:
        from flax import nnx

        if self._inside:
            return original(*args)
        caller = sys._getframe(2).f_code.co_name  # the public sampler that called the replaced one
        if caller not in _PUBLIC:
            raise ExportError(
                f"{_where(self._module()[0])} draws through jax.random's {caller.lstrip('_')!r}, a jitted sampler "
                "whose trace jax caches, so its draw cannot be fed from a noise input; draw with "
                "jax.random.normal / uniform / bernoulli (or nnx.Dropout) and transform the result"
            )
        shape = tuple(shape) if self.feed is not None else tuple(int(d) for d in shape)
        path, module = self._module()
        if op == "normal" and dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating):
            raise ExportError(
                f"{_where(path)} draws complex normal numbers (jax.random.normal with dtype {dtype}), which "
                "illia-export cannot turn into a real noise input"
            )
        dropout = op == "bernoulli" and isinstance(module, nnx.Dropout)
        if dropout:
            op = "dropout"
        transform = {
            "normal": "affine",
            "uniform": "uniform",
            "bernoulli": "bernoulli",
            "dropout": "dropout",
        }[op]
        if self.feed is None:
            self.recorded.append(
                RecordedDraw(path, type(module).__name__ if module else "", op, transform, shape)
            )
            self._inside = True  # the real sampler's own nested calls (bernoulli -> uniform) are not draws
            try:
                return original(*args)
            finally:
                self._inside = False
        if self.used >= len(self.feed):
            raise ExportError(
                f"{_where(path)} made more random draws than when it was first run ({len(self.feed)}): the number of "
                "draws depends on the data, which a graph with a fixed list of noise inputs cannot express"
            )
        z = jnp.asarray(self.feed[self.used], jnp.float32)
        self.used += 1
        if not _same_shape(tuple(z.shape), shape):
            raise ExportError(
                f"{_where(path)} draws {op} noise of shape {shape}, but its noise input has shape {tuple(z.shape)}: "
                "the draw's size follows a dimension other than the batch (a dynamic axis such as a sequence "
                "length), which the JAX exporter cannot size a noise input from yet; fix that axis's length "
                "(no dynamic_axes entry for it)"
            )
        if op == "normal":
            return z.astype(dtype)
        u = jnp.minimum(phi(z), _BELOW_ONE)
        if op == "uniform":
            lo = jnp.asarray(params["lo"], dtype)
            hi = jnp.asarray(params["hi"], dtype)
            return jnp.maximum(lo, lo + (hi - lo) * u.astype(dtype))
        if dropout:
            return u >= jnp.float32(module.rate)  # the mask of the contract's "dropout" transform
        return u < jnp.asarray(params["p"], jnp.float32)


def _same_shape(a: tuple, b: tuple) -> bool:
    if len(a) != len(b):
        return False
    try:
        return all(bool(x == y) for x, y in zip(a, b))
    except Exception:  # symbolic dims of different symbols cannot be compared
        return False


def _where(path: str) -> str:
    return f"module {path!r}" if path else "the model's forward"


def module_paths(model: Any) -> dict[int, str]:
    from flax import nnx

    return {id(m): ".".join(str(k) for k in p) for p, m in nnx.iter_modules(model)}


# ------------------------------------------------------------------------------- clean graphs
_DRAWING = ("random_bits", "rng_bit_generator", "rng_uniform", "threefry2x32")


def leftover_random(jaxpr: Any) -> list[str]:
    """``"primitive at file:line (function)"`` for the random primitives left in `jaxpr`.

    Sub-jaxprs (jit, scan, cond bodies) are searched too; their equations are located at the
    user's line of the equation that holds them when they have no location of their own. Draws
    (``random_bits``, ...) are reported when there are any, key derivations otherwise.
    """
    from jax._src import source_info_util

    found: list[tuple[str, str]] = []

    def walk(jx: Any, outer: str) -> None:
        for eqn in jx.eqns:
            where = source_info_util.summarize(eqn.source_info) or outer
            if is_random_primitive(eqn.primitive.name):
                found.append((eqn.primitive.name, where))
            for value in eqn.params.values():
                for item in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(item, "jaxpr", None)
                    if inner is not None and hasattr(inner, "eqns"):
                        walk(inner, where)
                    elif hasattr(item, "eqns"):
                        walk(item, where)

    walk(jaxpr, "")
    draws = [f for f in found if f[0] in _DRAWING] or found
    return [f"{name} at {where or '<unknown>'}" for name, where in draws]


def traced(fn: Callable[..., Any], *args: Any) -> Any:
    """The jaxpr and consts of ``fn(*args)`` after dead-code elimination."""
    from jax._src.interpreters import partial_eval as pe

    closed = jax.make_jaxpr(fn)(*args)
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars), instantiate=True)
    return jaxpr, closed.consts


def clean(fn: Callable[..., tuple]) -> Callable[..., tuple]:
    """``fn`` replayed from its dead-code-eliminated jaxpr: what converters see.

    Tracing happens inside the caller's trace (jax2tf's polymorphic shapes, jax2onnx's
    symbolic ones), so the replay uses the caller's symbolic dims. Refuses a jaxpr that still
    draws random numbers after the capture.
    """

    def replay(*args: Any) -> tuple:
        jaxpr, consts = traced(fn, *args)
        left = leftover_random(jaxpr)
        if left:
            raise ExportError(
                "the model draws random numbers the capture cannot turn into noise inputs: "
                + "; ".join(sorted(set(left))[:5])
                + " (supported: jax.random.normal, uniform, bernoulli and nnx.Dropout, called from the model's "
                "code; not randint, permutation, gamma/beta/dirichlet/poisson, raw jax.random.bits, or draws "
                "inside a function under jax.jit)"
            )
        return tuple(jax.core.eval_jaxpr(jaxpr, consts, *args))

    return replay
