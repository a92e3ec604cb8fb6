"""Generate the TorchScript wrapper that turns a Bayesian model into a deterministic graph.

The wrapper's ``forward(*inputs, *noise)`` injects each noise tensor into its distribution
(``set_noise``), runs the model, and clears the noise. In ``vectorized`` mode the noise has a
sample axis ``[S, *shape]``: inputs are repeated S times sample-major along the batch axis (the
layers then use one weight set per block) and outputs are unfolded to ``[S, B, ...]``. In
``local`` mode (Linear-only models) the inputs are pre-activation noises ``[S, B, out]``.

The wrapper is generated as Python source and compiled with ``torch.jit.script``: that is what
lets one code path serve live modules and TorchScript archives alike (a traced wrapper could not
reach into an archive's layers), keep ``freeze``/``unfreeze``/``kl_cost`` on the artifact, and
keep the LSTM's loop as a loop.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence

from illia_export.exporters.torch.registry import LayerSite, ModelNoise

MODES = ("vectorized", "per-call", "local")
OutputPath = tuple[int, ...]


def _accessor(path: str) -> str:
    expr = "self.model"
    for part in filter(None, path.split(".")):
        if part.isidentifier() and not keyword.iskeyword(part):
            expr = f"{expr}.{part}"
        else:
            expr = f'getattr({expr}, "{part}")'
    return expr


def _out_expr(path: OutputPath) -> str:
    return "out" + "".join(f"[{i}]" for i in path)


def _return(exprs: list[str]) -> tuple[str, str]:
    if len(exprs) == 1:
        return "Tensor", exprs[0]
    return f"Tuple[{', '.join(['Tensor'] * len(exprs))}]", "(" + ", ".join(exprs) + ")"


def wrapper_source(
    model_noise: ModelNoise,
    input_names: Sequence[str],
    noise_names: Sequence[str],
    output_paths: Sequence[OutputPath],
    mode: str,
    local_layers: Sequence[LayerSite] = (),
) -> str:
    """Python source of the wrapper class ``IlliaExportWrapper`` (see module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    args = ", ".join(f"{n}: Tensor" for n in [*input_names, *noise_names])
    outs = [_out_expr(p) for p in output_paths]
    ret_type, _ = _return(outs)
    lines = [
        "from typing import List, Tuple",
        "import torch",
        "from torch import Tensor",
        "",
        "",
        "def _fold(x: Tensor, num_samples: int) -> Tensor:",
        "    return x.unsqueeze(0).expand([num_samples] + x.shape).reshape([-1] + x.shape[1:])",
        "",
        "",
        "def _unfold(y: Tensor, num_samples: int) -> Tensor:",
        "    return y.reshape([num_samples, -1] + y.shape[1:])",
        "",
        "",
        "class IlliaExportWrapper(torch.nn.Module):",
        "    def __init__(self, model: torch.nn.Module) -> None:",
        "        super().__init__()",
        "        self.model = model",
        "",
        f"    def forward(self, {args}) -> {ret_type}:",
    ]
    body: list[str] = []
    if mode == "per-call":
        call_inputs = list(input_names)
        sites = [s.parameter for s in model_noise.noise]
        for name, param in zip(noise_names, sites):
            body.append(f"{_accessor(param)}.set_noise({name})")
    else:
        body.append(f"num_samples = {noise_names[0]}.size(0)")
        call_inputs = [f"_fold({n}, num_samples)" for n in input_names]
        if mode == "vectorized":
            for name, site in zip(noise_names, model_noise.noise):
                body.append(f"{_accessor(site.parameter)}.set_noise({name})")
        else:
            for name, layer in zip(noise_names, local_layers):
                body.append(f"{_accessor(layer.path)}.set_local_noise({name}.reshape([-1, {name}.size(2)]))")
    body.append(f"out = self.model({', '.join(call_inputs)})")
    if mode == "local":
        body += [f"{_accessor(layer.path)}.clear_local_noise()" for layer in local_layers]
    else:
        body += [f"{_accessor(site.parameter)}.clear_noise()" for site in model_noise.noise]
    if mode == "per-call":
        _, ret = _return(outs)
    else:
        _, ret = _return([f"_unfold({o}, num_samples)" for o in outs])
    body.append(f"return {ret}")
    lines += ["        " + b for b in body]

    plain_args = ", ".join(f"{n}: Tensor" for n in input_names)
    bayes = model_noise.bayesian_layers
    lines += [
        "",
        "    @torch.jit.export",
        f"    def sample_forward(self, {plain_args}) -> {ret_type}:",
        '        """Stochastic forward of the source model (draws its own noise, honours freeze)."""',
        f"        out = self.model({', '.join(input_names)})",
        f"        return {_return(outs)[1]}",
        "",
        "    @torch.jit.export",
        "    def freeze(self) -> None:",
        *[f"        {_accessor(s.path)}.freeze()" for s in bayes],
        "        return None",
        "",
        "    @torch.jit.export",
        "    def unfreeze(self) -> None:",
        *[f"        {_accessor(s.path)}.unfreeze()" for s in bayes],
        "        return None",
        "",
        "    @torch.jit.export",
        "    def kl_cost(self) -> Tuple[Tensor, int]:",
        "        total = torch.zeros([])",
        "        count = 0",
    ]
    for i, site in enumerate(bayes):
        lines += [
            f"        kl_{i}, n_{i} = {_accessor(site.path)}.kl_cost()",
            f"        total = total + kl_{i}",
            f"        count = count + n_{i}",
        ]
    lines += ["        return total, count", ""]
    return "\n".join(lines)


def build_wrapper(model, source: str):
    """Compile `source` (from :func:`wrapper_source`) around `model`; return the ScriptModule."""
    import torch

    name = f"illia_export_wrapper_{uuid.uuid4().hex}"
    fd, path = tempfile.mkstemp(prefix=name, suffix=".py")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return torch.jit.script(module.IlliaExportWrapper(model))
    finally:
        sys.modules.pop(name, None)
        os.unlink(path)
