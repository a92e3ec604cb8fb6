"""Which modules sample: the user's meaning of "stochastic mode" (``mc_dropout``).

``mc_dropout=True`` means what the model samples under ``model.train()`` with normalization
layers kept in eval: every dropout-like draw wherever it lives (``nn.Dropout*``, functional
dropout, ``bernoulli``/``rand`` masks gated by ``self.training`` such as LockedDropout,
DropPath, DropBlock, DropConnect, attention dropout inside SDPA / ``nn.MultiheadAttention`` /
transformers). A list of module names samples those modules and their children only.

Kept in eval, and named in the manifest (``extra["kept_in_eval"]``, printed by the CLI):
normalization layers with running or batch statistics (BatchNorm*, SyncBatchNorm,
InstanceNorm* with running stats, any module owning ``running_mean``/``running_var``), and
modules whose training flag changes their output for the same noise (:func:`probe`: a
module that reads ``self.training`` in its forward, draws nothing itself, and gives another
output in eval mode for the same draws). The distribution check then compares the artifact
with the source model in exactly this mode, with torch's own RNG: a draw the capture misses
cannot pass.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from illia_export.errors import ExportError

#: Dropout module types (listed in the manifest's ``dropout`` even when off).
DROPOUT_TYPES: tuple[type, ...] = (
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
)
_STATS = ("running_mean", "running_var")


@dataclass
class ModePlan:
    """The modules in training mode during capture, and those kept in eval (path -> why)."""

    train: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    requested: bool | list[str] = False

    @property
    def active(self) -> bool:
        return bool(self.requested)


def statistics_reason(module: torch.nn.Module) -> str | None:
    """Why a normalization module stays in eval (None: it is not one)."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    name = type(module).__name__
    if isinstance(module, _BatchNorm):
        return f"{name}: batch statistics in training mode (its running statistics are used)"
    if isinstance(module, _InstanceNorm) and module.track_running_stats:
        return f"{name}: instance statistics in training mode (its running statistics are used)"
    if any(getattr(module, s, None) is not None for s in _STATS) and any(
        n in _STATS for n, _ in module.named_buffers(recurse=False)
    ):
        return f"{name}: owns running statistics (normalization layer)"
    return None


def dropout_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {p: m for p, m in model.named_modules() if isinstance(m, DROPOUT_TYPES)}


def plan_modes(model: torch.nn.Module, mc_dropout: bool | str | Sequence[str] | None) -> ModePlan:
    """The static plan: which modules go to training mode (normalization layers never do)."""
    if mc_dropout is None or mc_dropout is False:
        return ModePlan()
    modules = dict(model.named_modules())
    if mc_dropout is True:
        roots, requested = [""], True
    else:
        names = [mc_dropout] if isinstance(mc_dropout, str) else list(mc_dropout)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ExportError(
                f"mc_dropout names {unknown}, which are not modules of the model (not dropout modules); its dropout "
                f"modules are {sorted(likely_dropout(model)) or 'none'}. Pass mc_dropout=True to sample every "
                "dropout-like draw"
            )
        roots, requested = names, names
    plan = ModePlan(requested=requested)
    for root in roots:
        prefix = f"{root}." if root else ""
        for path, module in modules.items():
            if path != root and not path.startswith(prefix) or path in plan.train or path in plan.kept:
                continue
            why = statistics_reason(module)
            if why:
                plan.kept[path] = why
            else:
                plan.train.append(path)
    return plan


def likely_dropout(model: torch.nn.Module) -> list[str]:
    """Modules that look dropout-like by type or name (for messages only)."""
    words = ("drop", "dropconnect", "droppath", "dropblock")
    return [
        p
        for p, m in model.named_modules()
        if p and (isinstance(m, DROPOUT_TYPES) or any(w in type(m).__name__.lower() for w in words))
    ]


def apply_modes(model: torch.nn.Module, train: Sequence[str]) -> None:
    """Eval everywhere, training mode for exactly the modules in `train` (not recursively)."""
    model.eval()
    modules = dict(model.named_modules())
    for path in train:
        modules[path].training = True


@contextlib.contextmanager
def inference_modes(model: torch.nn.Module, train: Sequence[str] = ()):
    """Apply :func:`apply_modes`; restore every training flag and every buffer afterwards.

    Buffers are restored because a module in training mode may update them (a custom
    normalization the probe did not recognise, a step counter): exporting never changes the
    caller's model.
    """
    saved = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        apply_modes(model, train)
        yield model
    finally:
        for m, flag in saved:
            m.training = flag
        with torch.no_grad():
            for b, copy in buffers:
                if b.shape == copy.shape:
                    b.copy_(copy)


