"""Generator selection in the runtime (manifest ``noise_generator``, ``predict(generator=)``)
and the ``fresh`` path that feeds ONNX graphs their sampled weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from illia_export.errors import ManifestError
from illia_export.runtime import load
from illia_export.runtime.noise import GENERATOR_V1, GENERATOR_V2, reference

X = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)


def _with_generator(src, dst, generator: str):
    """A copy of an ONNX artifact whose manifest names `generator`."""
    import onnx

    from illia_export.artifact.digest import stamp_digest
    from illia_export.artifact.manifest import ONNX_METADATA_KEY, Manifest

    model = onnx.load(str(src))
    local = src.parent / src.name.replace(".onnx", ".local.onnx")
    if local.exists():
        shutil.copy(local, dst.parent / local.name)
    onnx.save(model, str(dst))
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            manifest = Manifest.from_json(prop.value)
            manifest.noise_generator = generator
            stamp_digest(dst, manifest)  # a re-export naming another generator carries its own digest
            prop.value = manifest.to_json()
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("generator", [GENERATOR_V1, GENERATOR_V2])
def test_the_manifest_names_the_generator(artifacts, tmp_path, generator, single_model):
    path = _with_generator(artifacts["single_onnx"], tmp_path / "single.onnx", generator)
    p = load(path)
    assert p.generator == generator
    pred = p.predict(X[:, :3], num_samples=4, seed=5)
    assert pred.noise_generator == generator and pred.to_dict()["noise_generator"] == generator
    # the samples are the single Linear layer's output for that generator's noise
    ref = reference(generator)
    wd, bd = single_model.fc.weights_distribution, single_model.fc.bias_distribution
    w = wd.mu.detach().numpy() + wd.sigma().detach().numpy() * ref(5, 0, (2, 3), 0, 4)
    b = bd.mu.detach().numpy() + bd.sigma().detach().numpy() * ref(5, 1, (2,), 0, 4)
    expected = np.einsum("bi,soi->sbo", X[:, :3], w) + b[:, None, :]
    np.testing.assert_allclose(pred.samples, expected, rtol=1e-5, atol=1e-5)


def test_generator_override_and_its_errors(artifacts, tmp_path):
    p = load(artifacts["mlp_onnx_vectorized"])
    other = GENERATOR_V2 if p.generator == GENERATOR_V1 else GENERATOR_V1
    default = p.predict(X, num_samples=6, seed=3)
    override = p.predict(X, num_samples=6, seed=3, generator=other)
    assert default.noise_generator == p.generator and override.noise_generator == other
    assert not np.allclose(default.samples, override.samples)
    # noise() reports what the graph got, for either generator
    eps = p.noise(6, 3, generator=GENERATOR_V2)
    name = p.manifest.noise[0].name
    np.testing.assert_allclose(eps[name], reference(GENERATOR_V2)(3, 0, eps[name].shape[1:], 0, 6), atol=1e-6)
    with pytest.raises(ValueError, match="generator"):
        p.predict(X, num_samples=2, seed=0, generator="illia-noise-v7")
    bad = _with_generator(artifacts["mlp_onnx_vectorized"], tmp_path / "bad.onnx", "illia-noise-v7")
    with pytest.raises(ManifestError, match="unknown noise generator 'illia-noise-v7'"):
        load(bad)


@pytest.mark.parametrize("generator", [GENERATOR_V1, GENERATOR_V2])
@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_onnx_per-call"])
def test_feeding_sampled_weights_changes_nothing(artifacts, key, generator):
    fed = load(artifacts[key])
    plain = load(artifacts[key], feed_weights=False)
    a = fed.predict(X, num_samples=7, seed=11, generator=generator)
    b = plain.predict(X, num_samples=7, seed=11, generator=generator)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-6, atol=1e-6)
    # the weight plan covered every noise input of the MLP (its graph uses eps only as mu+sigma*eps)
    shapes = fed.noise_shapes("fresh", len(X))
    plan = fed.backend.weight_plan(shapes, fed.manifest.vectorized)
    assert plan is not None and all(pair is not None for pair in plan.pairs)
    assert plain.backend.weight_plan(shapes, fed.manifest.vectorized) is None
    # fresh (weights fed) and bank (noise-only prefix precomputed) see the same noise
    c = fed.predict(X, num_samples=7, seed=11, generator=generator, strategy="bank")
    np.testing.assert_allclose(a.samples, c.samples, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("generator", [GENERATOR_V1, GENERATOR_V2])
@pytest.mark.parametrize("strategy", ["fresh", "bank", "local"])
def test_chunking_does_not_change_v2_results(artifacts, generator, strategy):
    p = load(artifacts["mlp_onnx_vectorized"])
    ref = p.predict(X, num_samples=7, seed=2, strategy=strategy, generator=generator).samples
    for chunk in (1, 3, 100):
        got = p.predict(X, num_samples=7, seed=2, strategy=strategy, generator=generator, chunk_size=chunk)
        np.testing.assert_array_equal(got.samples, ref)


def test_onnx_and_torchscript_agree_with_v2(artifacts):
    a = load(artifacts["mlp_onnx_vectorized"]).predict(X, num_samples=5, seed=4, generator=GENERATOR_V2)
    b = load(artifacts["mlp_torchscript_vectorized"]).predict(
        X, num_samples=5, seed=4, generator=GENERATOR_V2
    )
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-5, atol=1e-5)


def test_graphs_with_control_flow_or_other_noise_uses_take_eps(artifacts):
    lstm = load(artifacts["lstm_onnx"])  # ONNX Loop: left alone
    shapes = lstm.noise_shapes("fresh", 2)
    assert lstm.backend.weight_plan(shapes, lstm.manifest.vectorized) is None


# ------------------------------------------------------------------ local: first layer per batch
def test_local_runs_sample_independent_layers_once_per_batch(artifacts):
    """The local variant repeats x over the samples; the runtime rewrites it so that layer 1's
    x·mu and x²·sigma² run on B rows, not S*B. Same numbers, and the rewrite is in use."""
    import onnx

    from illia_export.runtime.backends.ort_hoist import hoist_sample_broadcast

    fast = load(artifacts["mlp_onnx_vectorized"])
    slow = load(artifacts["mlp_onnx_vectorized"], hoist_broadcast=False)
    for seed in (0, 1):  # the first call checks the rewrite against the original graph
        a = fast.predict(X, num_samples=9, seed=seed, strategy="local", generator=GENERATOR_V2)
        b = slow.predict(X, num_samples=9, seed=seed, strategy="local", generator=GENERATOR_V2)
        np.testing.assert_allclose(a.samples, b.samples, rtol=1e-5, atol=1e-6)
    local = fast.local_backend()
    assert local._hoisted and local._hoisted[1], "the per-batch rewrite was not used"
    assert slow.local_backend()._hoisted is False
    # in the rewritten graph the first Gemm reads the model input itself, not its S copies
    rewritten = onnx.load_from_string(hoist_sample_broadcast(str(local.path), local.input_names))
    first = [n for n in rewritten.graph.node if n.op_type in ("Gemm", "MatMul")][0]
    assert first.input[0] == "input" and "Expand" not in {n.op_type for n in rewritten.graph.node}
    # graphs without a repeated input are left alone
    assert hoist_sample_broadcast(str(fast.path), fast.backend.input_names) is None


def test_a_wrong_rewrite_is_caught_on_the_first_call(artifacts, monkeypatch):
    """If the rewritten graph disagreed with the original, the backend keeps the original."""
    from illia_export.runtime.backends import ort_hoist

    real = ort_hoist.hoist_sample_broadcast

    def broken(path, names):
        import onnx
        from onnx import numpy_helper

        m = onnx.load_from_string(real(path, names))
        for t in m.graph.initializer:  # corrupt the first layer's mean weights in the rewrite
            if t.name.endswith("fc1.weights_distribution.mu"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1.0, t.name))
        return m.SerializeToString()

    monkeypatch.setattr(ort_hoist, "hoist_sample_broadcast", broken)
    p = load(artifacts["mlp_onnx_vectorized"])
    ref = load(artifacts["mlp_onnx_vectorized"], hoist_broadcast=False)
    for _ in range(2):
        a = p.predict(X, num_samples=4, seed=3, strategy="local")
        np.testing.assert_allclose(
            a.samples, ref.predict(X, num_samples=4, seed=3, strategy="local").samples, atol=1e-6
        )
    assert p.local_backend()._hoisted is False


def test_a_manifest_without_the_field_means_v1(tmp_path):
    """Artifacts written before `noise_generator` existed drew v1 noise: their seeds must keep
    reproducing whatever new exports default to."""
    from tests.runtime.conftest import MULTI_MANIFEST, write_multi_output_onnx

    assert "noise_generator" not in MULTI_MANIFEST
    path = tmp_path / "old.onnx"
    write_multi_output_onnx(path, MULTI_MANIFEST)
    p = load(path)
    assert p.generator == GENERATOR_V1
    pred = p.predict(X[:, :2], num_samples=3, seed=0)
    eps = reference(GENERATOR_V1)(0, 0, (2,), 0, 3)
    np.testing.assert_allclose(pred.outputs["y"], X[None, :, :2] * eps[:, None, :], atol=1e-6)
