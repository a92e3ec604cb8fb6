"""TorchScript backend: ``forward(*inputs, *noise)`` on CPU or CUDA with torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, DeviceUnavailableError, require
from illia_export.runtime.backends import Backend


def keep_process_memory() -> bool:
    """Ask glibc to serve large allocations from the heap and not to trim it (process-wide).

    Returns:
        True when the settings were applied (glibc found), False otherwise.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1
    return ok and mallopt(m_trim_threshold, (1 << 31) - 1) == 1


class TorchScriptBackend(Backend):
    """Runs a TorchScript archive under ``torch.inference_mode``.

    Options:
        num_threads: torch intra-op threads (default: leave torch's setting).
        keep_memory: on Linux/glibc, raise malloc's mmap and trim thresholds (process-wide,
            via ``mallopt``) so that the large per-call tensors (``S x |W|`` sampled weights)
            are recycled instead of being mapped and page-faulted anew on every call; about
            2x faster for W1 here. Off by default because it changes the whole process's
            allocator behaviour (memory is kept at its peak).
    """

    name = "torchscript"
    noise_kind = "torch"

    def __init__(
        self, path: Path, input_names, noise_names, output_names, device: str = "cpu", **options: Any
    ):
        super().__init__(path, input_names, noise_names, output_names, device, **options)
        torch = require("torch", "torch", "Running TorchScript artifacts")
        self._torch = torch
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "device='cuda' was requested but torch.cuda.is_available() is False (this torch "
                f"{torch.__version__} has no usable CUDA device); use device='cpu' or a CUDA build of torch."
            )
        if options.get("keep_memory"):
            keep_process_memory()
        if options.get("num_threads"):
            torch.set_num_threads(int(options["num_threads"]))
        self._device = torch.device(device)
        self.module = self._load(path)

    def _load(self, path: Path):
        """The callable module ``forward(*inputs, *noise)`` of the artifact."""
        try:
            module = self._torch.jit.load(str(path), map_location=self._device)
        except Exception as exc:  # torch raises RuntimeError and friends
            raise ArtifactError(f"torch.jit.load cannot load {path}: {exc}") from exc
        module.eval()
        return module

    def prepare_inputs(self, inputs: list[np.ndarray]) -> list[Any]:
        torch = self._torch
        return [torch.from_numpy(np.ascontiguousarray(x)).to(self._device) for x in inputs]

    def run(self, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        torch = self._torch
        eps = [
            n
            if isinstance(n, torch.Tensor) and n.device == self._device
            else torch.as_tensor(n).to(self._device)
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
