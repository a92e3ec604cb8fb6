"""JAX export: parity of every layer type x {savedmodel, tflite, onnx} x {vectorized, per-call}.

Artifacts are exported once per module (TF conversion is slow) and compared with the nnx model
fed the same noise through ``GaussianDistribution.set_noise`` at two batch sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from illia_export.artifact.manifest import read_manifest, sidecar_path
from illia_export.errors import ArtifactError, ExportError, ShapeError, ToleranceError
from illia_export.exporters.jax import export as jax_export
from illia_export.exporters.jax.export import export_jax, load_jax_model, save_jax_weights, tflite_ops
from illia_export.exporters.jax.noise import make_pure_function, model_distributions
from illia_export.nn.jax import LSTM, BatchEnsembleLinear, Conv1d, Conv2d, Embedding, Linear
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402
from tests.exporters.jax import _runners, models

FORMATS = ("savedmodel", "tflite", "onnx")
MODES = ("vectorized", "per-call")
SUFFIX = {"savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}

# name -> (factory, example input, validation batch sizes, dynamic axes, second batch size)
RNG = np.random.default_rng(0)
CASES = {
    "cnn": (models.CNN, RNG.standard_normal((2, 1, 7, 7)).astype(np.float32), None, None),
    "seq": (models.Seq, RNG.integers(0, 20, (2, 5)).astype(np.int32), None, {0: {1: "time"}}),
    "mixed": (models.Mixed, RNG.standard_normal((2, 2, 6)).astype(np.float32), [2, 4], None),
}
#: every layer type must be covered by some parity case (meta-test below)
COVERED = {
    "cnn": {Conv2d, Linear},
    "seq": {LSTM, Embedding},
    "mixed": {Conv1d, BatchEnsembleLinear, nnx.Linear, Linear},
}


@pytest.fixture(scope="module")
def built():
    return {name: case[0]() for name, case in CASES.items()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, built):
    """Lazily exported artifacts, one per (case, format, mode), shared by the module's tests."""
    root = tmp_path_factory.mktemp("jax_artifacts")
    cache: dict = {}

    def get(name: str, fmt: str, mode: str):
        key = (name, fmt, mode)
        if key not in cache:
            _, x, sizes, dyn = CASES[name]
            path = root / f"{name}-{mode}{SUFFIX[fmt]}"
            manifest = export_jax(built[name], x, path, fmt, samples=mode, batch_sizes=sizes, dynamic_axes=dyn)
            cache[key] = (path, manifest)
        return cache[key]

    return get


#: one jitted call shared by every test (compiled once per model and input shape)
_CALL = nnx.jit(lambda m, x: jax.tree_util.tree_leaves(m(x)))


def _reference(model, inputs, noise: dict[str, np.ndarray], vectorized: bool):
    """The nnx model itself with injected noise (a loop over samples when vectorized)."""
    dists = dict(model_distributions(model))
    by_name = {f"eps_{p.replace('.', '_')}": d for p, d in dists.items()}
    num = next(iter(noise.values())).shape[0] if vectorized else None
    outs = []
    for s in range(num or 1):
        for name, d in by_name.items():
            d.set_noise(noise[name][s] if vectorized else noise[name])
        outs.append([np.asarray(o) for o in _CALL(model, inputs)])
    for d in by_name.values():
        d.clear_noise()
    if not vectorized:
        return outs[0]
    return [np.stack([o[i] for o in outs]) for i in range(len(outs[0]))]


def _batch(x: np.ndarray, b: int) -> np.ndarray:
    return np.concatenate([x] * b, axis=0)[:b]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(CASES))
def test_parity_with_nnx_model(name, fmt, mode, artifacts, built):
    path, manifest = artifacts(name, fmt, mode)
    vectorized = mode == "vectorized"
    assert_validation_recorded(manifest)
    assert manifest.validation.num_noise_draws >= 3 and manifest.validation.includes_zero_noise
    assert len(manifest.validation.batch_sizes) == 2
    _, x, sizes, _ = CASES[name]
    rng = np.random.default_rng(7)
    out_names = [o.name for o in manifest.outputs]
    for b in sizes or [1, 3]:
        xb = _batch(x, b)
        lead = (3,) if vectorized else ()
        noise = {n.name: rng.standard_normal(lead + tuple(n.event_shape)).astype(np.float32) for n in manifest.noise}
        got = _runners.run(fmt, path, {manifest.inputs[0].name: xb, **noise}, out_names)
        want = _reference(built[name], jnp.asarray(xb), noise, vectorized)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert np.max(np.abs(g - w)) <= 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_noise_is_the_mean_weight_network(fmt, artifacts, built):
    path, manifest = artifacts("cnn", fmt, "vectorized")
    model = built["cnn"]
    x = _batch(CASES["cnn"][1], 3)
    zero = {n.name: np.zeros([2, *n.event_shape], np.float32) for n in manifest.noise}
    (got,) = _runners.run(fmt, path, {"input": x, **zero}, ["output"])
    # independent mean-weight forward with lax.conv on the mus
    mu = {p: np.asarray(d.mu[...]) for p, d in model_distributions(model)}

    def conv(h, w, b, stride, groups, pad):
        y = jax.lax.conv_general_dilated(h, w, (stride, stride), [(pad, pad)] * 2, feature_group_count=groups)
        return y + b[None, :, None, None]

    h = jax.nn.relu(conv(x, mu["conv1.weights_distribution"], mu["conv1.bias_distribution"], 1, 1, 1))
    h = jax.nn.relu(conv(h, mu["conv2.weights_distribution"], mu["conv2.bias_distribution"], 2, 2, 0))
    y = h.reshape(3, -1) @ mu["fc.weights_distribution"].T + mu["fc.bias_distribution"]
    np.testing.assert_allclose(got[0], y, atol=1e-4)
    np.testing.assert_allclose(got[1], y, atol=1e-4)


