"""Inference modes and the capture: the draws each mode makes, the mc_dropout selection, and why nothing samples.

Split from :mod:`.strategy_export` (which calls these while preparing a capture) because they
are about modes, not about torch.export: apply a :class:`~.modes.ModePlan` while probing which
module flags change more than randomness, check that each module ``mc_dropout`` names samples
something, and say, when there is nothing to sample, what would draw in training mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from illia_export.errors import ExportError, IlliaExportError
from illia_export.exporters.torch.capture import Discovery, draw_keys, flatten_outputs
from illia_export.exporters.torch.modes import (
    ModePlan,
    apply_modes,
    find_hidden_randomness,
    plan_modes,
    probe,
)


def train_draws(model, inputs: list[torch.Tensor]) -> list[tuple[str, str]]:
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


def describe(keys: Sequence[tuple[str, str]]) -> str:
    seen = list(dict.fromkeys(f"{m!r} ({op})" if m else f"the model's forward ({op})" for m, op in keys))
    return ", ".join(seen[:8]) + (f" and {len(seen) - 8} more" if len(seen) > 8 else "")


def no_draws_error(model, inputs, discovery: Discovery, plan: ModePlan) -> ExportError:
    """Why there is nothing to sample, naming what would draw in training mode."""
    if plan.active:
        return ExportError(
            "mc_dropout is set, but no module draws more random numbers in training mode than in eval mode (no "
            "dropout module, no functional dropout, DropPath or other mask is active): there is nothing to sample; "
            "export without mc_dropout"
        )
    would = train_draws(model, inputs)
    off = [d.path for d in discovery.dropout if not d.sampled]
    if would:
        return ExportError(
            "the model draws no random numbers in eval mode, so there is nothing to sample (no Bayesian layer, no "
            f"active dropout); in training mode it draws in {describe(would)}"
            + (f" (dropout modules {off})" if off else "")
            + ": pass mc_dropout=True (CLI --mc-dropout) to sample them as model.train() does"
        )
    hint = f"; its dropout modules {off} draw nothing even in training mode (p=0?)" if off else ""
    return ExportError(
        "the model draws no random numbers, in eval or in training mode, so there is nothing to sample (no Bayesian "
        f"layer, no dropout){hint}"
    )


def set_modes(model, inputs_a: list[torch.Tensor], plan: ModePlan) -> list[tuple[str, str]] | None:
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


def check_selection(model, discovery: Discovery, plan: ModePlan) -> None:
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
