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


#: Largest noise (elements, one sample) of the dry call that checks a TorchScript signature.
DRY_RUN_MAX_ELEMENTS = 16 * 1024 * 1024


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
        return self._run_module(self.module, inputs, noise)

    def _as_tensors(self, noise: list[Any]) -> list[Any]:
        torch = self._torch
        return [
            n
            if isinstance(n, torch.Tensor) and n.device == self._device
            else torch.as_tensor(n).to(self._device)
            for n in noise
        ]

    def _run_module(self, module, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        """``module(*inputs, *noise)`` with the outputs checked and as numpy arrays."""
        torch = self._torch
        eps = self._as_tensors(noise)
        with torch.inference_mode():
            out = module(*inputs, *eps)
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

    def check_signature(self, inputs: list, noise: list, outputs: list, vectorized: bool) -> None:
        """TorchScript graphs carry no input shapes: check ``forward``'s schema (argument count,
        and names where the exporter named them after the manifest), then run one dry call with
        one sample and a batch of one built from the manifest's shapes, and compare the outputs'
        count, rank and fixed dims with the manifest's outputs."""
        try:
            args = [a for a in self.module.forward.schema.arguments if a.name != "self"]
        except (AttributeError, RuntimeError) as exc:
            raise ArtifactError(f"{self.path}: the TorchScript module has no readable forward schema: {exc}") from exc
        names = [s.name for s in inputs] + [n.name for n in noise]
        positional = [a for a in args if a.default_value is None]
        if not len(positional) <= len(names) <= len(args):
            raise ArtifactError(
                f"{self.path}: forward takes {len(args)} arguments {[a.name for a in args]}, the manifest feeds "
                f"{len(names)} (inputs + noise: {names}); the manifest does not belong to this graph or was edited"
            )
        arg_names = [a.name for a in args[: len(names)]]
        if arg_names != names and set(arg_names) & set(names):
            # Fed positionally: a renamed or reordered manifest entry would feed the wrong noise.
            wrong = [(m, a) for m, a in zip(names, arg_names) if m != a]
            raise ArtifactError(
                f"{self.path}: the manifest's inputs/noise {[m for m, _ in wrong]} do not match forward's "
                f"arguments {[a for _, a in wrong]} at the same positions (TorchScript is fed positionally); "
                "the manifest does not belong to this graph or was edited"
            )
        for arg in args[: len(names)]:
            if "Tensor" not in str(arg.type):
                raise ArtifactError(f"{self.path}: forward argument {arg.name!r} is a {arg.type}, not a Tensor")
        self._dry_call(inputs, noise, outputs, vectorized, modules_check=True)

    def _dry_call(self, inputs: list, noise: list, outputs: list, vectorized: bool, modules_check: bool = False,
                  batch: int = 1) -> None:
        """One call with one sample and a small batch shaped as the manifest says; the outputs'
        count, rank and fixed dims must match the manifest's."""
        from illia_export.artifact.manifest import SAMPLE_DIM, batch_multiple

        torch = self._torch

        # Dry call: S = 1, `batch` rows, other symbolic dims 1. Skipped for very large noise.
        def concrete(shape, sample_axis):
            dims = []
            for d in shape:
                if d == SAMPLE_DIM:
                    if sample_axis:
                        dims.append(1)
                    continue
                k = batch_multiple(d)
                dims.append(d if isinstance(d, int) else (k * batch if k is not None else 1))
            return dims

        # Noise shapes against the distributions the archive carries (``<parameter>.mu``): cheap,
        # and covers noise too large for the dry call.
        try:
            modules = dict(self.module.named_modules()) if modules_check else {}
        except RuntimeError:  # pragma: no cover - exotic archives
            modules = {}
        for n in noise:
            dist = next((modules[k] for k in (n.parameter, "model." + n.parameter) if k in modules), None)
            mu = getattr(dist, "mu", None) if dist is not None else None
            if isinstance(mu, torch.Tensor):
                want = [d for d in n.shape if d != SAMPLE_DIM]
                if any(isinstance(w, str) for w in want):
                    continue
                if list(mu.shape) != want:
                    raise ArtifactError(
                        f"{self.path}: noise input {n.name!r} has shape {list(n.shape)} in the manifest but its "
                        f"distribution {n.parameter!r} in the graph has shape {list(mu.shape)}"
                    )
        dtypes = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                  "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
        error: Exception | None = None
        # the smallest batch first; models that split their batch into groups (BatchEnsembleLinear)
        # or cannot run one row need a multiple of it
        smallest = batch
        for batch in (smallest, 2 * smallest, 4 * smallest, 12 * smallest):  # noqa: B007 (read by concrete)
            shapes = [concrete(n.shape, vectorized) for n in noise]
            if sum(int(np.prod(s)) for s in shapes) > DRY_RUN_MAX_ELEMENTS:
                return
            feeds = [
                torch.zeros(concrete(s.shape, False), dtype=dtypes.get(s.dtype, torch.float32), device=self._device)
                for s in inputs
            ] + [torch.zeros(sh, dtype=torch.float32, device=self._device) for sh in shapes]
            try:
                with torch.inference_mode():
                    out = self.module(*feeds)
                break
            except Exception as exc:  # the graph rejects the manifest's shapes
                error = exc
        else:
            first = str(error).strip().splitlines()
            raise ArtifactError(
                f"{self.path}: the graph rejects inputs shaped as the manifest says "
                f"({[list(f.shape) for f in feeds]}): {first[-1] if first else type(error).__name__}"
            ) from error
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(outputs):
            raise ArtifactError(
                f"{self.path}: forward returns {len(outs)} tensors, the manifest lists {len(outputs)} outputs"
            )
        for spec, o in zip(outputs, outs):
            if not isinstance(o, torch.Tensor):
                raise ArtifactError(f"{self.path}: forward returned a {type(o).__name__}, expected tensors")
            want = concrete(spec.shape, vectorized)
            if o.dim() != len(want) or any(
                isinstance(d, int) and d != g for d, g in zip([x for x in spec.shape if x != SAMPLE_DIM or vectorized], o.shape)
            ):
                raise ArtifactError(
                    f"{self.path}: output {spec.name!r} has shape {list(spec.shape)} in the manifest but the graph "
                    f"returns {list(o.shape)} for one sample and a batch of one"
                )