def test_lstm_sequence_length_is_dynamic(artifacts, built):
    for fmt in ("onnx", "tflite"):
        path, manifest = artifacts("seq", fmt, "per-call")
        assert manifest.inputs[0].shape == ["batch", "time"]
        tokens = np.random.default_rng(3).integers(0, 20, (2, 9)).astype(np.int32)
        noise = {n.name: np.random.default_rng(4).standard_normal(n.event_shape).astype(np.float32) for n in manifest.noise}
        got = _runners.run(fmt, path, {"input": tokens, **noise}, [o.name for o in manifest.outputs])
        want = _reference(built["seq"], jnp.asarray(tokens), noise, False)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_readable_and_graph_follows_contract(fmt, artifacts, built):
    path, manifest = artifacts("seq", fmt, "vectorized")
    read = read_manifest(path)
    assert read.to_dict() == manifest.to_dict()
    assert read.source == "jax" and read.format == fmt and read.sample_axis == 0
    paths = [p for p, _ in model_distributions(built["seq"])]
    assert [n.parameter for n in read.noise] == paths
    assert "lstm.embedding.weights_distribution" in paths
    assert all(n.shape[0] == "samples" and n.name == "eps_" + n.parameter.replace(".", "_") for n in read.noise)
    assert [o.name for o in read.outputs] == ["output_0", "output_1", "output_2"]
    assert read.outputs[0].shape == ["samples", "batch", 3]
    assert read.inputs[0].dtype == "int32"
    expected_inputs = ["input"] + [n.name for n in read.noise]
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        assert [i.name for i in graph.input] == expected_inputs
        assert [o.name for o in graph.output] == ["output_0", "output_1", "output_2"]
        ops = {n.op_type for n in jax_export.onnx_nodes(graph)}
        assert "Loop" in ops and not any(op.startswith("Random") for op in ops)
    elif fmt == "tflite":
        assert sidecar_path(path).exists()
        import tensorflow as tf

        sig = tf.lite.Interpreter(model_path=str(path)).get_signature_list()["serving_default"]
        assert sorted(sig["inputs"]) == sorted(expected_inputs)
    else:
        assert (path / "assets" / "illia_manifest.json").exists()
        import tensorflow as tf

        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        assert sorted(fn.structured_input_signature[1]) == sorted(expected_inputs)


def test_w1_mlp_tflite_has_builtin_ops_only(tmp_path):
    model = models.MLP((784, 512, 512, 10))
    path = tmp_path / "w1.tflite"
    # 670k weights: a 200-sample distribution check keeps the test short (the default is 1000)
    manifest = export_jax(
        model, np.zeros((2, 784), np.float32), path, "tflite", task="classification", distribution_samples=200
    )
    ops = tflite_ops(path.read_bytes())
    assert {"FULLY_CONNECTED", "BATCH_MATMUL"} & set(ops), ops
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    assert manifest.task == "classification" and manifest.validation.max_abs_diff <= 1e-4
    assert len(manifest.noise) == 6


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_validation_leaves_nothing(fmt, tmp_path, monkeypatch, built):
    real = jax_export.artifact_runner

    def broken(fmt, path):
        run = real(fmt, path)

        def shifted(feeds):
            return [o + 1e-2 for o in run(feeds)]

        shifted.order = getattr(run, "order", None)
        return shifted

    monkeypatch.setattr(jax_export, "artifact_runner", broken)
    path = tmp_path / f"bad{SUFFIX[fmt]}"
    with pytest.raises(ToleranceError, match="output"):
        export_jax(built["mixed"], CASES["mixed"][1], path, fmt, samples="per-call", batch_sizes=[2, 4])
    assert list(tmp_path.iterdir()) == []


