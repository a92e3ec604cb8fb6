"""Heteroscedastic Flax-NNX regressors exported with a likelihood (ONNX and TFLite).

The models return a dict or a named tuple; the output names are the keys / fields, in the
model's order. The runtime's mixture summaries equal a direct Monte Carlo computation on the
source nnx model fed the same noise (one eager call per sample with ``set_noise``): both
evaluate the same float32 network for the same eps, so they agree to float32 rounding
(rtol 1e-4; validation bounds the graph-vs-model difference by 1e-4 absolute per output).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import illia_export  # noqa: E402
from illia_export.errors import ExportError  # noqa: E402
from illia_export.exporters.jax.noise import model_distributions  # noqa: E402
from illia_export.nn.jax import Linear  # noqa: E402
from illia_export.runtime import load  # noqa: E402

S = 32


class MeanStd(NamedTuple):
    mean: jax.Array
    softplus_std: jax.Array


class DictRegressor(nnx.Module):
    """3 -> 8 -> {"mean": [B, 1], "log_variance": [B, 1]} (insertion order, not sorted)."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(params=seed, sample=seed + 1)
        self.hidden = Linear(3, 8, rngs=r)
        self.mean_head = Linear(8, 1, rngs=r)
        self.scale_head = Linear(8, 1, rngs=r)
        for _, dist in model_distributions(self):
            dist.mu.set_value(0.5 * jax.random.normal(jax.random.key(seed), dist.mu.get_value().shape))
            dist.rho.set_value(jnp.full(dist.rho.get_value().shape, -2.0))  # sigma ~ 0.13

    def features(self, x):
        return jnp.tanh(self.hidden(x))

    def __call__(self, x):
        h = self.features(x)
        return {"mean": self.mean_head(h), "log_variance": self.scale_head(h)}


class TupleRegressor(DictRegressor):
    def __call__(self, x):
        h = self.features(x)
        return MeanStd(self.mean_head(h), self.scale_head(h))


class BadRegressor(DictRegressor):
    def __call__(self, x):
        h = self.features(x)
        return {"mean": self.mean_head(h), "sigma": self.scale_head(h)}


def _direct(model, x, predictor, seed):
    """Per-sample outputs of the eager nnx model with the runtime's noise: {name: [S, B, 1]}."""
    noise = predictor.noise(S, seed)
    dists = dict(model_distributions(model))
    outs: dict[str, list] = {}
    for s in range(S):
        for spec in predictor.manifest.noise:
            dists[spec.parameter].set_noise(jnp.asarray(noise[spec.name][s]))
        try:
            out = model(jnp.asarray(x))
        finally:
            for spec in predictor.manifest.noise:
                dists[spec.parameter].clear_noise()
        items = out.items() if isinstance(out, dict) else zip(out._fields, out)
        for k, v in items:
            outs.setdefault(k, []).append(np.asarray(v))
    return {k: np.stack(v) for k, v in outs.items()}


@pytest.mark.parametrize(
    ("model_cls", "fmt", "name", "df"),
    [
        (DictRegressor, "onnx", "gaussian", None),
        (DictRegressor, "tflite", "laplace", None),
        (TupleRegressor, "onnx", "student_t", 5.0),
        (TupleRegressor, "tflite", "gaussian", None),
    ],
)
def test_runtime_mixture_matches_direct_mc_on_the_nnx_model(tmp_path, model_cls, fmt, name, df):
    if fmt == "tflite":
        pytest.importorskip("tensorflow")
    model = model_cls()
    path = tmp_path / f"reg.{fmt}"
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    # scale omitted: inferred from the output names
    manifest = illia_export.export(model, x[:2], path, format=fmt, task="regression", likelihood=name, df=df)
    kind = "log_variance" if model_cls is DictRegressor else "softplus_std"
    assert [o.name for o in manifest.outputs] == ["mean", kind]  # the model's order, not sorted
    lk = manifest.likelihood
    assert (lk.name, lk.mean, lk.scale, lk.scale_kind, lk.df) == (name, "mean", kind, kind, df)
    predictor = load(path)
    assert predictor.manifest.likelihood == lk
    pred = predictor.predict(x, num_samples=S, seed=3)
    direct = _direct(model, x, predictor, seed=3)
    loc = direct["mean"].astype(np.float64)
    raw = direct[kind].astype(np.float64)
    scale = np.exp(raw / 2) if kind == "log_variance" else np.log1p(np.exp(raw))
    factor = {"gaussian": 1.0, "laplace": 2.0, "student_t": 5.0 / 3.0}[name]
    aleatoric = (factor * scale**2).mean(axis=0)
    epistemic = loc.var(axis=0)
    np.testing.assert_allclose(pred.mean, loc.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.aleatoric_variance, aleatoric, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.epistemic_variance, epistemic, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(pred.predictive_variance, aleatoric + epistemic, rtol=1e-4, atol=1e-6)
    assert np.all(epistemic > 1e-4)


def test_named_outputs_must_say_which_is_the_scale(tmp_path):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ExportError, match="which parameterization"):
        illia_export.export(
            BadRegressor(), x, tmp_path / "bad.onnx", task="regression", likelihood="gaussian"
        )
    # an explicit scale makes the positional convention apply: output 1 ("sigma") is the scale
    manifest = illia_export.export(
        BadRegressor(),
        x,
        tmp_path / "ok.onnx",
        task="regression",
        likelihood="gaussian",
        scale="std",
        validate=False,
    )
    assert (manifest.likelihood.mean, manifest.likelihood.scale) == ("mean", "sigma")
    with pytest.raises(ExportError, match="task='regression'"):
        illia_export.export(
            DictRegressor(), x, tmp_path / "c.onnx", task="classification", likelihood="gaussian"
        )
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "c.onnx").exists()
