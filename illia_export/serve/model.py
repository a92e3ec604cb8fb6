"""The served model: a v2 inference request in, the summaries of its rows out.

This class only decodes a request (``protocol``, ``binary``), queues it for batching
(``batching``), and encodes the summaries of its rows; HTTP is ``http``/``app``'s.

Seeds: a request without ``seed`` gets the server's ``--seed`` when set; otherwise a fresh
63-bit seed per request for ``fresh``/``local`` and the server's one bank seed for ``bank``.
The seed used is always in the response's parameters.

Row ids: rows of merged requests are predicted with ``row_ids = arange(rows)`` per request,
so every per-example noise input (MC-dropout masks, Flipout signs, ``local`` pre-activation
noise) of a row is keyed by (seed, stream, its index in its own request): a row's answer is
``predictor.predict(request_x, seed=..., row_ids=np.arange(n))`` whatever its neighbours.
An artifact whose per-example noise cannot be keyed per row (``Predictor.row_keyed_streams``
refuses it) is served without merging for that strategy, each request alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from illia_export.artifact.manifest import SAMPLE_DIM
from illia_export.errors import IlliaExportError, InputError, ShapeError, StrategyError
from illia_export.runtime.prediction import Prediction
from illia_export.runtime.sampling import random_seed
from illia_export.serve import binary, protocol
from illia_export.serve.batching import MicroBatcher

#: Request parameters of the binary data extension, read here; the rest go to ``protocol``.
BINARY_PARAMETERS = ("binary_data_output",)


class ClientError(Exception):
    """A request the server refuses: HTTP `status` with `message` (the ``{"error": ...}`` body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Payload:
    arrays: list[np.ndarray]
    rows: int


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class IlliaModel:
    """One artifact served under one name.

    Args:
        name: the model name in the URLs (``/v2/models/NAME/infer``).
        predictor: the loaded :class:`~illia_export.runtime.Predictor`.
        limits: defaults and bounds of the request parameters.
        seed: the server's default seed (``--seed``), or None.
        max_batch_size: most rows in one merged ``predict`` call.
        max_latency_ms: longest a request waits for others to merge with.
    """

    def __init__(
        self,
        name: str,
        predictor: Any,
        limits: protocol.Limits,
        seed: int | None = None,
        max_batch_size: int = 256,
        max_latency_ms: float = 0.0,
    ) -> None:
        self.name = name
        self.ready = False
        self.predictor = predictor
        self.limits = limits
        self.default_seed = seed
        #: The seed of ``bank`` requests that carry none: one per server, so they share a bank.
        self.bank_seed = seed if seed is not None else random_seed()
        self._needs_row_ids: dict[str, bool] = {}
        self.row_keyed = {s: self._can_key_rows(s) for s in limits.strategies}
        self.batcher = MicroBatcher(
            self._run_group, max_batch_size, max_latency_ms, mergeable=lambda key: self.row_keyed[key[2]]
        )
        self.output_names: list[str] = []
        self._outputs_meta: list[dict[str, Any]] = []

    def _can_key_rows(self, strategy: str) -> bool:
        try:
            streams = self.predictor.row_keyed_streams(strategy)
        except StrategyError:
            return False
        # Only per-example noise needs row ids; without any (weight noise only), passing them
        # changes no number and costs ~15 % of a small model's predict call.
        self._needs_row_ids[strategy] = bool(streams)
        return True

    # ------------------------------------------------------------- set-up
    def load(self) -> bool:
        """Run one probe prediction (batch 1, S = 2) to learn the response tensors' names,
        dtypes and shapes exactly as ``summary_arrays()`` gives them; then mark ready."""
        probe = self.predictor.predict(self._probe_inputs(), num_samples=2, seed=0, strategy="fresh")
        summaries = probe.summary_arrays()
        self.output_names = list(summaries)
        out_spec = next(s for s in self.predictor.manifest.outputs if s.name == probe.output_name)
        row_shape = [d for d in out_spec.shape if d != SAMPLE_DIM]
        self._outputs_meta = protocol.output_metadata(summaries, row_shape, probe.task)
        self.ready = True
        return self.ready

    def _probe_inputs(self) -> list[np.ndarray]:
        arrays = []
        for spec in self.predictor.manifest.inputs:
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            try:
                dtype = np.dtype(spec.dtype)
            except TypeError:  # bfloat16
                dtype = np.dtype(np.float32)
            fill = (spec.range[0] if spec.range is not None else 0) if dtype.kind in "iu" else 0
            arrays.append(np.full(shape, fill, dtype=dtype))
        return arrays

    def stop(self) -> None:
        self.batcher.stop()

    def get_input_types(self) -> list[dict[str, Any]]:
        return protocol.input_metadata(self.predictor.manifest.inputs)

    def get_output_types(self) -> list[dict[str, Any]]:
        return list(self._outputs_meta)

    def metadata_parameters(self) -> dict[str, Any]:
        """Scalar facts for the model metadata's ``parameters`` (v2 parameters are scalars,
        so the manifest travels as a JSON string)."""
        from illia_export.strict_json import dumps

        m = self.predictor.manifest
        return {
            "task": m.task,
            "format": m.format,
            "noise_generator": self.predictor.generator,
            "default_num_samples": self.limits.default_samples,
            "max_num_samples": self.limits.max_samples,
            "default_strategy": self.limits.default_strategy,
            "strategies": ",".join(self.limits.strategies),
            "manifest": dumps(m.to_dict()),
        }

    def decode(self, document: Any, raw_binary: memoryview | None) -> tuple[protocol.DecodedRequest, Any]:
        """Check a parsed request body (a dict) and its binary part: the decoded request and
        which outputs go binary. Every problem is a :class:`ClientError` (400)."""
        try:
            if not isinstance(document, dict):
                raise ShapeError(f"the request body must be a JSON object, got {type(document).__name__}")
            unknown = sorted(str(k) for k in document if k not in ("id", "inputs", "outputs", "parameters"))
            if unknown:
                raise ShapeError(f"unknown request fields {unknown}; a v2 request has id, inputs, outputs, parameters")
            if "inputs" not in document:
                raise ShapeError("the request has no `inputs` (a list of tensors, one per model input)")
            request_id = document.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise ShapeError(f"`id` must be a string, got {type(request_id).__name__}")
            params = document.get("parameters") or {}
            if not isinstance(params, dict):
                raise InputError(f"`parameters` must be an object, got {type(params).__name__}")
            outputs = document.get("outputs")
            if outputs is not None and (
                not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
            ):
                raise ShapeError("`outputs` must be a list of objects with a `name`")
            as_binary = binary.wants_binary(params, outputs)
            binary.attach_inputs(document["inputs"], raw_binary)
            sampling = {k: v for k, v in params.items() if k not in BINARY_PARAMETERS}
            requested = [o["name"] for o in outputs] if outputs else None
            req = protocol.decode_request(
                document["inputs"], sampling, self.predictor.manifest.inputs, self.limits, requested, self.output_names
            )
            # The runtime's own input checks, before the request can join anyone's batch.
            req.arrays, req.rows = self.predictor.prepare_inputs(req.arrays)
        except IlliaExportError as exc:
            raise ClientError(400, _one_line(exc)) from exc
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # Data the checks above did not foresee (e.g. a nesting numpy cannot read): still the
            # client's request, never a 500.
            raise ClientError(400, f"invalid v2 inference request: {type(exc).__name__}: {_one_line(exc)[:300]}") from exc
        return req, as_binary

    async def infer(self, document: Any, raw_binary: memoryview | None = None) -> tuple[dict[str, Any], bytes]:
        """Answer one request: (the JSON response object, the binary outputs' bytes)."""
        req, as_binary = self.decode(document, raw_binary)
        seed = req.seed
        if seed is None:
            if self.default_seed is not None:
                seed = self.default_seed
            elif req.strategy == "bank":
                seed = self.bank_seed
            else:
                seed = random_seed()
        key = (req.num_samples, seed, req.strategy)
        try:
            (summaries, generator, task), batch_rows, batch_requests = await self.batcher.submit(
                key, _Payload(req.arrays, req.rows), req.rows
            )
        except IlliaExportError as exc:
            raise ClientError(400, _one_line(exc)) from exc
        except MemoryError as exc:
            raise ClientError(503, f"not enough memory for this request ({_one_line(exc)}); ask for fewer rows or samples") from exc
        tensors = protocol.encode_outputs(summaries, req.outputs)
        meta = [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in tensors]
        flags = [as_binary.get(t.name, False) if isinstance(as_binary, dict) else bool(as_binary) for t in tensors]
        outputs, raw = binary.encode(meta, [t.array for t in tensors], flags)
        response: dict[str, Any] = {"model_name": self.name}
        request_id = document.get("id")
        if request_id is not None:
            response["id"] = request_id
        response["parameters"] = {
            "seed": seed,
            "num_samples": req.num_samples,
            "strategy": req.strategy,
            "noise_generator": generator,
            "task": task,
            "row_keyed": self.row_keyed[req.strategy],
            "batch_rows": batch_rows,
            "batch_requests": batch_requests,
        }
        response["outputs"] = outputs
        return response, raw

    # ------------------------------------------------------- the batched call
    def _run_group(self, key: tuple[int, int, str], payloads: list[_Payload]) -> list[tuple]:
        """One ``predict`` call for the rows of `payloads` (worker thread); each request's
        summaries, computed on its own rows."""
        num_samples, seed, strategy = key
        n_inputs = len(payloads[0].arrays)
        if len(payloads) == 1:
            x = payloads[0].arrays
        else:
            x = [np.concatenate([p.arrays[i] for p in payloads], axis=0) for i in range(n_inputs)]
        options: dict[str, Any] = {}
        if self.row_keyed[strategy] and self._needs_row_ids.get(strategy, True):
            options["row_ids"] = np.concatenate([np.arange(p.rows, dtype=np.int64) for p in payloads])
        pred = self.predictor.predict(x, num_samples=num_samples, seed=seed, strategy=strategy, **options)
        results = []
        start = 0
        for p in payloads:
            stop = start + p.rows
            part = pred if len(payloads) == 1 else Prediction(
                {k: v[:, start:stop] for k, v in pred.outputs.items()},
                task=pred.task,
                seed=pred.seed,
                strategy=pred.strategy,
                likelihood=pred.likelihood,
                noise_generator=pred.noise_generator,
            )
            results.append((part.summary_arrays(), pred.noise_generator, pred.task))
            start = stop
        return results
