"""The local-reparameterization variant of a torch.export capture: facts for the guard, and its writer.

Local reparameterization draws independent pre-activation noise ``[S, B, out]`` per Linear
instead of weight noise: exact in distribution only when every draw is an illia Linear's weight
noise and each Linear runs once on a 2-D input. This module reports those facts
(:class:`~.capture_result.LocalPlan`) and captures the variant (:class:`LocalWrapper` +
``torch.export``); whether it is exact, and its checks, are the shared tail's
(:func:`.pipeline.local_unavailable_reason`, :func:`.pipeline.finish`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError
from illia_export.exporters.torch.capture import flatten_outputs
from illia_export.exporters.torch.capture_result import LocalPlan, inject_per_sample
from illia_export.exporters.torch.strategy_export import CAPTURE_SAMPLES, Capture
from illia_export.exporters.torch.writers import write
from illia_export.nn.torch.module import sample_blocks


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
    """The eager model under local reparameterization, one sample at a time."""
    return inject_per_sample(
        cap.model, inputs, noise, layers, "set_local_noise", "clear_local_noise", lambda out: flatten_outputs(out)[0]
    )


def local_plan(cap: Capture, manifest: mf.Manifest, opset: int) -> LocalPlan:
    """The facts of this capture for the local guard, and the writer of its local variant (ONNX)."""
    from illia_export.nn.torch.linear import Linear

    modules = dict(cap.model.named_modules())
    draws: list[tuple[str, str, bool]] = []
    layers: list[str] = []  # the Linear layers, in draw order
    for s in cap.sites:
        owner = s.parameter.rpartition(".")[0]
        draws.append((s.parameter, s.kind, isinstance(modules.get(owner), Linear)))
        if owner not in layers:
            layers.append(owner)
    exact_owners = all(linear for _, _, linear in draws)
    outs = [int(modules[p].output_size) for p in layers] if exact_owners else []

    def write_local(tmp, names: list[str], specs: list[mf.NoiseSpec]) -> None:
        wrapper = LocalWrapper(cap.model, layers, len(cap.inputs))
        example = [torch.randn(CAPTURE_SAMPLES, cap.batch, o) for o in outs]
        program = _export_local(wrapper, cap, example)
        write("onnx", program, cap.inputs + example, tmp, manifest.inputs + specs, manifest.outputs, opset)

    return LocalPlan(
        formats=("onnx",),
        draws=draws,
        linear_calls=dict(cap.discovery.linear_calls),
        float_inputs=all(x.is_floating_point() for x in cap.inputs),
        layers=layers,
        outputs=outs,
        write=write_local,
        reference=lambda xs, noise: local_reference(cap, layers, xs, noise),
    )


def _export_local(wrapper: LocalWrapper, cap: Capture, example) -> Any:
    import torch.fx.experimental._config as fx_config
    from torch.export import Dim

    batch, samples = Dim("batch", min=1), Dim("samples", min=1)
    shapes = [{0: batch} for _ in cap.inputs] + [{0: samples, 1: batch} for _ in example]
    try:
        with fx_config.patch(backed_size_oblivious=True), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assigned during export", category=UserWarning)
            return torch.export.export(wrapper, tuple(cap.inputs + example), dynamic_shapes=(tuple(shapes),), strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export could not capture the local variant: {exc}") from exc
