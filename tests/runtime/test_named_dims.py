"""Noise dims that follow any symbolic input dim (docs/noise.md, "Named dims"), and the
row-keyed default layout: a hand-built ONNX graph ``y = x + eps`` whose per-example noise is
``[samples, batch, seq_len, 4]``, so the outputs minus the inputs are the noise itself."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from illia_export.artifact.manifest import Manifest  # noqa: E402
from illia_export.errors import ManifestError  # noqa: E402
from illia_export.runtime import load  # noqa: E402
from illia_export.runtime import noise as nz  # noqa: E402

from .conftest import save_stamped  # noqa: E402

D = 4
SEED = 5


def manifest(noise_shape, generator="illia-noise-v2") -> dict:
    return {
        "contract": 2,
        "format": "onnx",
        "source": "torch",
        "task": "regression",
        "sample_axis": 0,
        "noise_generator": generator,
        "inputs": [{"name": "x", "shape": ["batch", "seq_len", D], "dtype": "float32"}],
        "noise": [
            {"name": "eps_tok", "parameter": "drop", "shape": noise_shape, "kind": "draw", "transform": "affine"}
        ],
        "outputs": [{"name": "y", "shape": ["samples", "batch", "seq_len", D], "dtype": "float32"}],
        "validation": None,
    }


def write_seq_onnx(path, noise_shape=("samples", "batch", "seq_len", D)) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq_len", D])
    eps = helper.make_tensor_value_info("eps_tok", TensorProto.FLOAT, list(noise_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["samples", "batch", "seq_len", D])
    graph = helper.make_graph([helper.make_node("Add", ["x", "eps_tok"], ["y"])], "seq", [x, eps], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    save_stamped(model, path, manifest(list(noise_shape)))


@pytest.fixture(scope="module")
def seq_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("named") / "seq.onnx"
    write_seq_onnx(p)
    return p


def _x(b=3, t=5):
    return np.random.default_rng(0).normal(size=(b, t, D)).astype(np.float32)


def test_manifest_accepts_named_dims_and_refuses_unknown_names():
    m = Manifest.from_dict(manifest(["samples", "batch", "seq_len", D]))
    assert m.noise[0].shape == ["samples", "batch", "seq_len", D]
    Manifest.from_dict(manifest(["samples", "2*seq_len", D]))
    with pytest.raises(ManifestError, match="'height', which no model input"):
        Manifest.from_dict(manifest(["samples", "batch", "height", D]))
    with pytest.raises(ManifestError, match="'3\\*width', which no model input|names 'width'"):
        Manifest.from_dict(manifest(["samples", "3*width"]))
    with pytest.raises(ManifestError, match="symbolic noise dim"):
        Manifest.from_dict(manifest(["samples", "batch", "0*seq_len"]))
    with pytest.raises(ManifestError, match="symbolic noise dim"):
        Manifest.from_dict(manifest(["batch", "samples", D]))  # samples only at axis 0


def test_named_dims_are_resolved_from_the_inputs(seq_path):
    pred = load(seq_path)
    assert pred.noise_shapes("fresh", 3, {"seq_len": 5}) == [(3, 5, D)]
    x = _x(3, 5)
    out = pred.predict(x, num_samples=4, seed=SEED).samples
    assert out.shape == (4, 3, 5, D)
    x7 = _x(2, 7)
    assert pred.predict(x7, num_samples=2, seed=SEED).samples.shape == (2, 2, 7, D)


def test_default_is_row_keyed_by_index(seq_path):
    """predict(x) == predict(x, row_ids=range(B)): one layout in every runtime (dims.md 2)."""
    pred = load(seq_path)
    x = _x(3, 5)
    a = pred.predict(x, num_samples=4, seed=SEED).samples
    b = pred.predict(x, num_samples=4, seed=SEED, row_ids=range(3)).samples
    np.testing.assert_array_equal(a, b)
    # row 2 alone with id 2 sees the same noise as at position 2 of the batch
    c = pred.predict(x[2:], num_samples=4, seed=SEED, row_ids=[2]).samples
    np.testing.assert_array_equal(a[:, 2:], c)


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_row_block_is_c_order_over_the_dims_after_batch(seq_path, chunk):
    """Row b's block is [seq_len, 4] in C order, counter s * n_row + i under the row's key —
    checked element by element against the scalar reference, for chunks smaller than S."""
    pred = load(seq_path, noise_impl="numpy")
    x = _x(3, 5)
    S = 4
    eps = pred.predict(x, num_samples=S, seed=SEED, chunk_size=chunk).samples - x[None]
    n_row = 5 * D
    for b in range(3):
        key = nz.mix64_int(nz.stream_key(SEED, 0) + nz.GOLDEN * (b + 1))
        for s in range(S):
            for t, d in ((0, 0), (1, 3), (4, 2)):
                want = nz.v2_value(nz.v2_hash_int(key, s * n_row + t * D + d))
                assert eps[s, b, t, d] == pytest.approx(want, abs=2e-6)


def test_noise_api_matches_predict(seq_path):
    pred = load(seq_path)
    x = _x(3, 5)
    got = pred.noise(4, SEED, batch_size=3, sizes={"seq_len": 5})["eps_tok"]
    eps = pred.predict(x, num_samples=4, seed=SEED).samples - x[None]
    np.testing.assert_allclose(got, eps, atol=2e-6)
