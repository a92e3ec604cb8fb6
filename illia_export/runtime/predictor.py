"""`load` and `Predictor`: Monte Carlo inference from any illia-export artifact."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, ManifestError, ShapeError, StrategyError
from illia_export.exporters.manifest import (
    BATCH_DIM,
    SAMPLE_DIM,
    Manifest,
    NoiseSpec,
    TensorSpec,
    batch_multiple,
    detect_format,
    read_manifest,
)
from illia_export.runtime.backends import Backend, check_device, open_backend
from illia_export.runtime.noise import GENERATORS, check_generator
from illia_export.runtime.prediction import TASKS, Prediction
from illia_export.runtime.sampling import STRATEGIES, NoiseMaker, default_chunk, random_seed

#: Largest pre-activation noise (bytes) an explicitly seeded ``local`` call keeps for reuse.
LOCAL_CACHE_BYTES = 256 * 1024 * 1024

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
            ``num_threads`` for TFLite/TorchScript).

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
    return Predictor(p, manifest, device=device, noise_impl=noise_impl, **backend_options)


class Predictor:
    """Runs Monte Carlo predictions from one artifact with seeded, reproducible noise.

    Build it with :func:`load`. It keeps the backend session(s), the noise buffers and the
    noise bank between calls.

    Attributes:
        path: the artifact.
        manifest: its :class:`~illia_export.exporters.manifest.Manifest`.
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
        self._backend_options = backend_options
        self._noise_impl = noise_impl
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

    # ----------------------------------------------------------------- plumbing
    def _open(self, path: Path, noise: list[NoiseSpec]) -> Backend:
        return open_backend(
            self.manifest.format,
            path,
            [t.name for t in self.manifest.inputs],
            [n.name for n in noise],
            [t.name for t in self.manifest.outputs],
            self.device,
            **self._backend_options,
        )

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
            raise StrategyError(
                f"strategy='local' needs an artifact with a local-reparameterization variant, and {self.path.name} "
                "has none. Local reparameterization (noise on pre-activations, mean x·mu, variance x²·sigma²) is "
                "exact only for Linear layers; exporters add the variant for Linear-only models, not for "
                "convolutions, embeddings or LSTMs, where weights are shared across positions/time steps. Use "
                "strategy='fresh' or 'bank'."
            )
        if self._local_backend is None:
            file = self.path.parent / local.file
            if not file.exists():
                raise ArtifactError(
                    f"the manifest's local variant {local.file!r} is missing (looked for {file})"
                )
            self._local_backend = self._open(file, local.noise)
        return self._local_backend

    # -------------------------------------------------------------------- inputs
    def prepare_inputs(self, x: InputLike) -> tuple[list[np.ndarray], int]:
        """Check `x` against the manifest's inputs and return them in manifest order.

        Floating inputs are cast to the manifest's floating dtype (e.g. float64 -> float32) and
        integer inputs to its integer dtype; any other dtype mismatch is a :class:`ShapeError`.

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
        batch = bound.get(BATCH_DIM, arrays[0].shape[0] if arrays and arrays[0].ndim else 1)
        return arrays, int(batch)

    @staticmethod
    def _check_input(spec: TensorSpec, value: Any, bound: dict[str, int]) -> np.ndarray:
        arr = np.asarray(value)
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
    ) -> dict[str, np.ndarray]:
        """The exact noise a prediction with these arguments feeds the graph (numpy copies).

        Args:
            num_samples: S.
            seed: the seed.
            strategy: ``"fresh"``/``"bank"`` (same numbers: the main graph's noise) or
                ``"local"`` (the local variant's pre-activation noise, which depends on the batch).
            batch_size: B, used by ``"local"`` only.
            generator: the noise generator (default: the manifest's ``noise_generator``).

        Returns:
            ``{noise input name: [S, *shape]}``.
        """
        specs = self._local_specs() if strategy == "local" else self.manifest.noise
        shapes = self._noise_shapes(specs, batch_size)
        maker = NoiseMaker("numpy", "cpu", self._noise_impl)
        gen = self._generator(generator)
        return {
            n.name: np.array(a)
            for n, a in zip(specs, maker.draw(seed, shapes, 0, num_samples, generator=gen))
        }

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
        generator: str | None = None,
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
            generator: the noise generator (``"illia-noise-v1"`` or ``"illia-noise-v2"``);
                default: the one the manifest names, so an artifact's seeds always reproduce.
                Recorded in ``Prediction.noise_generator``.

        Returns:
            A :class:`Prediction` with samples ``[S, B, ...]`` per output.
        """
        if strategy not in STRATEGIES:
            raise StrategyError(f"`strategy` (={strategy!r}) must be one of {STRATEGIES}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"`num_samples` (={num_samples!r}) must be a positive integer")
        num_samples = int(num_samples)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ValueError(f"`seed` (={seed!r}) must be None or a non-negative integer")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
        ):
            raise ValueError(f"`chunk_size` (={chunk_size!r}) must be None or a positive integer")
        task = task or self.manifest.task
        if task not in TASKS:
            raise ValueError(f"`task` (={task!r}) must be one of {TASKS}")
        generator = self._generator(generator)

        if strategy == "local":
            backend = self.local_backend()
            specs = self.manifest.local.noise  # type: ignore[union-attr]
            vectorized = True
        else:
            backend = self.backend
            specs = self.manifest.noise
            vectorized = self.manifest.vectorized
        arrays, batch = self.prepare_inputs(x)
        inputs = backend.prepare_inputs(arrays)
        shapes = self._noise_shapes(specs, batch)
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
        chunk = int(chunk_size) if chunk_size else default_chunk(num_samples, NoiseMaker.elements(shapes))
        chunk = min(chunk, num_samples)
        bank = self._bank_noise(backend, seed, shapes, num_samples, generator) if strategy == "bank" else None
        if strategy == "local" and explicit_seed:
            bank = self._local_noise(backend, seed, shapes, num_samples, generator)
        # fresh: where the graph only uses eps as mu + sigma * eps, write those weights directly
        plan = backend.weight_plan(shapes, vectorized) if strategy == "fresh" else None

        results: list[np.ndarray] | None = None
        bar = _progress_bar(num_samples, progress)
        try:
            for start in range(0, num_samples, chunk):
                count = min(chunk, num_samples - start)
                token = None
                if bank is not None:
                    noise = [b[start : start + count] for b in bank]
                    if vectorized and strategy == "bank":
                        token = self._bank_token(backend, bank, start, count)
                else:
                    noise = maker.draw(
                        seed,
                        shapes,
                        start,
                        count,
                        reuse=True,
                        generator=generator,
                        affine=plan.pairs if plan is not None else None,
                    )
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
        finally:
            if bar is not None:
                bar.close()
        assert results is not None
        names = [t.name for t in self.manifest.outputs]
        return Prediction(
            dict(zip(names, results)), task=task, seed=seed, strategy=strategy, noise_generator=generator
        )

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


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, desc="MC samples", leave=False, delay=0.5)
