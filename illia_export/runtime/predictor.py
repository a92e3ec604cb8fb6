"""`load` and `Predictor`: Monte Carlo inference from any illia-export artifact."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact.manifest import (
    BATCH_DIM,
    FROZEN_KEY,
    SAMPLE_DIM,
    Manifest,
    NoiseSpec,
    TensorSpec,
    batch_multiple,
    detect_format,
    is_frozen,
    read_manifest,
)
from illia_export.errors import (
    ArtifactError,
    IlliaExportError,
    InputError,
    ManifestError,
    ResourceError,
    ShapeError,
    StrategyError,
)
from illia_export.runtime.backends import Backend, check_device, open_backend
from illia_export.runtime.noise import GENERATORS, check_generator
from illia_export.runtime.prediction import TASKS, Prediction
from illia_export.runtime.sampling import (
    ACTIVATION_FACTOR,
    DEFAULT_CHUNK_BYTES,
    STRATEGIES,
    NoiseMaker,
    available_memory,
    default_chunk,
    format_bytes,
    random_seed,
)

#: Largest pre-activation noise (bytes) an explicitly seeded ``local`` call keeps for reuse.
LOCAL_CACHE_BYTES = 256 * 1024 * 1024
#: Seeds are 64-bit: ``[0, 2**64)`` (illia-noise-v1 mixes the seed as an unsigned 64-bit word).
SEED_LIMIT = 2**64
#: Memory of a result per byte of raw samples: the samples and the float64 summaries built on
#: them (per-sample softmax for classifiers).
RESULT_COPIES = 3

InputLike = Any  # an array, a sequence of arrays (manifest order) or {name: array}


def load(
    path: str | os.PathLike, device: str = "cpu", noise_impl: str = "auto", **backend_options: Any
) -> Predictor:
    """Open an artifact for Monte Carlo inference.

    Args:
        path: an ``.onnx`` file, a TorchScript archive (``.pt``), a ``.tflite`` file or a
            SavedModel folder, exported by illia-export (it must carry a manifest).
        device: ``"cpu"`` or ``"cuda"``. CUDA never falls back to the CPU silently: when the
            backend cannot run there, :class:`DeviceUnavailableError` is raised.
        noise_impl: ``"auto"`` (torch generator when torch is importable), ``"torch"`` or
            ``"numpy"``; all give the same noise to ~1e-6.
        **backend_options: passed to the backend (e.g. ``intra_op_num_threads`` for ONNX Runtime,
            ``num_threads`` for TFLite/TorchScript). Two options are the predictor's own:
            ``threads``: CPU threads of the backend (ONNX Runtime intra-op threads, TorchScript
            and TFLite ``num_threads``); default: the cores this process may use
            (``len(os.sched_getaffinity(0))``, which Ray and containers restrict; ``os.cpu_count()``
            where affinity is unknown). ``warmup``: run :meth:`Predictor.warmup` once after
            loading (default False). ``trust_native_code`` / ``expected_digest`` /
            ``allow_unverified``: the caller's trust (:mod:`illia_export.artifact.trust`).

    Returns:
        A :class:`Predictor`.

    Example:
        >>> from illia_export.runtime import load
        >>> pred = load("mlp.onnx").predict(x, num_samples=64, seed=0)
        >>> pred.probabilities.shape
        (64, 10)
    """
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact not found: {p}")
    device = check_device(device)
    manifest = read_manifest(p)
    fmt = detect_format(p)
    if manifest.format != fmt:
        raise ManifestError(
            f"{p} looks like a {fmt} artifact but its manifest says format={manifest.format!r}"
        )
    _refuse_frozen(p, manifest)
    return Predictor(p, manifest, device=device, noise_impl=noise_impl, **backend_options)


def _refuse_frozen(path: Path, manifest: Manifest) -> None:
    """``load`` refuses frozen-bank artifacts: they take no noise and already return summaries."""
    if is_frozen(manifest):
        info = manifest.extra[FROZEN_KEY]
        samples = info.get("samples") if isinstance(info, dict) else None
        raise ArtifactError(
            f"{path.name} is a frozen-bank artifact (S={samples} noise samples baked in, summary outputs "
            f"{[t.name for t in manifest.outputs]}); it has no noise input for runtime.load to drive. Run it with "
            "onnxruntime directly (its only inputs are the model's), or load the original artifact"
        )


class Predictor:
    """Runs Monte Carlo predictions from one artifact with seeded, reproducible noise.

    Build it with :func:`load`. It keeps the backend session(s), the noise buffers and the
    noise bank between calls.

    Thread safety: one predictor may be shared by threads. :meth:`predict` and
    :meth:`clear_bank` hold a per-predictor lock (:meth:`noise` uses buffers of its own; the
    noise buffers, the bank and the
    TorchScript/ONNX sessions are shared state), so concurrent calls run one after another and
    each returns exactly what it would return alone. The lock costs ~0.4 us per call
    uncontended (measured on the 2-core dev VM: RLock acquire + release 376 ns, i.e. 0.05% of
    the cheapest call we time, a 6-8-3 MLP ``predict`` with S=32, B=64 on ONNX at ~750 us
    median; with and without the lock were indistinguishable within the runs' +-35 us noise).
    The backends already use every core for one call, so serializing loses no throughput; for
    parallel calls on separate cores, load one predictor per thread.

    Attributes:
        path: the artifact.
        manifest: its :class:`~illia_export.artifact.manifest.Manifest`.
        device: ``"cpu"`` or ``"cuda"``.
        backend: the :class:`~illia_export.runtime.backends.Backend` of the main graph.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        device: str = "cpu",
        noise_impl: str = "auto",
        **backend_options: Any,
    ) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.device = device
        # What a worker needs to re-open this predictor (see __getstate__).
        self._load_options = dict(backend_options)
        warmup = bool(backend_options.pop("warmup", False))
        #: CPU threads the backend was opened with (``threads=`` option of :func:`load`).
        self.threads = _resolve_threads(manifest.format, backend_options)
        budget = backend_options.pop("memory_budget", None)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1):
            raise InputError(f"`memory_budget` (={budget!r}) must be a positive number of bytes")
        #: Bytes one vectorized chunk may use (noise, sampled weights, activations, outputs);
        #: the default chunk size is chosen under it (``memory_budget=`` option of :func:`load`).
        self.memory_budget = int(budget) if budget is not None else DEFAULT_CHUNK_BYTES
        self._backend_options = backend_options
        self._noise_impl = noise_impl
        from illia_export.artifact.trust import TrustPolicy, check_trust

        # The graph, weights and sampling fields must be the ones the exporter wrote, and formats
        # that run code from the file need the caller's trust (artifact/trust.py), before any backend opens.
        self.trust = check_trust(self.path, manifest, TrustPolicy.from_options(backend_options))

        #: The noise generator the manifest names (``noise_generator``); ``predict(generator=...)``
        #: overrides it per call.
        self.generator = check_generator(manifest.noise_generator)
        self.backend = self._open(self.path, manifest.noise)
        self._local_backend: Backend | None = None
        self._makers: dict[int, NoiseMaker] = {}
        self._bank: tuple[tuple, list[Any]] | None = None
        self._bank_tokens: dict[tuple[int, int, int], Any] = {}
        self._local_cache: tuple[tuple, list[Any]] | None = None
        self._bank_seed: int | None = None
        self._lock = threading.RLock()
        if warmup:
            self.warmup()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """What a worker needs to re-open the predictor: the artifact path, device, noise
        implementation and load options. Sessions, noise buffers, the bank and the local-noise
        cache are not pickled; they are re-opened / rebuilt on the other side (lazily for
        the caches)."""
        if self._load_options.get("session_options") is not None:
            raise InputError(
                "a Predictor loaded with `session_options=` cannot be pickled (an onnxruntime "
                "SessionOptions is not picklable); pass the equivalent load options instead "
                "(threads, allow_spinning, graph_optimization_level)"
            )
        return {
            "path": str(self.path),
            "device": self.device,
            "noise_impl": self._noise_impl,
            "options": dict(self._load_options),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Re-open the artifact as :func:`load` does (manifest, digest, backend signature); the
        file must be reachable at the same path on the worker."""
        path = Path(state["path"])
        if not path.exists():
            raise ArtifactError(
                f"cannot unpickle the Predictor: its artifact {path} is not reachable here (workers "
                "need the artifact at the same path, e.g. on a shared file system)"
            )
        manifest = read_manifest(path)
        self.__init__(path, manifest, device=state["device"], noise_impl=state["noise_impl"], **state["options"])

    def warmup(self) -> None:
        """One tiny call (batch of 1, S = 1, seed 0, ``fresh``) so that the first real call does
        not pay for session initialization, graph rewrites and noise-buffer allocation. Inputs
        come from the manifest's shapes (symbolic dims set to 1); integer inputs are the low end
        of their ``range`` (0 without one). Leaves no cache behind (no bank is drawn)."""
        arrays = []
        for spec in self.manifest.inputs:
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            try:
                dtype = np.dtype(spec.dtype)
            except TypeError:  # bfloat16 has no numpy dtype
                dtype = np.dtype(np.float32)
            fill = (spec.range[0] if spec.range is not None else 0) if dtype.kind in "iu" else 0
            arrays.append(np.full(shape, fill, dtype=dtype))
        self.predict(arrays, num_samples=1, seed=0, strategy="fresh")

    # ----------------------------------------------------------------- plumbing
    def _open(self, path: Path, noise: list[NoiseSpec], vectorized: bool | None = None) -> Backend:
        options = dict(self._backend_options)
        if self.manifest.format == "tflite":
            options["verified_digest"] = path == self.path and self.manifest.digest is not None
        if self.manifest.format in ("pt2", "aoti"):
            options["trusted"] = self.trust.vouched
        backend = open_backend(
            self.manifest.format,
            path,
            [t.name for t in self.manifest.inputs],
            [n.name for n in noise],
            [t.name for t in self.manifest.outputs],
            self.device,
            **options,
        )
        # The manifest is data from a file: check it against the graph's own signature before
        # anything is allocated from its shapes.
        backend.check_signature(
            self.manifest.inputs,
            noise,
            self.manifest.outputs,
            self.manifest.vectorized if vectorized is None else vectorized,
        )
        return backend

    def _maker(self, backend: Backend) -> NoiseMaker:
        maker = self._makers.get(id(backend))
        if maker is None:
            maker = self._makers[id(backend)] = NoiseMaker(
                backend.noise_kind, backend.noise_device, self._noise_impl
            )
        return maker

    def local_backend(self) -> Backend:
        """The backend of the local-reparameterization variant (opened on first use)."""
        local = self.manifest.local
        if local is None:
            why = self.manifest.local_unavailable
            raise StrategyError(
                f"strategy='local' needs an artifact with a local-reparameterization variant, and {self.path.name} "
                + (f"has none: {why}. " if why else "has none. ")
                + "Local reparameterization (noise on pre-activations, mean x·mu, variance x²·sigma²) is exact only "
                "for Linear layers: every random draw must be a Linear layer's weight noise and each Linear applied "
                "once to a 2-D input; use strategy='fresh' or 'bank'."
            )
        if self._local_backend is None:
            file = self.path.parent / local.file
            if not file.exists():
                raise ArtifactError(
                    f"the manifest's local variant {local.file!r} is missing (looked for {file})"
                )
            if file.resolve().parent != self.path.resolve().parent:
                raise ArtifactError(f"the manifest's local variant {local.file!r} is not beside the artifact")
            if self.manifest.format == "tflite":
                raise ArtifactError("a TFLite artifact has no local-reparameterization variant")
            from illia_export.artifact.digest import verify_local_digest

            verify_local_digest(file, self.manifest)
            self._local_backend = self._open(file, local.noise, vectorized=True)
        return self._local_backend

    # -------------------------------------------------------------------- inputs
    def prepare_inputs(self, x: InputLike, allow_nonfinite: bool = False) -> tuple[list[np.ndarray], int]:
        """Check `x` against the manifest's inputs and return them in manifest order.

        Floating inputs are cast to the manifest's floating dtype (e.g. float64 -> float32) and
        integer inputs to its integer dtype; any other dtype mismatch is a :class:`ShapeError`.
        Float inputs must be finite (NaN/inf raise :class:`InputError` unless
        `allow_nonfinite`); integer inputs must lie in the manifest's ``range`` (token ids:
        ``[0, vocabulary)``), or be non-negative when it records none.

        Returns:
            ``(arrays, batch_size)``.
        """
        specs = self.manifest.inputs
        if isinstance(x, Mapping):
            names = [s.name for s in specs]
            unknown = sorted(set(x) - set(names))
            missing = [n for n in names if n not in x]
            if unknown or missing:
                raise ShapeError(
                    f"inputs {sorted(x)} do not match the model's inputs {names} (missing {missing}, unknown {unknown})"
                )
            values = [x[n] for n in names]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(specs):
                raise ShapeError(
                    f"the model takes {len(specs)} inputs {[s.name for s in specs]}, got {len(x)} arrays"
                )
            values = list(x)
        else:
            if len(specs) != 1:
                raise ShapeError(
                    f"the model takes {len(specs)} inputs {[s.name for s in specs]}; pass a list or a dict"
                )
            values = [x]
        bound: dict[str, int] = {}
        arrays = [self._check_input(spec, value, bound) for spec, value in zip(specs, values)]
        for spec, arr in zip(specs, arrays):
            self._check_values(spec, arr, allow_nonfinite)
        batch = bound.get(BATCH_DIM, arrays[0].shape[0] if arrays and arrays[0].ndim else 1)
        return arrays, int(batch)

    @staticmethod
    def _check_values(spec: TensorSpec, arr: np.ndarray, allow_nonfinite: bool) -> None:
        """Refuse NaN/inf floats (unless allowed) and integers outside the input's range."""
        if arr.dtype.kind == "f" and not allow_nonfinite:
            bad = ~np.isfinite(arr)
            if bad.any():
                first = np.unravel_index(int(np.argmax(bad)), arr.shape)
                raise InputError(
                    f"input {spec.name!r} holds {int(bad.sum())} non-finite values (NaN or inf), the first at "
                    f"index {list(map(int, first))}; the model's outputs for them would be meaningless. Clean the "
                    "data, or pass allow_nonfinite=True (CLI: --allow-nonfinite) to run anyway"
                )
        elif arr.dtype.kind in "iu" and arr.size:
            low, high = (spec.range if spec.range is not None else (0, None))
            lo_val, hi_val = int(arr.min()), int(arr.max())
            if lo_val < low or (high is not None and hi_val >= high):
                bad_val = lo_val if lo_val < low else hi_val
                where = np.argwhere(arr == bad_val)[0]
                allowed = f"[{low}, {high})" if high is not None else f">= {low}"
                what = "token ids" if spec.range is not None and low == 0 else "values"
                raise InputError(
                    f"input {spec.name!r}: value {bad_val} at index {list(map(int, where))} is outside the "
                    f"model's {what} {allowed}"
                    + ("" if spec.range is not None else " (the manifest records no range; negative ids are never valid)")
                )

    @staticmethod
    def _check_input(spec: TensorSpec, value: Any, bound: dict[str, int]) -> np.ndarray:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ShapeError(f"input {spec.name!r} is not an array: {exc}") from exc
        if arr.dtype.kind not in "fiub":
            raise ShapeError(f"input {spec.name!r} must be a numeric array ({spec.dtype}), got dtype {arr.dtype}")
        want = np.dtype(spec.dtype)
        expected = f"[{', '.join(str(d) for d in spec.shape)}] {spec.dtype}"
        if arr.dtype != want:
            same_kind = (arr.dtype.kind == "f" and want.kind == "f") or (
                arr.dtype.kind in "iu" and want.kind in "iu"
            )
            if not same_kind:
                raise ShapeError(f"input {spec.name!r} must be {expected}, got dtype {arr.dtype}")
            if (
                want.kind in "iu"
                and arr.size
                and (arr.min() < np.iinfo(want).min or arr.max() > np.iinfo(want).max)
            ):
                raise ShapeError(f"input {spec.name!r}: values do not fit {spec.dtype}")
            arr = arr.astype(want)
        if arr.ndim != len(spec.shape):
            raise ShapeError(
                f"input {spec.name!r} must have shape {expected}, got {list(arr.shape)} (rank {arr.ndim})"
            )
        for axis, (dim, got) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(dim, int):
                if got != dim:
                    raise ShapeError(
                        f"input {spec.name!r} must have shape {expected}, got {list(arr.shape)} (axis {axis})"
                    )
            elif dim in bound and bound[dim] != got:
                raise ShapeError(
                    f"input {spec.name!r} must have shape {expected}: dim {dim!r} is {bound[dim]} in another input, got {got}"
                )
            else:
                bound[dim] = got
        if arr.shape[0:1] == (0,):
            raise ShapeError(f"input {spec.name!r} is empty (batch of 0)")
        return np.ascontiguousarray(arr)

    # --------------------------------------------------------------------- noise
    @staticmethod
    def _noise_shapes(noise: list[NoiseSpec], batch: int) -> list[tuple[int, ...]]:
        shapes = []
        for n in noise:
            dims = []
            for d in n.shape:
                if d == SAMPLE_DIM:
                    continue
                per_row = batch_multiple(d)
                if per_row is not None:
                    dims.append(per_row * batch)
                elif isinstance(d, int):
                    dims.append(d)
                else:
                    raise ManifestError(
                        f"noise {n.name!r} has a symbolic dim {d!r}; only 'samples', 'batch' and "
                        "'<k>*batch' are allowed"
                    )
            shapes.append(tuple(dims))
        return shapes

    def noise(
        self,
        num_samples: int,
        seed: int,
        strategy: str = "fresh",
        batch_size: int = 1,
        generator: str | None = None,
        row_ids: Any = None,
    ) -> dict[str, np.ndarray]:
        """The exact noise a prediction with these arguments feeds the graph (numpy copies).

        Args:
            num_samples: S.
            seed: the seed.
            strategy: ``"fresh"``/``"bank"`` (same numbers: the main graph's noise) or
                ``"local"`` (the local variant's pre-activation noise, which depends on the batch).
            batch_size: B (per-example noise and ``"local"``); ignored when `row_ids` is given.
            generator: the noise generator (default: the manifest's ``noise_generator``).
            row_ids: the rows' ids, as in :meth:`predict` (per-example noise keyed per row).

        Returns:
            ``{noise input name: [S, *shape]}``.
        """
        seed = _check_seed(seed, allow_none=False)
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise InputError(f"`num_samples` (={num_samples!r}) must be a positive integer")
        specs = self._local_specs() if strategy == "local" else self.manifest.noise
        words = None
        if row_ids is not None:
            words = _check_row_ids(row_ids, len(np.asarray(row_ids)))
            batch_size = len(words)
        shapes = self._noise_shapes(specs, batch_size)
        need = 4 * int(num_samples) * NoiseMaker.elements(shapes)
        _check_fits(need, f"the noise of {num_samples} samples")
        maker = NoiseMaker("numpy", "cpu", self._noise_impl)
        gen = self._generator(generator)
        arrays = maker.draw(seed, shapes, 0, num_samples, generator=gen)
        if words is not None:
            arrays = self._row_noise(specs, self.row_keyed_streams(strategy), words, seed, 0, num_samples, gen, arrays)
        return {n.name: np.array(a) for n, a in zip(specs, arrays)}

    def _generator(self, generator: str | None) -> str:
        if generator is None:
            return self.generator
        if generator not in GENERATORS:
            raise ValueError(f"`generator` (={generator!r}) must be one of {GENERATORS}")
        return generator

    def _local_specs(self) -> list[NoiseSpec]:
        if self.manifest.local is None:
            self.local_backend()  # raises the explanation
        return self.manifest.local.noise  # type: ignore[union-attr]

    def clear_bank(self) -> None:
        """Drop the cached noise bank (the next ``strategy='bank'`` call draws a new one)."""
        with self._lock:
            self._bank = None
            self._bank_tokens = {}
            self._bank_seed = None

    def _bank_noise(
        self, backend: Backend, seed: int, shapes: list[tuple[int, ...]], num_samples: int, generator: str
    ) -> list[Any]:
        key = (seed, num_samples, tuple(shapes), generator)
        if self._bank is None or self._bank[0] != key:
            self._bank = None  # free the old bank before drawing the new one
            self._bank_tokens = {}
            self._bank = (key, self._maker(backend).draw(seed, shapes, 0, num_samples, generator=generator))
        return self._bank[1]

    def _local_noise(
        self, backend: Backend, seed: int, shapes: list[tuple[int, ...]], num_samples: int, generator: str
    ) -> list[Any] | None:
        """Pre-activation noise of an explicitly seeded ``local`` call, kept for the next call
        with the same (seed, S, shapes) — the same numbers a fresh draw would give. None when
        it would exceed LOCAL_CACHE_BYTES (then each call draws it)."""
        if 4 * num_samples * NoiseMaker.elements(shapes) > LOCAL_CACHE_BYTES:
            return None
        key = (seed, num_samples, tuple(shapes), generator)
        if self._local_cache is None or self._local_cache[0] != key:
            self._local_cache = None
            self._local_cache = (
                key,
                self._maker(backend).draw(seed, shapes, 0, num_samples, generator=generator),
            )
        return self._local_cache[1]

    def _bank_token(self, backend: Backend, bank: list[Any], start: int, count: int) -> Any | None:
        """The backend's precomputed noise-only values for one bank chunk (cached)."""
        key = (id(backend), start, count)
        if key not in self._bank_tokens:
            chunk = [b[start : start + count] for b in bank]
            self._bank_tokens[key] = backend.precompute_noise(chunk)
        return self._bank_tokens[key]

    # ------------------------------------------------------------------- predict
    def predict(
        self,
        x: InputLike,
        num_samples: int = 32,
        seed: int | None = None,
        strategy: str = "fresh",
        chunk_size: int | None = None,
        progress: bool = False,
        task: str | None = None,
        allow_nonfinite: bool = False,
        generator: str | None = None,
        row_ids: Any = None,
    ) -> Prediction:
        """Monte Carlo predictions for a batch.

        Args:
            x: the model input ``[B, ...]`` (or a list in manifest order / a dict by name for
                several inputs), shaped and typed as in ``manifest.inputs``.
            num_samples: S, the number of Monte Carlo samples.
            seed: seed of the noise (a non-negative int). ``None`` draws one from the OS: per
                call for ``fresh``/``local``, once per predictor for ``bank``. The seed used is
                in ``Prediction.seed``.
            strategy: ``"fresh"``: samples ``[0, S)`` of the seed's noise streams, generated on
                every call (exact weight-space MC). ``"bank"``: the same noise, drawn once per
                (seed, S) and kept for later calls (a fixed ensemble of S weight samples; same
                numbers as ``fresh`` with that seed). ``"local"``: the local-reparameterization
                variant (Linear-only artifacts), pre-activation noise ``[S, B, out]`` per layer;
                with an explicit seed that noise is kept for the next call with the same seed,
                S and B (same numbers; up to 256 MiB), with ``seed=None`` it is drawn per call.
            chunk_size: samples per graph call for vectorized graphs (bounds memory; default:
                noise of one chunk under 512 MiB). Per-call graphs always run one sample per
                call; chunk_size then bounds how many samples of noise are drawn at once.
                Results do not depend on it.
            progress: show a tqdm progress bar (stderr).
            task: override the manifest's task for the summaries.
            allow_nonfinite: accept NaN/inf in float inputs (refused by default: the outputs
                for them are meaningless, e.g. class 0 for an all-NaN row).
            generator: the noise generator (``"illia-noise-v1"`` or ``"illia-noise-v2"``);
                default: the one the manifest names, so an artifact's seeds always reproduce.
                Recorded in ``Prediction.noise_generator``.
            row_ids: optional stable id of each row (``B`` integers, strings or bytes). Every
                per-example noise input (MC-dropout masks, Flipout signs, ``local``'s
                pre-activation noise) is then drawn per row, keyed by (seed, stream, row id),
                so a row's answer depends only on (seed, S, its id, its inputs): not on the
                batch size, its position or its neighbours (partition invariance, for Ray
                Data and request batching). Weight noise never depends on the batch. Equal
                ids get equal noise. Without ids, per-example noise is laid out over the batch
                (the default, and what artifacts exported before this option saw).

        Returns:
            A :class:`Prediction` with samples ``[S, B, ...]`` per output.

        Raises:
            InputError: non-finite inputs, token ids outside the vocabulary, a seed outside
                ``[0, 2**64)``, a bad count. ShapeError: wrong shapes or dtypes.
            ResourceError: the result (``S x B x outputs``) or one sample's working set does
                not fit in the available memory (raised before anything large is allocated).
        """
        if strategy not in STRATEGIES:
            raise StrategyError(f"`strategy` (={strategy!r}) must be one of {STRATEGIES}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise InputError(f"`num_samples` (={num_samples!r}) must be a positive integer")
        num_samples = int(num_samples)
        seed = _check_seed(seed, allow_none=True)
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
        ):
            raise InputError(f"`chunk_size` (={chunk_size!r}) must be None or a positive integer")
        task = task or self.manifest.task
        if task not in TASKS:
            raise InputError(f"`task` (={task!r}) must be one of {TASKS}")
        generator = self._generator(generator)
        with self._lock:
            return self._predict(
                x, num_samples, seed, strategy, chunk_size, progress, task, allow_nonfinite, generator, row_ids
            )

    def row_keyed_streams(self, strategy: str = "fresh") -> list[int]:
        """Positions of the noise inputs that ``row_ids`` keys per row: those with a ``batch`` dim.

        Raises:
            StrategyError: a noise input whose per-example layout is unknown (a ``k*batch`` dim),
                so its rows cannot be keyed.
        """
        specs = self._local_specs() if strategy == "local" else self.manifest.noise
        keyed = []
        for k, spec in enumerate(specs):
            dims = [d for d in spec.shape if d != SAMPLE_DIM]
            if any(d != BATCH_DIM and batch_multiple(d) is not None for d in dims):
                raise StrategyError(
                    f"noise input {spec.name!r} has per-example dims {dims} that fold the batch with other "
                    "axes; its rows cannot be keyed, so row_ids (partition-invariant noise) is unavailable "
                    "for this artifact"
                )
            if dims.count(BATCH_DIM) > 1:
                raise StrategyError(f"noise input {spec.name!r} has {dims.count(BATCH_DIM)} batch dims; row_ids needs one")
            if BATCH_DIM in dims:
                keyed.append(k)
        return keyed

    def _row_noise(
        self, specs: list[NoiseSpec], keyed: list[int], words: np.ndarray, seed: int, start: int, count: int,
        generator: str, noise: list[Any],
    ) -> list[Any]:
        """`noise` with the row-keyed streams replaced by per-row draws (numpy)."""
        from illia_export.runtime.noise import standard_normal_rows

        out = list(noise)
        use_kernel = self._noise_impl == "auto"
        for k in keyed:
            dims = [d for d in specs[k].shape if d != SAMPLE_DIM]
            pos = dims.index(BATCH_DIM)
            per_row = [int(d) for i, d in enumerate(dims) if i != pos]
            arr = standard_normal_rows(generator, seed, k, words, per_row, start, count, use_kernel=use_kernel)
            if pos:
                arr = np.ascontiguousarray(np.moveaxis(arr, 1, 1 + pos))
            if not isinstance(noise[k], np.ndarray):  # the backend takes torch tensors
                import torch

                arr = torch.from_numpy(arr).to(noise[k].device)
            out[k] = arr
        return out

    def _predict(
        self, x, num_samples, seed, strategy, chunk_size, progress, task, allow_nonfinite, generator, row_ids=None
    ) -> Prediction:
        if strategy == "local":
            backend = self.local_backend()
            specs = self.manifest.local.noise  # type: ignore[union-attr]
            vectorized = True
        else:
            backend = self.backend
            specs = self.manifest.noise
            vectorized = self.manifest.vectorized
        arrays, batch = self.prepare_inputs(x, allow_nonfinite=allow_nonfinite)
        keyed: list[int] = []
        words = None
        if row_ids is not None:
            words = _check_row_ids(row_ids, batch)
            keyed = self.row_keyed_streams(strategy)
        shapes = self._noise_shapes(specs, batch)
        noise_elements = NoiseMaker.elements(shapes)
        out_bytes = self._output_bytes_per_sample(arrays, batch)
        act_bytes = ACTIVATION_FACTOR * (sum(a.nbytes for a in arrays) + out_bytes)
        # Everything large is sized here, before it is allocated.
        # The raw samples, plus the float64 per-sample probabilities/summaries built on them.
        _check_fits(
            RESULT_COPIES * num_samples * out_bytes,
            f"the result ({num_samples} samples x batch {batch}) and its summaries",
            hint="lower the number of samples or split the batch",
        )
        if strategy == "bank" or (strategy == "local" and seed is not None):
            _check_fits(
                4 * num_samples * noise_elements,
                f"the noise bank ({num_samples} samples)",
                hint="lower the number of samples or use strategy='fresh'",
            )
        per_sample = 4 * 3 * noise_elements + (act_bytes if vectorized else 0)
        _check_fits(per_sample, "one Monte Carlo sample (noise, sampled weights and activations)")
        inputs = backend.prepare_inputs(arrays)
        maker = self._maker(backend)

        explicit_seed = seed is not None
        if seed is None:
            if strategy == "bank":
                if self._bank_seed is None:
                    self._bank_seed = random_seed()
                seed = self._bank_seed
            else:
                seed = random_seed()
        seed = int(seed)
        chunk = (
            int(chunk_size)
            if chunk_size
            else default_chunk(
                num_samples,
                noise_elements,
                self.memory_budget,
                other_bytes_per_sample=act_bytes if vectorized else 0,
            )
        )
        chunk = min(chunk, num_samples)
        if vectorized:
            _check_fits(chunk * per_sample, f"a chunk of {chunk} samples", hint="lower the chunk size")
        # Row-keyed streams are drawn per row below: the stream-wide draw skips them (no elements).
        drawn = [(0,) if k in keyed else s for k, s in enumerate(shapes)]
        bank = self._bank_noise(backend, seed, drawn, num_samples, generator) if strategy == "bank" else None
        if strategy == "local" and explicit_seed and not keyed:
            bank = self._local_noise(backend, seed, shapes, num_samples, generator)
        # fresh: where the graph only uses eps as mu + sigma * eps, write those weights directly
        plan = backend.weight_plan(shapes, vectorized) if strategy == "fresh" else None
        if plan is not None and any(plan.pairs[k] is not None for k in keyed):
            plan = None  # a row-keyed stream is not a weight: feed eps

        results: list[np.ndarray] | None = None
        bar = _progress_bar(num_samples, progress)
        try:
            for start in range(0, num_samples, chunk):
                count = min(chunk, num_samples - start)
                token = None
                if bank is not None:
                    noise = [b[start : start + count] for b in bank]
                    if vectorized and strategy == "bank" and not keyed:
                        token = self._bank_token(backend, bank, start, count)
                else:
                    noise = maker.draw(
                        seed,
                        drawn,
                        start,
                        count,
                        reuse=True,
                        generator=generator,
                        affine=plan.pairs if plan is not None else None,
                    )
                if keyed:
                    noise = self._row_noise(specs, keyed, words, seed, start, count, generator, noise)
                if vectorized:
                    if plan is not None:
                        outs = backend.run_weights(inputs, noise, plan)
                    elif token is None:
                        outs = backend.run(inputs, noise)
                    else:
                        outs = backend.run_precomputed(inputs, token)
                    results = self._store(results, outs, start, count, num_samples, vectorized=True)
                    if bar is not None:
                        bar.update(count)
                else:
                    for j in range(count):
                        one = [n[j] for n in noise]
                        outs = (
                            backend.run(inputs, one)
                            if plan is None
                            else backend.run_weights(inputs, one, plan)
                        )
                        results = self._store(results, outs, start + j, 1, num_samples, vectorized=False)
                        if bar is not None:
                            bar.update(1)
        except IlliaExportError:
            raise
        except MemoryError as exc:
            raise ResourceError(
                f"out of memory running chunks of {chunk} samples x batch {batch}; pass a smaller chunk_size "
                "or memory_budget"
            ) from exc
        except Exception as exc:  # the backend's own error types (onnxruntime, torch, TF)
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            raise ArtifactError(
                f"{backend.name} failed running {self.path.name}: {lines[-1] if lines else type(exc).__name__}"
                + (" (integer inputs: are the ids inside the vocabulary?)" if any(a.dtype.kind in "iu" for a in arrays) else "")
            ) from exc
        finally:
            if bar is not None:
                bar.close()
        assert results is not None
        names = [t.name for t in self.manifest.outputs]
        return Prediction(
            dict(zip(names, results)), task=task, seed=seed, strategy=strategy, likelihood=self.manifest.likelihood,
            noise_generator=generator,
        )

    def _output_bytes_per_sample(self, arrays: list[np.ndarray], batch: int) -> int:
        """Bytes of one sample's outputs, from the manifest's output specs (symbolic dims bound
        from the inputs; unknown ones counted as 1)."""
        bound: dict[str, int] = {}
        for spec, arr in zip(self.manifest.inputs, arrays):
            for dim, got in zip(spec.shape, arr.shape):
                if isinstance(dim, str):
                    bound[dim] = int(got)
        total = 0
        for spec in self.manifest.outputs:
            n = 1
            for dim in spec.shape:
                if dim == SAMPLE_DIM:
                    continue
                if isinstance(dim, int):
                    n *= dim
                else:
                    k = batch_multiple(dim)
                    n *= k * batch if k is not None else bound.get(dim, 1)
            total += n * _itemsize(spec.dtype)
        return total

    def _store(
        self,
        results: list[np.ndarray] | None,
        outs: Sequence[np.ndarray],
        start: int,
        count: int,
        total: int,
        vectorized: bool,
    ) -> list[np.ndarray]:
        if len(outs) != len(self.manifest.outputs):
            raise ArtifactError(
                f"the graph returned {len(outs)} outputs, the manifest lists {len(self.manifest.outputs)}"
            )
        if results is None:
            results = []
            for o in outs:
                o = np.asarray(o)
                shape = o.shape[1:] if vectorized else o.shape
                results.append(np.empty((total, *shape), dtype=o.dtype))
        for res, o in zip(results, outs):
            o = np.asarray(o)
            if vectorized:
                if o.ndim == 0 or o.shape[0] != count or o.shape[1:] != res.shape[1:]:
                    raise ArtifactError(
                        f"a vectorized graph must return [samples, ...] = [{count}, {', '.join(map(str, res.shape[1:]))}], "
                        f"got {list(o.shape)}"
                    )
                res[start : start + count] = o
            else:
                if o.shape != res.shape[1:]:
                    raise ArtifactError(
                        f"a per-call graph must return {list(res.shape[1:])}, got {list(o.shape)}"
                    )
                res[start] = o
        return results

    def __repr__(self) -> str:
        m = self.manifest
        mode = "vectorized" if m.vectorized else "per-call"
        local = ", local variant" if m.local else ""
        return f"Predictor({self.path.name}: {self.backend.describe()}, {mode}, {len(m.noise)} noise inputs{local}, task={m.task})"


