"""TFLite backend: ``tf.lite.Interpreter`` through the artifact's signature, inputs resized
to the batch (and sample chunk) of each call."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, DeviceUnavailableError, require
from illia_export.runtime.backends import Backend, to_numpy
from illia_export.runtime.backends.ort import default_threads


def _interpreter_class():
    """LiteRT's interpreter when ``ai_edge_litert`` is installed, else ``tf.lite.Interpreter``."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        tf = require("tensorflow", "tf", "Running TFLite artifacts")
        return tf.lite.Interpreter


class TFLiteBackend(Backend):
    """Runs a ``.tflite`` model on the CPU.

    Options:
        num_threads: interpreter threads (default: the usable cores).
        signature: signature key (default: the model's only/first signature).
        verified_digest: the file's bytes matched the manifest digest, or the caller vouched
            for the file (set by the Predictor); otherwise the model is first opened in a child
            process (see :mod:`.tflite_verify`).

    The file is always bounds-checked first (:func:`.tflite_verify.verify_flatbuffer`): a
    corrupt model raises :class:`ArtifactError` instead of crashing the interpreter.
    """

    name = "tflite"
    noise_kind = "numpy"

    def __init__(
        self, path: Path, input_names, noise_names, output_names, device: str = "cpu", **options: Any
    ):
        super().__init__(path, input_names, noise_names, output_names, device, **options)
        if device != "cpu":
            raise DeviceUnavailableError(
                "the TFLite backend runs on the CPU only (GPU delegates are not wired in); use device='cpu', "
                "or export to ONNX/TorchScript for CUDA"
            )
        from illia_export.runtime.backends.tflite_verify import verify_tflite_file

        verify_tflite_file(path, trusted=bool(options.pop("verified_digest", False)))
        interpreter_cls = _interpreter_class()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # tf.lite.Interpreter's deprecation notice
                self.interpreter = interpreter_cls(
                    model_path=str(path), num_threads=int(options.get("num_threads") or default_threads())
                )
        except Exception as exc:  # TF raises ValueError/RuntimeError
            raise ArtifactError(f"tf.lite cannot load {path}: {exc}") from exc
        signatures = self.interpreter.get_signature_list()
        if not signatures:
            raise ArtifactError(
                f"{path} has no signature; illia-export TFLite artifacts are exported with one"
            )
        key = options.get("signature") or next(iter(signatures))
        if key not in signatures:
            raise ArtifactError(f"{path} has no signature {key!r} (has {sorted(signatures)})")
        self.runner = self.interpreter.get_signature_runner(key)
        sig_in = set(signatures[key]["inputs"])
        missing = [n for n in self.input_names + self.noise_names if n not in sig_in]
        if missing:
            raise ArtifactError(f"{path}: signature {key!r} lacks inputs {missing} (has {sorted(sig_in)})")
        self.sig_outputs = list(signatures[key]["outputs"])
        details = self.runner.get_input_details()
        self.input_dtypes = {n: details[n]["dtype"] for n in self.input_names}

    def graph_inputs(self):
        out = {}
        for name, d in self.runner.get_input_details().items():
            sig = d.get("shape_signature")
            sig = list(sig) if sig is not None and len(sig) else list(d["shape"])
            out[name] = ([int(x) if int(x) >= 0 else None for x in sig], np.dtype(d["dtype"]).name)
        return out

    def run(self, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        feeds = dict(zip(self.input_names, inputs))
        for name, eps in zip(self.noise_names, noise):
            feeds[name] = np.ascontiguousarray(to_numpy(eps))
        # SignatureRunner resizes inputs whose shape changed and reallocates tensors.
        out = self.runner(**feeds)
        return [np.array(out[n]) for n in self._output_keys(out)]

    def _output_keys(self, out: dict) -> list[str]:
        if all(n in out for n in self.output_names):
            return self.output_names
        if len(out) == len(self.output_names) == 1:
            return list(out)
        raise ArtifactError(
            f"{self.path}: signature outputs {sorted(out)} do not match the manifest's outputs {self.output_names}"
        )
