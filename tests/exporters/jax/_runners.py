"""Run exported JAX artifacts with the plain runtimes (independent of the exporter's own code)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_CACHE: dict = {}


def run(fmt: str, path: Path, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
    """Outputs in `output_names` order for `feeds` (contract names)."""
    key = (fmt, str(path))
    if fmt == "onnx":
        import onnxruntime as ort

        if key not in _CACHE:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            _CACHE[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return [np.asarray(a) for a in _CACHE[key].run(output_names, feeds)]
    import tensorflow as tf

    if fmt == "savedmodel":
        if key not in _CACHE:
            _CACHE[key] = tf.saved_model.load(str(path))
        out = _CACHE[key].signatures["serving_default"](**{k: tf.constant(v) for k, v in feeds.items()})
        return [out[n].numpy() for n in output_names]
    # TFLite: the documented resize path (resize_tensor_input + allocate_tensors)
    interp = tf.lite.Interpreter(model_path=str(path))
    sig = interp._get_full_signature_list()["serving_default"]
    for name, value in feeds.items():
        interp.resize_tensor_input(sig["inputs"][name], list(value.shape), strict=False)
    interp.allocate_tensors()
    for name, value in feeds.items():
        interp.set_tensor(sig["inputs"][name], value)
    interp.invoke()
    return [np.array(interp.get_tensor(sig["outputs"][n])) for n in output_names]
