"""`load` and `Predictor`: Monte Carlo inference from any illia-export artifact.

The orchestration only: input checks live in `inputs.py`, noise per strategy (and its caches)
in `strategies.py`, memory sizing in `memory.py`, chunk running in `chunks.py`. About half of
this module is the public API's docstrings (`load`, `predict`, `noise`).

Length: ~580 lines, about half of them the public docstrings above.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact.manifest import (
    FROZEN_KEY,
    Manifest,
    NoiseSpec,
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
    StrategyError,
)
from illia_export.runtime import inputs as checks
from illia_export.runtime import memory
from illia_export.runtime.backends import Backend, check_device, open_backend
from illia_export.runtime.chunks import progress_bar, run_feed, store
from illia_export.runtime.memory import DEFAULT_CHUNK_BYTES, check_fits, elements
from illia_export.runtime.noise import GENERATORS, check_generator
from illia_export.runtime.prediction import TASKS, Prediction
from illia_export.runtime.sampling import AUTO, STRATEGIES, NoiseMaker, random_seed
from illia_export.runtime.strategies import (
    BankSource,
    Feed,
    FreshSource,
    LocalSource,
    NoiseRequest,
    keyed_streams,
    precomputes,
    resolve_noise_shapes,
    row_noise,
)
from illia_export.runtime.threads import THREAD_OPTIONS, _resolve_threads, default_threads  # noqa: F401

#: Kept for callers of the old private name (freeze.py).
SEED_LIMIT = checks.SEED_LIMIT

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
        self._layouts: dict[tuple, tuple[list[tuple[int, ...]], list[int]]] = {}
        #: One noise source per strategy, each owning its cache (runtime/strategies.py).
        self._sources = {
            "fresh": FreshSource(),
            "bank": BankSource(max_bytes=self.memory_budget),
            "local": LocalSource(),
        }
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
            # the bytes matched the digest, or the caller vouched for the file: no child-process probe
            options["verified_digest"] = (path == self.path and self.manifest.digest is not None) or self.trust.vouched
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
        """Check `x` against the manifest's inputs and return them in manifest order
        (:func:`illia_export.runtime.inputs.prepare`: dtypes cast within their kind, integers
        that fit, shapes, finite floats unless `allow_nonfinite`, integer ranges).

        Returns:
            ``(arrays, batch_size)``.
        """
        return checks.prepare(self.manifest.inputs, x, allow_nonfinite)

    # --------------------------------------------------------------------- noise
    def _specs(self, strategy: str) -> list[NoiseSpec]:
        return self._local_specs() if strategy == "local" else self.manifest.noise

    def noise_shapes(self, strategy: str, batch: int, sizes: Mapping[str, int] | None = None) -> list[tuple[int, ...]]:
        """Per-sample shape of every noise input of `strategy` for a batch of `batch` rows;
        named dims (``"seq_len"``, ``"2*seq_len"``) take their size from `sizes` (symbolic
        input dims, e.g. from :func:`illia_export.runtime.inputs.symbolic_sizes`)."""
        return resolve_noise_shapes(self._specs(strategy), batch, sizes or {})

    def noise(
        self,
        num_samples: int,
        seed: int,
        strategy: str = "fresh",
        batch_size: int = 1,
        generator: str | None = None,
        row_ids: Any = None,
        sizes: Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """The exact noise a prediction with these arguments feeds the graph (numpy copies).

        Args:
            num_samples: S.
            seed: the seed.
            strategy: ``"fresh"``/``"bank"`` (same numbers: the main graph's noise) or
                ``"local"`` (the local variant's pre-activation noise).
            batch_size: B; ignored when `row_ids` is given. Per-example noise is keyed by row,
                with ids ``0..B-1`` when `row_ids` is None (as :meth:`predict` does).
            generator: the noise generator (default: the manifest's ``noise_generator``).
            row_ids: the rows' ids, as in :meth:`predict`.
            sizes: sizes of named noise dims other than ``batch`` (e.g. ``{"seq_len": 12}``).

        Returns:
            ``{noise input name: [S, *shape]}``.
        """
        seed = checks.check_seed(seed, allow_none=False)
        num_samples = checks.check_count(num_samples, "num_samples")
        specs = self._specs(strategy)
        if row_ids is not None:
            batch_size = len(np.asarray(row_ids))
        batch_size = checks.check_count(batch_size, "batch_size")
        words = checks.check_row_ids(row_ids if row_ids is not None else _row_range(batch_size), batch_size)
        shapes = resolve_noise_shapes(specs, batch_size, sizes or {})
        check_fits(4 * num_samples * elements(shapes), f"the noise of {num_samples} samples")
        gen = self._generator(generator)
        req = NoiseRequest(
            None, NoiseMaker("numpy", "cpu", self._noise_impl), specs, shapes,
            keyed_streams(specs, strict=row_ids is not None), words,
            seed, True, num_samples, gen, True, use_kernel=self._noise_impl == "auto",
        )
        arrays = req.maker.draw(seed, req.drawn, 0, num_samples, generator=gen)
        arrays = row_noise(req, 0, num_samples, arrays)
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
        """Drop the cached noise banks (the next ``strategy='bank'`` call draws a new one)."""
        with self._lock:
            self._sources["bank"].clear()

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
            strategy: ``"fresh"`` (default): samples ``[0, S)`` of the seed's noise streams, generated on
                every call (exact weight-space MC); the same numbers as the CLI, the server, Ray and
                ``illia-mc`` for the same seed, whatever the batching. ``"auto"``: ``"local"`` for a
                single row when the artifact has a local variant (exact in distribution for one row,
                and ~100x less noise to draw), else ``"fresh"`` — fast for one row, but a row's
                numbers then depend on whether it came alone; the choice is in ``Prediction.strategy``. ``"bank"``: the same noise, drawn once per
                (seed, S) and kept for later calls (a fixed ensemble of S weight samples; same
                numbers as ``fresh`` with that seed; several seeds kept, LRU). ``"local"``: the
                local-reparameterization variant (Linear-only artifacts), pre-activation noise
                ``[S, B, out]`` per layer; with an explicit seed that noise is kept for the next
                call with the same seed, S and B (same numbers; up to 256 MiB).
            chunk_size: samples per graph call for vectorized graphs (bounds memory; default:
                the largest chunk whose estimated memory stays under ``memory_budget``).
                Per-call graphs always run one sample per call; chunk_size then bounds how many
                samples of noise are drawn at once. Results do not depend on it.
            progress: show a tqdm progress bar (stderr).
            task: override the manifest's task for the summaries.
            allow_nonfinite: accept NaN/inf in float inputs (refused by default: the outputs
                for them are meaningless, e.g. class 0 for an all-NaN row).
            generator: the noise generator (``"illia-noise-v1"`` or ``"illia-noise-v2"``);
                default: the one the manifest names, so an artifact's seeds always reproduce.
                Recorded in ``Prediction.noise_generator``.
            row_ids: stable id of each row (``B`` integers, strings or bytes); default
                ``range(B)``. Every per-example noise input (MC-dropout masks, Flipout signs,
                ``local``'s pre-activation noise) is drawn per row, keyed by (seed, stream,
                row id), so a row's answer depends only on (seed, S, its id, its inputs): not on
                the batch size or its neighbours (partition invariance, for Ray Data and request
                batching). Weight noise never depends on the batch. Equal ids get equal noise.

        Returns:
            A :class:`Prediction` with samples ``[S, B, ...]`` per output.

        Raises:
            InputError: non-finite inputs, token ids outside the vocabulary, a seed outside
                ``[0, 2**64)``, a bad count. ShapeError: wrong shapes or dtypes, an empty batch.
            ResourceError: the result (``S x B x outputs``), a bank or one chunk's working set
                does not fit in the memory this process may use (raised before anything large is
                allocated).
        """
        if strategy not in STRATEGIES and strategy != AUTO:
            raise StrategyError(f"`strategy` (={strategy!r}) must be one of {(AUTO, *STRATEGIES)}")
        num_samples = checks.check_count(num_samples, "num_samples")
        seed = checks.check_seed(seed, allow_none=True)
        chunk_size = checks.check_count(chunk_size, "chunk_size", allow_none=True)
        task = task or self.manifest.task
        if task not in TASKS:
            raise InputError(f"`task` (={task!r}) must be one of {TASKS}")
        generator = self._generator(generator)
        with self._lock:
            return self._predict(
                x, num_samples, seed, strategy, chunk_size, progress, task, allow_nonfinite, generator, row_ids
            )

    def row_keyed_streams(self, strategy: str = "fresh") -> list[int]:
        """Positions of the noise inputs drawn per row: those with a ``batch`` dim.

        Raises:
            StrategyError: a noise input whose per-example layout is unknown (a ``k*batch`` dim),
                so its rows cannot be keyed.
        """
        return keyed_streams(self._specs(strategy))

    def _layout(
        self, strategy: str, specs: list[NoiseSpec], batch: int, sizes: dict[str, int], strict: bool
    ) -> tuple[list[tuple[int, ...]], list[int]]:
        """Noise shapes and row-keyed streams for this call, memoized per (strategy, batch,
        named sizes): recomputing them costs ~25 us, a fifth of a one-row S = 1 call."""
        key = (strategy, batch, tuple(sorted(sizes.items())), strict)
        hit = self._layouts.get(key)
        if hit is None:
            if len(self._layouts) > 64:
                self._layouts.clear()
            hit = self._layouts[key] = (resolve_noise_shapes(specs, batch, sizes), keyed_streams(specs, strict))
        return hit

    def resolve_strategy(self, strategy: str, batch: int) -> str:
        """``"auto"`` -> ``"local"`` for one row where the artifact has a local variant (exact:
        the exporter writes one only for Linear-only models, and a single row's distribution
        is then weight-space MC's; ~100x less noise to draw), else ``"fresh"``."""
        if strategy != AUTO:
            return strategy
        return "local" if batch == 1 and self.manifest.local is not None else "fresh"

    def _predict(
        self, x, num_samples, seed, strategy, chunk_size, progress, task, allow_nonfinite, generator, row_ids=None
    ) -> Prediction:
        arrays, batch = self.prepare_inputs(x, allow_nonfinite=allow_nonfinite)
        strategy = self.resolve_strategy(strategy, batch)
        if strategy == "local":
            backend = self.local_backend()
            specs = self.manifest.local.noise  # type: ignore[union-attr]
            vectorized = True
        else:
            backend = self.backend
            specs = self.manifest.noise
            vectorized = self.manifest.vectorized
        sizes = checks.symbolic_sizes(self.manifest.inputs, [a.shape for a in arrays])
        # Per-example noise is row-keyed; without ids the rows are keyed by their index.
        shapes, keyed = self._layout(strategy, specs, batch, sizes, strict=row_ids is not None)
        words = None
        if row_ids is not None:
            words = checks.check_row_ids(row_ids, batch)
        elif keyed:
            words = _row_range(batch).view(np.uint64)
        source = self._sources[strategy]
        if seed is None and strategy == "bank":
            if source.default_seed is None:
                source.default_seed = random_seed()
        explicit_seed = seed is not None
        seed = int(seed if seed is not None else source.default_seed if strategy == "bank" else random_seed())
        req = NoiseRequest(
            backend, self._maker(backend), specs, shapes, keyed, words, seed, explicit_seed, num_samples,
            generator, vectorized, use_kernel=self._noise_impl == "auto",
        )
        # Everything large is sized here, before it is allocated.
        cached_copies = 0
        if strategy == "bank" and not source.holds(req):
            cached_copies = 2 if vectorized and precomputes(backend) else 1
        elif strategy == "local" and source.will_cache(req):
            cached_copies = 1
        mem = memory.plan(
            num_samples=num_samples,
            batch=batch,
            noise_elements=elements(req.drawn if strategy == "bank" else shapes),
            input_bytes=sum(a.nbytes for a in arrays),
            output_bytes=memory.output_bytes_per_sample(self.manifest.outputs, sizes, batch),
            vectorized=vectorized,
            budget=self.memory_budget,
            chunk_size=chunk_size,
            cached_copies=cached_copies,
        )
        chunk = mem.chunk
        inputs = backend.prepare_inputs(arrays)
        call = source.open(req)

        results: list[np.ndarray] | None = None
        n_outputs = len(self.manifest.outputs)
        bar = progress_bar(num_samples, progress)
        try:
            for start in range(0, num_samples, chunk):
                count = min(chunk, num_samples - start)
                feed = call.chunk(start, count)
                if vectorized:
                    results = store(results, run_feed(backend, inputs, feed), start, count, num_samples, True, n_outputs)
                    if bar is not None:
                        bar.update(count)
                else:
                    for j in range(count):
                        one = Feed([n[j] for n in feed.noise], plan=feed.plan)
                        results = store(results, run_feed(backend, inputs, one), start + j, 1, num_samples, False, n_outputs)
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

    def __repr__(self) -> str:
        m = self.manifest
        mode = "vectorized" if m.vectorized else "per-call"
        local = ", local variant" if m.local else ""
        return f"Predictor({self.path.name}: {self.backend.describe()}, {mode}, {len(m.noise)} noise inputs{local}, task={m.task})"


def _row_range(batch: int) -> np.ndarray:
    """The default row ids ``0..B-1``: ``predict(x)`` equals ``predict(x, row_ids=range(B))``."""
    return np.arange(batch, dtype=np.int64)