def reads_training(module: torch.nn.Module) -> bool:
    """Does the module's forward read ``self.training``? (source text; unknown source: yes)."""
    forward = type(module).forward
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return True
    return "training" in source


def probe(
    model: torch.nn.Module,
    plan: ModePlan,
    run: Callable[[], tuple[list, list[torch.Tensor]]],
    owners: set[str],
) -> None:
    """Keep in eval the modules whose training flag changes something other than randomness.

    `run` runs the model in the current modes with a fixed noise generator and returns its
    draws (``(module, op)`` pairs) and output tensors; `owners` are the modules that draw
    themselves. A candidate (in training mode, not a dropout/normalization type, drawing
    nothing itself, reading ``self.training``) is switched to eval: a different list of draws
    means its flag gates randomness (it stays in training mode); the same draws but another
    output mean the flag changes the computation (it goes to eval and is named).
    """
    modules = dict(model.named_modules())
    base_draws, base_out = run()
    for path in list(plan.train):
        module = modules[path]
        if path in owners or isinstance(module, DROPOUT_TYPES) or not reads_training(module):
            continue
        module.training = False
        try:
            draws, out = run()
        finally:
            module.training = True
        if draws != base_draws:
            continue
        if any(
            a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6)
            for a, b in zip(out, base_out)
        ):
            plan.train.remove(path)
            plan.kept[path] = (
                f"{type(module).__name__}: its training flag changes its output for the same random draws "
                "(something other than randomness, e.g. batch statistics)"
            )
            module.training = False
            base_draws, base_out = run()


def _digest(value) -> tuple[tuple[float, float], ...]:
    from torch.utils._pytree import tree_leaves

    leaves = [t for t in tree_leaves(value) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    out = []
    for t in leaves:
        d = t.detach().double().nan_to_num(0.0, 1e300, -1e300)
        out.append((float(d.sum()), float(d.abs().sum())))
    return tuple(out)


def find_hidden_randomness(model: torch.nn.Module, inputs: Sequence[torch.Tensor], seed: int = 11) -> None:
    """Refuse a model whose output changes between two runs with the same intercepted draws.

    Such randomness escapes the capture (a fused kernel such as nn.GRU/LSTM's inter-layer
    dropout, numpy, a C++ extension): the artifact would miss it. Module outputs are compared
    in completion order, so the first that differs is the innermost module that drew it.

    Raises:
        ToleranceError: naming that module and what to do.
    """
    from torch.nn.modules import module as nn_module

    from illia_export.errors import ToleranceError
    from illia_export.exporters.torch.draws import DrawMode

    paths = {id(m): p for p, m in model.named_modules()}

    def once():
        seen: list[tuple[str, tuple]] = []

        def post(mod, _inputs, out):
            if id(mod) in paths:
                seen.append((paths[id(mod)], _digest(out)))

        handle = nn_module.register_module_forward_hook(post, always_call=True)
        try:
            with torch.no_grad(), DrawMode(generator=torch.Generator().manual_seed(seed)):
                model(*inputs)
        finally:
            handle.remove()
        return seen

    first, second = once(), once()
    for (path, a), (_, b) in zip(first, second):
        if a == b:
            continue
        module = model.get_submodule(path) if path else model
        where = (
            f"module {path!r} ({type(module).__name__})"
            if path
            else f"the model's forward ({type(module).__name__})"
        )
        hint = ""
        if isinstance(module, torch.nn.RNNBase) and module.dropout and module.training:
            hint = (
                f" It is the inter-layer dropout of {type(module).__name__} (dropout={module.dropout:g}), drawn inside "
                "the fused kernel: use single-layer RNNs with nn.Dropout between them, or leave the module out "
                f"of mc_dropout (mc_dropout=[...] without {path!r})."
            )
        raise ToleranceError(
            f"validation failed: {where} draws randomness the capture cannot see: two runs with the same noise "
            "inputs give different outputs (a random op outside torch's Python API: a fused kernel, numpy, a C++ "
            "extension), which the artifact would miss."
            + (
                hint
                or " Draw with torch (rand, randn, bernoulli, "
                "F.dropout) so the draw becomes a noise input, or keep the module in eval mode."
            )
        )
