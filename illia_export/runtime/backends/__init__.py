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

from illia_export.errors import ArtifactError, DeviceUnavailableError

#: Backend module and class per artifact format.
_BACKENDS = {
    "onnx": ("illia_export.runtime.backends.ort", "OnnxRuntimeBackend"),
    "torchscript": ("illia_export.runtime.backends.torchscript", "TorchScriptBackend"),
    "tflite": ("illia_export.runtime.backends.tflite", "TFLiteBackend"),
    "savedmodel": ("illia_export.runtime.backends.savedmodel", "SavedModelBackend"),
    "pt2": ("illia_export.runtime.backends.pt2", "ExportedProgramBackend"),
    "aoti": ("illia_export.runtime.backends.pt2", "AOTInductorBackend"),
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

    # ------------------------------------------------------------ signature check
    def graph_inputs(self) -> dict[str, tuple[list[Any], str | None]] | None:
        """The graph's own inputs: ``{name: (shape, dtype)}`` with ``None`` or a string for a
        dynamic dim and a numpy dtype name; None when the format does not expose them."""
        return None

    def check_signature(self, inputs: list, noise: list, outputs: list, vectorized: bool) -> None:
        """Check the manifest's inputs and noise against the graph's own signature (names,
        rank, fixed dims, dtype) and refuse graph inputs the manifest does not feed.

        Raises:
            ArtifactError: naming the first disagreement.
        """
        graph = self.graph_inputs()
        if graph is None:
            return
        check_against_graph(self.path, graph, inputs, noise)


def check_against_graph(path: Path, graph: dict[str, tuple[list[Any], str | None]], inputs: list, noise: list) -> None:
    """Compare manifest specs (``TensorSpec``/``NoiseSpec``) with ``{name: (shape, dtype)}``."""
    specs = [(s, "input") for s in inputs] + [(n, "noise input") for n in noise]
    fed = {s.name for s, _ in specs}
    unfed = sorted(set(graph) - fed)
    if unfed:
        raise ArtifactError(
            f"{path}: the graph has inputs {unfed} that the manifest does not list (manifest inputs and noise: "
            f"{sorted(fed)}); the manifest does not belong to this graph or was edited"
        )
    for spec, kind in specs:
        if spec.name not in graph:
            raise ArtifactError(
                f"{path}: the manifest's {kind} {spec.name!r} is not an input of the graph (graph inputs: {sorted(graph)})"
            )
        shape, dtype = graph[spec.name]
        want_dtype = getattr(spec, "dtype", "float32")
        if dtype is not None and np.dtype(dtype) != np.dtype(want_dtype):
            raise ArtifactError(
                f"{path}: {kind} {spec.name!r} is {want_dtype} in the manifest but {np.dtype(dtype).name} in the graph"
            )
        if shape is None:
            continue
        if len(shape) != len(spec.shape):
            raise ArtifactError(
                f"{path}: {kind} {spec.name!r} has shape {list(spec.shape)} in the manifest but rank {len(shape)} "
                f"{[d if d is not None else '?' for d in shape]} in the graph"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and isinstance(got, int) and got >= 0 and want != got:
                raise ArtifactError(
                    f"{path}: {kind} {spec.name!r} has shape {list(spec.shape)} in the manifest but "
                    f"{[d if d is not None else '?' for d in shape]} in the graph (axis {axis}: {want} != {got})"
                )


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
