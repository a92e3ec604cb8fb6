"""Monte Carlo inference from exported artifacts, with seeded, reproducible noise.

>>> from illia_export.runtime import load
>>> predictor = load("model.onnx")                      # or .pt, .tflite, a SavedModel folder
>>> pred = predictor.predict(x, num_samples=64, seed=0)  # strategy="fresh" | "bank" | "local"
>>> pred.mean, pred.std, pred.mutual_information

Backends (onnxruntime, TorchScript, TFLite, TF SavedModel) are imported only when an artifact of
that format is loaded. The noise generators (``illia-noise-v2``, ``illia-noise-v1``; the one the
manifest names is used) live in :mod:`illia_export.runtime.noise` (see docs/noise.md).
"""

from illia_export.errors import DeviceUnavailableError, StrategyError, TaskError
from illia_export.runtime.freeze import freeze_bank
from illia_export.runtime.prediction import Prediction
from illia_export.runtime.predictor import Predictor, load

__all__ = ["DeviceUnavailableError", "Prediction", "Predictor", "StrategyError", "TaskError", "freeze_bank", "load"]
