"""TF SavedModel backend: the ``serving_default`` signature, keyword inputs named as in the
manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, DeviceUnavailableError, require
from illia_export.runtime.backends import Backend, to_numpy


class SavedModelBackend(Backend):
    """Runs a TF SavedModel on the CPU or the first GPU.

    Options:
        signature: signature key (default ``"serving_default"``).
    """

    name = "savedmodel"
    noise_kind = "numpy"

    def __init__(
        self, path: Path, input_names, noise_names, output_names, device: str = "cpu", **options: Any
    ):
        super().__init__(path, input_names, noise_names, output_names, device, **options)
        tf = require("tensorflow", "tf", "Running TF SavedModel artifacts")
        self._tf = tf
        if device == "cuda":
            if not tf.config.list_physical_devices("GPU"):
                raise DeviceUnavailableError(
                    "device='cuda' was requested but TensorFlow sees no GPU (tensorflow-cpu, or CUDA "
                    "libraries missing); use device='cpu'"
                )
            self._tf_device = "/GPU:0"
        else:
            self._tf_device = "/CPU:0"
        try:
            with tf.device(self._tf_device):
                self._loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TF raises many types
            raise ArtifactError(f"tf.saved_model.load cannot load {path}: {exc}") from exc
        key = options.get("signature", "serving_default")
        if key not in self._loaded.signatures:
            raise ArtifactError(f"{path} has no signature {key!r} (has {sorted(self._loaded.signatures)})")
        self.fn = self._loaded.signatures[key]
        specs = self.fn.structured_input_signature[1]
        missing = [n for n in self.input_names + self.noise_names if n not in specs]
        if missing:
            raise ArtifactError(f"{path}: signature {key!r} lacks inputs {missing} (has {sorted(specs)})")
        self.input_dtypes = {n: specs[n].dtype.as_numpy_dtype for n in self.input_names}

    def graph_inputs(self):
        out = {}
        for name, spec in self.fn.structured_input_signature[1].items():
            shape = None if spec.shape.rank is None else [d if d is None else int(d) for d in spec.shape.as_list()]
            try:
                dtype = np.dtype(spec.dtype.as_numpy_dtype).name
            except TypeError:
                dtype = None
            out[name] = (shape, dtype)
        return out

    def prepare_inputs(self, inputs: list[np.ndarray]) -> list[Any]:
        with self._tf.device(self._tf_device):
            return [self._tf.constant(x) for x in inputs]

    def run(self, inputs: list[Any], noise: list[Any]) -> list[np.ndarray]:
        tf = self._tf
        with tf.device(self._tf_device):
            feeds = dict(zip(self.input_names, inputs))
            for name, eps in zip(self.noise_names, noise):
                feeds[name] = tf.constant(to_numpy(eps))
            out = self.fn(**feeds)
        if all(n in out for n in self.output_names):
            keys = self.output_names
        elif len(out) == len(self.output_names) == 1:
            keys = list(out)
        else:
            raise ArtifactError(
                f"{self.path}: signature outputs {sorted(out)} do not match the manifest's outputs {self.output_names}"
            )
        return [out[k].numpy() for k in keys]