#: The backend option that sets CPU threads, by artifact format.
THREAD_OPTIONS = {"onnx": "intra_op_num_threads", "torchscript": "num_threads", "tflite": "num_threads"}


def default_threads() -> int:
    """CPU threads by default: the cores this process may use (its affinity mask, which Ray
    workers and containers restrict), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _resolve_threads(fmt: str, options: dict[str, Any]) -> int:
    """Pop ``threads`` from `options`, reconcile it with the backend's own thread option and
    write the result into that option; returns the thread count."""
    key = THREAD_OPTIONS.get(fmt)
    threads = options.pop("threads", None)
    native = options.get(key) if key else None
    for name, value in (("threads", threads), (key, native)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise InputError(f"`{name}` (={value!r}) must be a positive integer")
    if threads is not None and native is not None and int(threads) != int(native):
        raise InputError(f"`threads` (={threads}) and `{key}` (={native}) disagree; pass one of them")
    resolved = int(threads if threads is not None else native if native is not None else default_threads())
    if key is not None:
        options[key] = resolved
    return resolved


def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # bfloat16 has no numpy dtype
        return 2


def _check_seed(seed: Any, allow_none: bool) -> int | None:
    """Seeds are integers in ``[0, 2**64)``; refuse anything else instead of wrapping it."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"`seed` (={seed!r}) must be {'None or ' if allow_none else ''}an integer in [0, 2**64)")
    seed = int(seed)
    if not 0 <= seed < SEED_LIMIT:
        raise InputError(f"`seed` (={seed}) must lie in [0, 2**64) = [0, {SEED_LIMIT - 1}]")
    return seed


def _check_row_ids(row_ids: Any, batch: int) -> np.ndarray:
    """The 64-bit words of `row_ids`, checked against the batch (InputError naming the problem)."""
    from illia_export.runtime.noise import row_words

    try:
        words = row_words(row_ids)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`row_ids`: {exc}") from exc
    if len(words) != batch:
        raise InputError(f"`row_ids` has {len(words)} ids for a batch of {batch} rows; give one id per row")
    return words


def _check_fits(nbytes: int, what: str, hint: str = "lower the number of samples or the batch size") -> None:
    """Raise ResourceError when `nbytes` cannot be allocated on this machine."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ResourceError(
            f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(avail)} of memory available; {hint}"
        )


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, desc="MC samples", leave=False, delay=0.5)
