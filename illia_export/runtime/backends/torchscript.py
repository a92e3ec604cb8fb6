"""TorchScript backend: ``forward(*inputs, *noise)`` on CPU or CUDA with torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, require
from illia_export.runtime.backends import Backend
from illia_export.runtime.errors import DeviceUnavailableError


class TorchScriptBackend(Backend):
    """Runs a TorchScript archive under ``torch.inference_mode``.

    Options:
        num_threads: torch intra-op threads (default: leave torch's setting).
    """

    name = "torchscript"
    noise_kind = "torch"

    def __init__(self, path: Path, input_names, noise_names, output_names, device: str = "cpu", **options: Any):
        super().__init__(path, input_names, noise_names, output_names, device, **options)
        torch = require("torch", "torch", "Running TorchScript artifacts")
        self._torch = torch
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "device='cuda' was requested but torch.cuda.is_available() is False (this torch "
                f"{torch.__version__} has no usable CUDA device); use device='cpu' or a CUDA build of torch."
            )
        if options.get("num_threads"):
            torch.set_num_threads(int(options["num_threads"]))
        self._device = torch.device(device)
        try:
            self.module = torch.jit.load(str(path), map_location=self._device)
        except Exception as exc:  # torch raises RuntimeError and friends
            raise ArtifactError(f"torch.jit.load cannot load {path}: {exc}") from exc
        self.module.eval()

    def prepare_inputs(self, inputs: list[np.ndarray]) -> list[Any]:
        torch = self._torch
        return [torch.from_numpy(np.ascontiguousarray(x)).to(self._device) for x in inputs]

    def run(self, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        torch = self._torch
        eps = [
            n if isinstance(n, torch.Tensor) and n.device == self._device else torch.as_tensor(n).to(self._device)
            for n in noise
        ]
        with torch.inference_mode():
            out = self.module(*inputs, *eps)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(self.output_names):
            raise ArtifactError(
                f"{self.path}: forward returned {len(outs)} tensors, the manifest lists "
                f"{len(self.output_names)} outputs {self.output_names}"
            )
        result = []
        for o in outs:
            if not isinstance(o, torch.Tensor):
                raise ArtifactError(f"{self.path}: forward returned a {type(o).__name__}, expected tensors")
            result.append(o.detach().cpu().numpy() if o.device.type != "cpu" else o.detach().numpy())
        return result

    def describe(self) -> str:
        return f"torchscript (torch {self._torch.__version__}, {self._device})"
