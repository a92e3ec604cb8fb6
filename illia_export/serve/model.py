"""The kserve ``Model`` that answers v2 inference requests with a :class:`Predictor`.

Why a kserve Model: kserve's ModelServer then gives the v2 REST endpoints, health, readiness,
metrics and graceful shutdown; this class only decodes a request (``protocol``), queues it
for batching (``batching``), and encodes the summaries of its rows.

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

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from illia_export.artifact.manifest import SAMPLE_DIM
from illia_export.errors import IlliaExportError, StrategyError
from illia_export.runtime.prediction import Prediction
from illia_export.runtime.sampling import random_seed
from illia_export.serve import protocol
from illia_export.serve._kserve import import_kserve
from illia_export.serve.batching import MicroBatcher

kserve = import_kserve()
from kserve.errors import InferenceError, InvalidInput  # noqa: E402


@dataclass
class _Payload:
    arrays: list[np.ndarray]
    rows: int


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class IlliaModel(kserve.Model):
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
        super().__init__(name)
        self.predictor = predictor
        self.limits = limits
        self.default_seed = seed
        #: The seed of ``bank`` requests that carry none: one per server, so they share a bank.
        self.bank_seed = seed if seed is not None else random_seed()
        self.row_keyed = {s: self._can_key_rows(s) for s in limits.strategies}
        self.batcher = MicroBatcher(
            self._run_group, max_batch_size, max_latency_ms, mergeable=lambda key: self.row_keyed[key[2]]
        )
        self.output_names: list[str] = []
        self._outputs_meta: list[dict[str, Any]] = []

    def _can_key_rows(self, strategy: str) -> bool:
        try:
            self.predictor.row_keyed_streams(strategy)
        except StrategyError:
            return False
        return True

    # ------------------------------------------------------------ kserve hooks
    def load(self) -> bool:
        """Run one probe prediction (batch 1, S = 2) to learn the response tensors' names,
        dtypes and shapes exactly as ``summary_arrays()`` gives them; then mark ready."""
        probe = self.predictor.predict(self._probe_inputs(), num_samples=2, seed=0, strategy="fresh")
        summaries = probe.summary_arrays()
        self.output_names = list(summaries)
        out_spec = next(s for s in self.predictor.manifest.outputs if s.name == probe.output_name)
        row_shape = [d for d in out_spec.shape if d != SAMPLE_DIM]
        self._outputs_meta = protocol.output_metadata(summaries, row_shape)
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

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Decode and check the request, wait for its (possibly merged) call, encode its rows."""
        from kserve import InferOutput, InferResponse

        try:
            inputs = [
                {"name": i.name, "shape": i.shape, "datatype": i.datatype, "data": i.data} for i in payload.inputs
            ]
            requested = [o.name for o in payload.request_outputs] if payload.request_outputs else None
            req = protocol.decode_request(
                inputs, payload.parameters, self.predictor.manifest.inputs, self.limits, requested, self.output_names
            )
            # The runtime's own input checks, before the request can join anyone's batch.
            arrays, rows = self.predictor.prepare_inputs(req.arrays)
        except IlliaExportError as exc:
            raise InvalidInput(_one_line(exc)) from exc
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
                key, _Payload(arrays, rows), rows
            )
        except IlliaExportError as exc:
            raise InvalidInput(_one_line(exc)) from exc
        except Exception as exc:
            raise InferenceError(f"prediction failed: {type(exc).__name__}: {_one_line(exc)}") from exc
        outputs = [
            InferOutput(name=o.name, shape=o.shape, datatype=o.datatype, data=o.array)
            for o in protocol.encode_outputs(summaries, req.outputs)
        ]
        parameters = {
            "seed": seed,
            "num_samples": req.num_samples,
            "strategy": req.strategy,
            "noise_generator": generator,
            "task": task,
            "row_keyed": self.row_keyed[req.strategy],
            "batch_rows": batch_rows,
            "batch_requests": batch_requests,
        }
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            parameters=parameters,
        )

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
        if self.row_keyed[strategy]:
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
