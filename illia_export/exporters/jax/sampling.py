"""The sampling side of a JAX export: which dropout modules sample, and the model's own sampling.

:func:`inference_copy` puts a copy of the model in its export modes (``mc_dropout``), so the
user's flags and rng counters never move; :func:`distribution_check` compares that copy,
called S times with its own rngs, with the artifact fed by the runtime, the same check as
the PyTorch side (:mod:`illia_export.exporters.verify.distribution`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError

#: XLA options for the one-off source sampling of the distribution check.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
#: Above this many (weight elements x samples), XLA's unoptimized random draws cost more than
#: the optimizing compile saves (threefry runs ~11x slower unoptimized on CPU).
_FAST_COMPILE_MAX_WORK = 20_000_000


def _weights(state: Any) -> int:
    """Elements of the model's state arrays (a proxy for the draws one forward pass makes)."""
    import jax

    return sum(int(getattr(leaf, "size", 0)) for leaf in jax.tree_util.tree_leaves(state))


def dropout_modules(model: Any) -> dict[str, Any]:
    """Dropout-like modules: a boolean ``deterministic`` flag and a positive ``rate``/``dropout_rate``.

    ``nnx.Dropout`` and ``nnx.MultiHeadAttention`` (attention dropout) are such modules.
    """
    from flax import nnx

    found = {}
    for path, module in nnx.iter_modules(model):
        rate = (
            getattr(module, "rate", None)
            if isinstance(module, nnx.Dropout)
            else getattr(module, "dropout_rate", None)
        )
        if hasattr(module, "deterministic") and isinstance(rate, (int, float)) and rate > 0:
            found[".".join(map(str, path))] = module
    return found


def select_dropout(model: Any, mc_dropout: bool | str | Sequence[str] | None) -> list[str]:
    """The dropout modules to sample: all for True, the named ones for a list, none for None/False."""
    found = dropout_modules(model)
    if mc_dropout is None or mc_dropout is False:
        return []
    if mc_dropout is True:
        if not found:
            raise ExportError(
                "mc_dropout=True, but the model has no dropout module (nnx.Dropout, or a module with a "
                "`deterministic` flag and a dropout rate)"
            )
        return list(found)
    names = [mc_dropout] if isinstance(mc_dropout, str) else list(mc_dropout)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ExportError(
            f"mc_dropout names {unknown}, which are not dropout modules of the model; its dropout modules are "
            f"{sorted(found) or 'none'}"
        )
    return names


def inference_copy(model: Any, fmt: str, mc_dropout: Any) -> tuple[Any, list[mf.DropoutSite]]:
    """A copy of `model` in its export modes: the dropout modules selected by `mc_dropout` sample
    (``deterministic=False``), every other one is off; the user's model is left untouched.

    A BatchNorm in training mode (batch statistics) is refused: it is not randomness, and the
    graph cannot reproduce it per example.
    """
    from flax import nnx

    work = nnx.clone(model)
    for path, module in nnx.iter_modules(work):
        where = ".".join(map(str, path)) or "<root>"
        if isinstance(module, nnx.BatchNorm) and not module.use_running_average:
            raise ExportError(
                f"cannot export to {fmt}: layer {where!r} (nnx.BatchNorm) is in training mode (batch "
                "statistics); call model.eval() before exporting (mc_dropout=True still samples the dropout layers)"
            )
    sampled = select_dropout(work, mc_dropout)
    sites = []
    for path, module in dropout_modules(work).items():
        module.deterministic = path not in sampled
        rate = module.rate if isinstance(module, nnx.Dropout) else module.dropout_rate
        sites.append(mf.DropoutSite(path, float(rate), path in sampled))
    return work, sites


def source_samples(model: Any, inputs: Sequence[np.ndarray], num: int) -> list[np.ndarray]:
    """`num` forward passes of the nnx model with its own rngs: ``[num, B, ...]`` per output.

    The calls are one compiled ``lax.scan`` that carries the model's state, so call ``i`` sees
    the rng counters that call ``i - 1`` left, exactly as calling the model `num` times does
    (checked against a loop of ``nnx.jit`` calls: identical samples). Compiling dominates, so it
    uses XLA's cheap settings. The caller's model is not touched.
    """
    import jax
    from flax import nnx

    from illia_export.exporters.jax.noise import flatten_outputs
    from illia_export.nn.jax.module import unfreeze

    # a frozen Bayesian layer repeats its last weights, but the graph always samples (injected
    # noise wins over the frozen state): the reference is the unfrozen model
    graphdef, state = nnx.split(unfreeze(nnx.clone(model)))
    xs = tuple(np.asarray(x) for x in inputs)

    def body(carry: Any, _: Any) -> tuple[Any, tuple]:
        m = nnx.merge(graphdef, carry)
        out = flatten_outputs(m(*xs))[1]
        return nnx.state(m), out

    lowered = jax.jit(lambda st: jax.lax.scan(body, st, None, length=num)).lower(state)
    compiled = None
    if _weights(state) * num <= _FAST_COMPILE_MAX_WORK:
        try:  # the check runs once: a cheap compile beats a fast loop (compile 7.1 s -> 3.0 s, run 0.2 -> 0.6 s)
            compiled = lowered.compile(compiler_options=_FAST_COMPILE)
        except Exception:  # an XLA without these flags
            compiled = None
    if compiled is None:  # large models: the unoptimized draws dominate (670k weights x 200: run 12.4 s -> 1.1 s)
        compiled = lowered.compile()
    _, outs = compiled(state)
    return [np.asarray(o) for o in outs]


def distribution_check(
    model: Any, inputs: list[np.ndarray], output_names: list[str], path: Path, manifest: mf.Manifest, num: int
) -> dict:
    """The model's own sampling against the artifact at `path` fed by :mod:`illia_export.runtime`.

    Returns the per-output record of :func:`illia_export.exporters.verify.distribution.compare`
    (raises ``ToleranceError`` on a mismatch: a draw the capture missed, a wrong transform).
    """
    from illia_export.exporters.verify.distribution import compare
    from illia_export.runtime.predictor import Predictor

    source = source_samples(model, inputs, num)
    # the exporter's own unstamped temp file: the digest is stamped after this check
    pred = Predictor(path, manifest, allow_unverified=True, trust_native_code=True).predict(
        inputs if len(inputs) > 1 else inputs[0], num_samples=num, seed=4321
    )
    return compare(output_names, source, [pred.outputs[n] for n in output_names])
