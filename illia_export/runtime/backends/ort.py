"""ONNX Runtime backend: CPU, or CUDA with device-resident inputs and noise (IOBinding)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, DeviceUnavailableError, MissingBackendError, require
from illia_export.runtime.backends import Backend, WeightPlan, to_numpy

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
}


def default_threads() -> int:
    """Intra-op threads: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX graph with onnxruntime.

    Options:
        intra_op_num_threads: CPU threads per op (default: the usable cores).
        allow_spinning: let idle ORT threads spin (ORT's default, True); False helps on a
            machine shared with other busy processes.
        graph_optimization_level: "all" (default), "extended", "basic" or "disabled".
        providers: explicit provider list (advanced; must include CUDAExecutionProvider first
            for device="cuda").
        session_options: an ``onnxruntime.SessionOptions`` used as is.
        split_bank: for the ``bank`` strategy, evaluate the noise-only part of the graph
            (``w = mu + sigma * eps`` and its reshapes) once per bank chunk and run only the
            rest on each call (default True; CPU only; see :mod:`.ort_split`).
        feed_weights: for ``fresh``, feed the graph the sampled weights ``mu + sigma * eps``
            (written by the noise generator in one pass) in place of the noise where the graph
            uses it only that way (default True; CPU only; see :mod:`.ort_affine`).
        hoist_broadcast: where the graph repeats a model input over the samples (the ``local``
            variant), run the layers that see only repeated rows once per batch instead of once
            per sample (default True; CPU only; checked against the original graph on the
            first call; see :mod:`.ort_hoist`).
        grouped_conv: run the sampled convolutions of a vectorized graph (lowered to im2col +
            batched matmul by the exporter) as one grouped ``Conv`` per layer, with a session
            per sample count (default True; CPU only; checked against the graph it replaces on
            the first call for each sample count; see :mod:`.ort_conv`).
    """

    name = "onnxruntime"
    noise_kind = "torch"

    def __init__(
        self, path: Path, input_names, noise_names, output_names, device: str = "cpu", **options: Any
    ):
        super().__init__(path, input_names, noise_names, output_names, device, **options)
        if device == "cpu":
            # On the CPU the noise is fed as numpy arrays anyway: drawing it into numpy buffers
            # (the compiled kernel, same numbers) spares every process the ~1 s torch import.
            self.noise_kind = "numpy"
        ort = require("onnxruntime", "onnx", "Running ONNX artifacts")
        self._ort = ort
        so = options.get("session_options")
        if so is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = int(options.get("intra_op_num_threads") or default_threads())
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            level = str(options.get("graph_optimization_level", "all")).lower()
            levels = {
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            }
            if level not in levels:
                raise ArtifactError(
                    f"`graph_optimization_level` (={level!r}) must be one of {sorted(levels)}"
                )
            so.graph_optimization_level = levels[level]
            if not options.get("allow_spinning", True):
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if device == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise DeviceUnavailableError(
                    "device='cuda' was requested but this onnxruntime has no CUDAExecutionProvider "
                    f"(available: {', '.join(available)}). Install onnxruntime-gpu "
                    "(pip install 'illia-export[gpu]') or use device='cpu'."
                )
            providers = options.get("providers") or [
                ("CUDAExecutionProvider", {"device_id": 0}),
                "CPUExecutionProvider",
            ]
        else:
            providers = options.get("providers") or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            if "CUDA" in str(exc) and device == "cuda":
                raise DeviceUnavailableError(f"onnxruntime could not start its CUDA provider: {exc}") from exc
            raise ArtifactError(f"onnxruntime cannot load {path}: {exc}") from exc
        active = self.session.get_providers()
        if device == "cuda" and (not active or active[0] != "CUDAExecutionProvider"):
            raise DeviceUnavailableError(
                "device='cuda' was requested but onnxruntime did not activate CUDAExecutionProvider "
                f"(active providers: {', '.join(active)}); check the CUDA/cuDNN libraries that "
                "onnxruntime-gpu needs (its log above says which one failed to load). Refusing to run on CPU."
            )
        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        missing = [n for n in self.input_names + self.noise_names if n not in graph_inputs]
        if missing:
            raise ArtifactError(
                f"{path}: the manifest names graph inputs {missing} that the ONNX graph does not have "
                f"(graph inputs: {sorted(graph_inputs)})"
            )
        graph_outputs = [o.name for o in self.session.get_outputs()]
        absent = [n for n in self.output_names if n not in graph_outputs]
        if absent:
            raise ArtifactError(f"{path}: outputs {absent} not in the ONNX graph (has {graph_outputs})")
        self.input_dtypes = {n: _ORT_DTYPES.get(graph_inputs[n].type, np.float32) for n in self.input_names}
        self._binding = self.session.io_binding() if device == "cuda" else None
        self._so = so
        self._providers = providers
        self._split: Any = None  # False: not splittable; else (prefix session, suffix session, frontier)
        self._affine_sites: Any = None  # list of ort_affine.AffineSite once analysed
        # None: not tried yet; False: no rewrite; else [session, verified]
        self._hoisted: Any = None
        self._affine_plans: dict[tuple, WeightPlan | None] = {}  # (shapes, vectorized) -> plan
        self._affine_sessions: dict[tuple, Any] = {}  # rewritten graphs, by the sites they feed
        self._affine_graphs: dict[tuple, bytes] = {}  # their serialized graphs
        self._conv: dict[Any, Any] = {}  # base graph key -> ort_conv.GroupedConvRunner or None

    @property
    def noise_device(self) -> str:
        return self.device

    def graph_inputs(self):
        out = {}
        for i in self.session.get_inputs():
            shape = [d if isinstance(d, int) else None for d in (i.shape or [])]
            dtype = _ORT_DTYPES.get(i.type)
            out[i.name] = (shape, np.dtype(dtype).name if dtype is not None else None)
        return out

    def prepare_inputs(self, inputs: list[np.ndarray]) -> list[Any]:
        if self.device != "cuda":
            return [np.ascontiguousarray(x) for x in inputs]
        return [self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), "cuda", 0) for x in inputs]

    def run(self, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        if self.device != "cuda":
            feeds = dict(zip(self.input_names, inputs))
            for name, eps in zip(self.noise_names, noise):
                feeds[name] = to_numpy(eps)
            return self._run_cpu(feeds, _samples(feeds, self.noise_names))
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, value in zip(self.input_names, inputs):
            binding.bind_ortvalue_input(name, value)
        torch_cuda = False
        for name, eps in zip(self.noise_names, noise):
            torch_cuda |= self._bind_noise(binding, name, eps)
        if torch_cuda:
            # The noise was written on torch's CUDA stream; ORT reads it on its own stream.
            import torch

            torch.cuda.current_stream().synchronize()
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding.copy_outputs_to_cpu()

    def _conv_runner(self, key: Any, graph):
        """The grouped-convolution runner of the base graph `key` (`graph()` gives its bytes),
        or None when that graph has no sampled convolution or the option is off."""
        if key not in self._conv:
            runner = None
            if self.options.get("grouped_conv", True) and self.path.suffix.lower() == ".onnx":
                from illia_export.runtime.backends.ort_conv import GroupedConvRunner

                try:
                    runner = GroupedConvRunner(graph(), self._conv_session)
                except Exception:  # an optimization only: run the base graph
                    runner = None
                runner = runner if runner is not None and runner.active else None
            self._conv[key] = runner
        return self._conv[key]

    def _conv_session(self, graph: bytes):
        """A session for a grouped-convolution rewrite: without onnxruntime's NCHWc layout
        transform (level "all"), which reorders activations for every convolution whose weights
        are not constants, i.e. for all of these; measured 1.4x slower on W2 with it."""
        so, ort = self._so, self._ort
        level = so.graph_optimization_level
        capped = min(level, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, key=lambda v: int(v))
        so.graph_optimization_level = capped
        try:
            return ort.InferenceSession(graph, sess_options=so, providers=self._providers)
        finally:
            so.graph_optimization_level = level

    def _run_cpu(self, feeds: dict[str, Any], num_samples: int = 0) -> list[np.ndarray]:
        """Run on the CPU, through the grouped-convolution rewrite (:mod:`.ort_conv`) or the
        per-batch rewrite (:mod:`.ort_hoist`) when there is one; the first call of either is
        checked against the original graph."""
        conv = self._conv_runner("main", self.path.read_bytes) if num_samples else None
        if conv is not None:
            return conv.run(self.session, self.output_names, feeds, num_samples)
        if self._hoisted is None:
            self._hoisted = False
            if self.options.get("hoist_broadcast", True) and self.path.suffix.lower() == ".onnx":
                from illia_export.runtime.backends.ort_hoist import hoist_sample_broadcast

                try:
                    graph = hoist_sample_broadcast(str(self.path), self.input_names)
                    if graph is not None:
                        session = self._ort.InferenceSession(
                            graph, sess_options=self._so, providers=self._providers
                        )
                        self._hoisted = [session, False]
                except Exception:  # an optimization only: any surprise means "run the original graph"
                    self._hoisted = False
        if not self._hoisted:
            return self.session.run(self.output_names, feeds)
        session, verified = self._hoisted
        if verified:
            return session.run(self.output_names, feeds)
        expected = self.session.run(self.output_names, feeds)
        try:
            got = session.run(self.output_names, feeds)
            same = all(
                g.shape == e.shape and np.allclose(g, e, rtol=1e-4, atol=1e-5, equal_nan=True)
                for g, e in zip(got, expected)
            )
        except Exception:
            same = False
        self._hoisted = [session, True] if same else False
        return expected

    def _split_sessions(self):
        if self._split is None:
            self._split = False
            splittable = self.path.suffix.lower() == ".onnx"  # not ORT-format (.ort) models
            if self.device == "cpu" and splittable and self.options.get("split_bank", True):
                from illia_export.runtime.backends.ort_split import split_noise_prefix

                try:
                    graphs = split_noise_prefix(self.path, self.input_names, self.noise_names)
                except Exception:  # an optimization only: any surprise means "run the full graph"
                    graphs = None
                if graphs is not None:
                    ort = self._ort
                    prefix = ort.InferenceSession(
                        graphs.prefix, sess_options=self._so, providers=self._providers
                    )
                    suffix = ort.InferenceSession(
                        graphs.suffix, sess_options=self._so, providers=self._providers
                    )
                    self._split = (prefix, suffix, graphs.frontier)
                    self._split_graphs = graphs
        return self._split

    def precompute_noise(self, noise: list[Any]) -> Any | None:
        split = self._split_sessions()
        if not split:
            return None
        prefix, _, frontier = split
        names = [i.name for i in prefix.get_inputs()]
        feeds = {n: to_numpy(e) for n, e in zip(self.noise_names, noise) if n in names}
        return dict(zip(frontier, prefix.run(frontier, feeds))), _samples(feeds, names)

    def run_precomputed(self, inputs: list[Any], token: Any) -> list[np.ndarray]:
        _, suffix, _ = self._split
        values, num_samples = token
        feeds = dict(zip(self.input_names, inputs))
        feeds.update(values)
        conv = self._conv_runner("suffix", lambda: self._split_graphs.suffix) if num_samples else None
        if conv is not None:
            return conv.run(suffix, self.output_names, feeds, num_samples)
        return suffix.run(self.output_names, feeds)

    def weight_plan(self, shapes, vectorized):
        if self.device != "cpu" or not self.options.get("feed_weights", True):
            return None
        if self.path.suffix.lower() != ".onnx" or len(shapes) != len(self.noise_names):
            return None
        key = (tuple(tuple(s) for s in shapes), bool(vectorized))
        if key not in self._affine_plans:
            self._affine_plans[key] = self._build_weight_plan(shapes, vectorized)
        return self._affine_plans[key]

    def _build_weight_plan(self, shapes, vectorized):
        from illia_export.runtime.backends import ort_affine

        try:
            import onnx

            if self._affine_sites is None:
                self._affine_sites = ort_affine.find_affine_sites(onnx.load(str(self.path)), self.noise_names)
            sites = {s.noise: s for s in self._affine_sites}
            plan, chosen, feeds = [], [], []
            for name, shape in zip(self.noise_names, shapes):
                site = sites.get(name)
                pair = None
                if site is not None:
                    mu = ort_affine.per_sample(site.mu, tuple(shape), vectorized)
                    sigma = ort_affine.per_sample(site.sigma, tuple(shape), vectorized)
                    if mu is not None and sigma is not None:
                        pair = (mu, sigma)
                        chosen.append(site)
                plan.append(pair)
                feeds.append(site.weight if pair is not None else name)
            if not chosen:
                return None
            key = tuple(site.noise for site in chosen)  # one rewritten session per set of sites
            session = self._affine_sessions.get(key)
            if session is None:
                graph = ort_affine.rewrite(onnx.load(str(self.path)), chosen)
                session = self._affine_sessions[key] = self._ort.InferenceSession(
                    graph, sess_options=self._so, providers=self._providers
                )
                self._affine_graphs[key] = graph
        except Exception:  # an optimization only: any surprise means "feed the noise"
            return None
        return WeightPlan(plan, (feeds, session, key))

    def run_weights(self, inputs, values, plan):
        feeds, session, key = plan.handle
        fd = dict(zip(self.input_names, inputs))
        for name, v in zip(feeds, values):
            fd[name] = to_numpy(v)
        num_samples = _samples(fd, feeds)
        conv = self._conv_runner(("affine", key), lambda: self._affine_graphs[key]) if num_samples else None
        if conv is not None:
            return conv.run(session, self.output_names, fd, num_samples)
        return session.run(self.output_names, fd)

    def _bind_noise(self, binding, name: str, eps: Any) -> bool:
        """Bind one noise array; device-resident torch tensors are bound in place (no copy).

        Returns:
            True when a torch CUDA tensor was bound.
        """
        if hasattr(eps, "data_ptr") and eps.device.type == "cuda":
            if not eps.is_contiguous():
                raise ArtifactError(f"noise {name!r} must be contiguous on the device")
            binding.bind_input(
                name, "cuda", eps.device.index or 0, np.float32, list(eps.shape), eps.data_ptr()
            )
            return True
        binding.bind_ortvalue_input(
            name, self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(to_numpy(eps)), "cuda", 0)
        )
        return False

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.session.get_providers())})"


def _samples(feeds: dict[str, Any], names: list[str]) -> int:
    """The leading dim of the first fed noise (or weight) array: the sample count of a
    vectorized call (0 when there is none; for a per-call graph it means nothing, and no
    grouped-convolution rewrite exists for one)."""
    for name in names:
        value = feeds.get(name)
        if value is not None and getattr(value, "ndim", 0) >= 1:
            return int(value.shape[0])
    return 0


__all__ = ["OnnxRuntimeBackend", "MissingBackendError"]