def test_unexportable_layers_and_bad_options_raise(tmp_path):
    class WithDropout(nnx.Module):
        def __init__(self):
            r = nnx.Rngs(0)
            self.fc = Linear(4, 2, rngs=r)
            self.drop = nnx.Dropout(0.5, rngs=r)

        def __call__(self, x):
            return self.drop(self.fc(x))

    model = WithDropout()
    x = np.zeros((2, 4), np.float32)
    # a dropout in training mode is off unless mc_dropout asks for it (as on the torch side)
    manifest = export_jax(model, x, tmp_path / "t.onnx", "onnx", distribution_samples=0)
    assert [(d.path, d.sampled) for d in manifest.dropout] == [("drop", False)]
    assert all(n.kind == "weight" for n in manifest.noise)
    assert model.drop.deterministic is False  # the user's model is untouched
    model.eval()
    assert_validation_recorded(export_jax(model, x, tmp_path / "d.onnx", "onnx", distribution_samples=0))
    with pytest.raises(ExportError, match="deterministic=True"):
        export_jax(models.EnsembleOnly(), x, tmp_path / "e.onnx", "onnx")
    with pytest.raises(ExportError, match="torchscript"):
        export_jax(model, x, tmp_path / "x.pt", "torchscript")
    with pytest.raises(ShapeError, match="noise"):
        make_pure_function(model, vectorized=True)(x, {})
    assert not (tmp_path / "d.tflite").exists() and not (tmp_path / "e.onnx").exists()


def test_model_without_noise_exports_per_call(tmp_path):
    model = models.EnsembleOnly()
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    manifest = export_jax(
        model, x, tmp_path / "e.onnx", "onnx", samples="per-call", batch_sizes=[2, 4], deterministic=True
    )
    assert manifest.noise == []
    assert_validation_recorded(manifest)
    assert manifest.validation.batch_sizes == [2, 4]
    (got,) = _runners.run("onnx", tmp_path / "e.onnx", {"input": x}, ["output"])
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)


def test_cli_loader_roundtrip_and_no_pickle(tmp_path):
    trained = models.make_mlp(hidden=8, seed=3)
    weights = save_jax_weights(trained, tmp_path / "w.npz")
    loaded = load_jax_model("tests.exporters.jax.models:make_mlp", weights, hidden=8)
    for (p1, d1), (_, d2) in zip(model_distributions(trained), model_distributions(loaded)):
        np.testing.assert_array_equal(d1.mu[...], d2.mu[...], err_msg=p1)
        np.testing.assert_array_equal(d1.rho[...], d2.rho[...], err_msg=p1)
    # pickled object arrays are refused, missing/extra keys and bad shapes too
    np.savez(tmp_path / "evil.npz", obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError):
        load_jax_model("tests.exporters.jax.models:make_mlp", tmp_path / "evil.npz")
    with pytest.raises(ArtifactError, match="shape"):
        load_jax_model("tests.exporters.jax.models:make_mlp", weights, hidden=4)
    with pytest.raises(ArtifactError, match="factory"):
        load_jax_model("tests.exporters.jax.models", weights)
    with pytest.raises(ArtifactError, match="no attribute"):
        load_jax_model("tests.exporters.jax.models:nope", weights)


def test_every_layer_type_has_a_parity_case():
    import illia_export.nn.jax as layers

    public = {getattr(layers, n) for n in layers.__all__ if isinstance(getattr(layers, n), type)}
    layer_types = {t for t in public if issubclass(t, nnx.Module) and t is not layers.BayesianModule}
    covered = set().union(*COVERED.values())
    assert layer_types <= covered, layer_types - covered
    for name, types in COVERED.items():
        present = {type(m) for _, m in nnx.iter_modules(CASES[name][0]())}
        assert types <= present, (name, types - present)


def test_illia_export_export_routes_nnx_models(tmp_path):
    import illia_export

    model = models.make_mlp(hidden=8)
    x = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    manifest = illia_export.export(model, x, tmp_path / "mlp.onnx", "onnx", samples="per-call", task="classification")
    assert manifest.source == "jax" and manifest.task == "classification" and manifest.sample_axis is None
    assert read_manifest(tmp_path / "mlp.onnx").noise == manifest.noise


def test_safetensors_weights_roundtrip_or_clear_error(tmp_path):
    model = models.make_mlp(hidden=8, seed=2)
    try:
        import safetensors  # noqa: F401
    except ImportError:
        with pytest.raises(ExportError, match="pip install safetensors"):
            save_jax_weights(model, tmp_path / "w.safetensors")
        assert not (tmp_path / "w.safetensors").exists()
        return
    path = save_jax_weights(model, tmp_path / "w.safetensors")
    loaded = load_jax_model("tests.exporters.jax.models:make_mlp", path, hidden=8)
    for (_, a), (_, b) in zip(model_distributions(model), model_distributions(loaded)):
        np.testing.assert_array_equal(a.mu[...], b.mu[...])
