"""Inference backends behind one small interface (:class:`Backend`), one module per format.

A backend runs one graph of an artifact: ``run(inputs, noise) -> outputs`` in the manifest's
order. It knows nothing about sampling strategies; the :class:`~illia_export.runtime.Predictor`
makes the noise and calls it once per chunk of samples (vectorized graphs) or once per sample
(per-call graphs). Heavy libraries are imported inside each module, when a backend is opened.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from illia_export.errors import DeviceUnavailableError

#: Backend module and class per artifact format.
_BACKENDS = {
    "onnx": ("illia_export.runtime.backends.ort", "OnnxRuntimeBackend"),
    "torchscript": ("illia_export.runtime.backends.torchscript", "TorchScriptBackend"),
    "tflite": ("illia_export.runtime.backends.tflite", "TFLiteBackend"),
    "savedmodel": ("illia_export.runtime.backends.savedmodel", "SavedModelBackend"),
}

DEVICES = ("cpu", "cuda")


@dataclass
class WeightPlan:
    """What :meth:`Backend.weight_plan` found: per noise input, ``(mu, sigma)`` (float32 arrays
    of the per-sample shape) when the backend takes the sampled weights ``mu + sigma * eps`` in
    its place, or None when it takes ``eps``; ``handle`` is the backend's own (e.g. the
    rewritten graph's session)."""

    pairs: list[tuple[np.ndarray, np.ndarray] | None]
    handle: Any


class Backend(ABC):
    """Runs one graph (main or local variant) of an artifact.

    Args:
        path: the graph file (or SavedModel folder).
        input_names: model input names, in manifest order.
        noise_names: noise input names, in manifest order.
        output_names: output names, in manifest order.
        device: ``"cpu"`` or ``"cuda"``.
        **options: backend-specific options (see each backend).
    """

    #: Short name shown in summaries and benchmarks.
    name: ClassVar[str] = "backend"
    #: Preferred array type of the noise passed to :meth:`run`: ``"torch"`` (tensors on
    #: :attr:`noise_device`, made with the torch noise generator) or ``"numpy"``. Backends
    #: accept both; the preferred kind avoids a copy.
    noise_kind: ClassVar[str] = "numpy"

    def __init__(
        self,
        path: Path,
        input_names: list[str],
        noise_names: list[str],
        output_names: list[str],
        device: str = "cpu",
        **options: Any,
    ) -> None:
        self.path = Path(path)
        self.input_names = list(input_names)
        self.noise_names = list(noise_names)
        self.output_names = list(output_names)
        self.device = device
        self.options = options

    @property
    def noise_device(self) -> str:
        """Where noise tensors should live (``"cpu"`` or ``"cuda"``)."""
        return self.device

    def prepare_inputs(self, inputs: list[np.ndarray]) -> list[Any]:
        """Convert validated model inputs to the backend's native form once per prediction."""
        return inputs

    @abstractmethod
    def run(self, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        """Run the graph once.

        Args:
            inputs: prepared model inputs (from :meth:`prepare_inputs`), each ``[B, ...]``.
            noise: one array per noise input: ``[c, *shape]`` for a vectorized graph (c samples)
                or ``[*shape]`` for a per-call graph; numpy arrays or torch tensors.

        Returns:
            The outputs in manifest order as numpy arrays: ``[c, B, ...]`` (vectorized) or
            ``[B, ...]`` (per-call).
        """

    def precompute_noise(self, noise: list[Any]) -> Any | None:
        """Evaluate whatever depends on the noise alone, for a noise chunk that will be reused
        (the ``bank`` strategy). Returns a token for :meth:`run_precomputed`, or None when the
        backend has nothing to precompute (the default)."""
        return None

    def run_precomputed(self, inputs: list[Any], token: Any) -> list[np.ndarray]:
        """Like :meth:`run` with the noise chunk that :meth:`precompute_noise` returned `token` for."""
        raise NotImplementedError(f"{type(self).__name__} does not precompute noise")

    def weight_plan(self, shapes: list[tuple[int, ...]], vectorized: bool) -> WeightPlan | None:
        """Where the graph only uses noise input k as ``mu_k + sigma_k * eps_k`` (constant
        ``mu``/``sigma``), the backend may take those sampled weights directly
        (:meth:`run_weights`), so the runtime writes them in one pass instead of writing ``eps``
        for the graph to read and transform. Returns a :class:`WeightPlan` for noise of the
        per-sample `shapes`, or None when the backend cannot (the default)."""
        return None

    def run_weights(self, inputs: list[Any], values: list[Any], plan: WeightPlan) -> list[np.ndarray]:
        """Like :meth:`run`, with ``values[k] = mu_k + sigma_k * eps_k`` for the noise inputs
        `plan` gave ``(mu, sigma)`` for, and ``eps_k`` for the others."""
        raise NotImplementedError(f"{type(self).__name__} does not take sampled weights")

    def describe(self) -> str:
        """One line: backend name and where it runs."""
        return f"{self.name} ({self.device})"


def check_device(device: str) -> str:
    """Normalise and check a device string (``"cpu"``, ``"cuda"``, ``"cuda:0"``)."""
    if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
        raise DeviceUnavailableError(f"`device` (={device!r}) must be 'cpu' or 'cuda'")
    if ":" in device and device != "cuda:0":
        raise DeviceUnavailableError(f"`device` (={device!r}): only 'cuda' (device 0) is supported")
    return device.split(":")[0]


def open_backend(
    fmt: str,
    path: Path,
    input_names: list[str],
    noise_names: list[str],
    output_names: list[str],
    device: str,
    **options: Any,
) -> Backend:
    """Open the backend of format `fmt` for the graph at `path`."""
    module_name, cls_name = _BACKENDS[fmt]
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(path, input_names, noise_names, output_names, device=device, **options)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view (CPU torch tensors, numpy arrays) or copy (device tensors) of `value`."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch.Tensor
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        return t.numpy()
    return np.asarray(value)
