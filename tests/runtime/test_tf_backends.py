"""TFLite and TF SavedModel backends, on hand-built TF graphs of the single Bayesian Linear layer
(parity with the ONNX export of the same layer for the same seed).

The JAX exporter's artifacts get the same treatment in the parity test below once it lands.
"""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.artifact.digest import stamp_digest
from illia_export.artifact.manifest import EMBEDDED_NAME, Manifest, NoiseSpec, TensorSpec, write_sidecar
from illia_export.runtime import DeviceUnavailableError, load

tf = None  # imported by the fixture below: a TensorFlow import (~5 s) at collection costs every worker


@pytest.fixture(autouse=True, scope="module")
def _tensorflow():
    global tf
    tf = pytest.importorskip("tensorflow")

X3 = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 3.0], [0.0, 1.0, 0.0]], dtype=np.float32)


def _manifest(fmt: str, vectorized: bool = True) -> Manifest:
    s = ["samples"] if vectorized else []
    return Manifest(
        format=fmt,
        source="jax",
        inputs=[TensorSpec("input", ["batch", 3])],
        noise=[
            NoiseSpec("eps_fc_weights_distribution", "fc.weights_distribution", s + [2, 3]),
            NoiseSpec("eps_fc_bias_distribution", "fc.bias_distribution", s + [2]),
        ],
        outputs=[TensorSpec("output", s + ["batch", 2])],
        sample_axis=0 if vectorized else None,
        task="regression",
    )


def _module(single_model, vectorized: bool):
    wd, bd = single_model.fc.weights_distribution, single_model.fc.bias_distribution
    mu, sig = wd.mu.detach().numpy(), wd.sigma().detach().numpy()
    bmu, bsig = bd.mu.detach().numpy(), bd.sigma().detach().numpy()
    lead = [None] if vectorized else []

    class Single(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="input"),
                tf.TensorSpec(lead + [2, 3], tf.float32, name="eps_fc_weights_distribution"),
                tf.TensorSpec(lead + [2], tf.float32, name="eps_fc_bias_distribution"),
            ]
        )
        def serve(self, input, eps_fc_weights_distribution, eps_fc_bias_distribution):  # noqa: A002
            w = mu + sig * eps_fc_weights_distribution
            b = bmu + bsig * eps_fc_bias_distribution
            if vectorized:
                y = tf.einsum("bi,soi->sbo", input, w) + b[:, None, :]
            else:
                y = tf.matmul(input, w, transpose_b=True) + b
            return {"output": y}

    return Single()


@pytest.fixture(scope="module")
def tf_artifacts(tmp_path_factory, single_model):
    root = tmp_path_factory.mktemp("tf")
    out = {}
    for vectorized in (True, False):
        tag = "vec" if vectorized else "call"
        m = _module(single_model, vectorized)
        sm = root / f"single_{tag}_savedmodel"
        tf.saved_model.save(m, str(sm), signatures={"serving_default": m.serve})
        (sm / "assets").mkdir(exist_ok=True)
        man = _manifest("savedmodel", vectorized)
        stamp_digest(sm, man)  # as the exporters do: runtime.load refuses unverified manifests
        (sm / "assets" / EMBEDDED_NAME).write_text(man.to_json())
        out[f"savedmodel_{tag}"] = sm
        conv = tf.lite.TFLiteConverter.from_concrete_functions([m.serve.get_concrete_function()], m)
        lite = root / f"single_{tag}.tflite"
        lite.write_bytes(conv.convert())
        man = _manifest("tflite", vectorized)
        stamp_digest(lite, man)
        write_sidecar(man, lite)
        out[f"tflite_{tag}"] = lite
    return out


@pytest.mark.parametrize("fmt", ["tflite", "savedmodel"])
@pytest.mark.parametrize("tag", ["vec", "call"])
def test_tf_backends_match_onnx_for_the_same_seed(artifacts, tf_artifacts, fmt, tag):
    ref = load(artifacts["single_onnx"]).predict(X3, num_samples=6, seed=77)
    p = load(tf_artifacts[f"{fmt}_{tag}"])
    assert p.backend.name == fmt
    got = p.predict(X3, num_samples=6, seed=77)
    np.testing.assert_allclose(got.samples, ref.samples, rtol=1e-5, atol=1e-5)
    # the batch is resized between calls
    np.testing.assert_allclose(
        p.predict(X3[:1], num_samples=6, seed=77).samples, ref.samples[:, :1], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(p.predict(X3, num_samples=6, seed=77, chunk_size=4).samples, got.samples)


def test_tflite_refuses_cuda(tf_artifacts):
    with pytest.raises(DeviceUnavailableError, match="CPU only"):
        load(tf_artifacts["tflite_vec"], device="cuda")


def test_savedmodel_cuda_without_gpu(tf_artifacts):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees a GPU here")
    with pytest.raises(DeviceUnavailableError, match="no GPU"):
        load(tf_artifacts["savedmodel_vec"], device="cuda")


def test_jax_exports_match_onnx(tmp_path):
    jax_export = pytest.importorskip(
        "illia_export.exporters.jax.export",
        reason="the JAX exporter (illia_export.exporters.jax.export) has not landed",
    )
    nnx = pytest.importorskip("flax.nnx")
    jnn = pytest.importorskip("illia_export.nn.jax")
    model = jnn.Linear(3, 2, rngs=nnx.Rngs(0))
    x = X3
    preds = {}
    for fmt, name in (("onnx", "m.onnx"), ("tflite", "m.tflite"), ("savedmodel", "m_sm")):
        jax_export.export_jax(model, x, tmp_path / name, format=fmt, task="regression", validate=False)
        preds[fmt] = load(tmp_path / name).predict(x, num_samples=5, seed=9).samples
    np.testing.assert_allclose(preds["tflite"], preds["onnx"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(preds["savedmodel"], preds["onnx"], rtol=1e-5, atol=1e-5)
