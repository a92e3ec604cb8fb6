"""Frozen-bank ONNX artifacts: the bank of (seed, S) baked in, summary outputs, one input."""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.artifact.manifest import read_manifest
from illia_export.errors import ArtifactError, IlliaExportError, InputError, StrategyError
from illia_export.runtime import freeze_bank, load

ort = pytest.importorskip("onnxruntime")

SEED = 77
S = 9


def _run(path, x) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == 1  # the model's input only: the noise is baked in
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: x})))


def _x(rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(rows, cols)).astype(np.float32)


def test_classification_matches_bank(artifacts, tmp_path):
    out = freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    x = _x(6, 6)
    got = _run(out, x)
    assert sorted(got) == sorted(["probabilities", "predicted_class", "predictive_entropy", "mutual_information"])
    ref = load(artifacts["mlp_onnx_vectorized"]).predict(x, num_samples=S, seed=SEED, strategy="bank")
    for name in ("probabilities", "predictive_entropy", "mutual_information"):
        assert got[name].shape == getattr(ref, name).shape
        np.testing.assert_allclose(got[name], getattr(ref, name), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got["predicted_class"], ref.predicted_class)
    # another seed gives other numbers: the noise really is the seed's bank
    other = load(artifacts["mlp_onnx_vectorized"]).predict(x, num_samples=S, seed=SEED + 1, strategy="bank")
    assert np.abs(got["probabilities"] - other.probabilities).max() > 1e-4


def test_regression_matches_bank(artifacts, tmp_path):
    out = freeze_bank(artifacts["single_onnx"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    x = _x(5, 3)
    got = _run(out, x)
    assert sorted(got) == ["mean", "std"]
    ref = load(artifacts["single_onnx"]).predict(x, num_samples=S, seed=SEED, strategy="bank")
    np.testing.assert_allclose(got["mean"], ref.mean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["std"], ref.std, atol=1e-5, rtol=0)  # population std (ddof=0)
    assert got["mean"].shape == (5, 2)


def test_rows_are_independent(artifacts, tmp_path):
    out = freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    x = _x(6, 6)
    batch = _run(out, x)
    for row in (0, 4):
        alone = _run(out, x[row : row + 1])
        for name, value in batch.items():
            assert alone[name].shape[0] == 1
            np.testing.assert_allclose(alone[name][0], value[row], atol=1e-6, rtol=0)


def test_manifest_and_load_refusal(artifacts, tmp_path):
    import onnx

    out = freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    assert onnx.load(str(out)).ir_version <= 10
    m = read_manifest(out)
    assert m.contract == 2 and m.noise == [] and m.sample_axis is None
    assert [t.name for t in m.outputs] == ["probabilities", "predicted_class", "predictive_entropy", "mutual_information"]
    info = m.extra["frozen_bank"]
    assert info["samples"] == S and info["seed"] == SEED
    assert info["noise_generator"] == read_manifest(artifacts["mlp_onnx_vectorized"]).noise_generator
    with pytest.raises(ArtifactError, match="frozen-bank"):
        load(out)
    with pytest.raises(ArtifactError, match="frozen-bank"):  # not frozen twice either
        freeze_bank(out, tmp_path / "twice.onnx", num_samples=S, seed=SEED)


def test_bad_inputs(artifacts, tmp_path):
    with pytest.raises(StrategyError, match="per-call"):
        freeze_bank(artifacts["mlp_onnx_per-call"], tmp_path / "f.onnx", num_samples=S, seed=SEED)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="num_samples"):
            freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "f.onnx", num_samples=bad, seed=SEED)
    with pytest.raises(InputError, match="seed"):
        freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "f.onnx", num_samples=S, seed=-1)
    with pytest.raises(ArtifactError, match="ONNX"):
        freeze_bank(artifacts["mlp_torchscript_vectorized"], tmp_path / "f.onnx", num_samples=S, seed=SEED)
    with pytest.raises(IlliaExportError):  # never over its own input
        freeze_bank(artifacts["mlp_onnx_vectorized"], artifacts["mlp_onnx_vectorized"], num_samples=S, seed=SEED)
    assert not (tmp_path / "f.onnx").exists()


def test_cli_freeze_writes_the_bank_of_that_seed(artifacts, tmp_path, capsys):
    from illia_export.cli import main

    out = tmp_path / "frozen.onnx"
    assert main(["freeze", str(artifacts["mlp_onnx_vectorized"]), "-o", str(out), "-S", str(S), "--seed", str(SEED)]) == 0
    assert "9 samples of seed 77" in capsys.readouterr().out
    x = _x(4, 6)
    ref = load(artifacts["mlp_onnx_vectorized"]).predict(x, num_samples=S, seed=SEED, strategy="bank")
    np.testing.assert_allclose(_run(out, x)["probabilities"], ref.probabilities, atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra,message", [(["-S", "0", "--seed", "1"], "--samples"), (["-S", "2", "--seed", "-1"], "--seed")])
def test_cli_freeze_refuses_bad_counts(artifacts, tmp_path, capsys, extra, message):
    from illia_export.cli import main

    assert main(["freeze", str(artifacts["mlp_onnx_vectorized"]), "-o", str(tmp_path / "f.onnx"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "\n" not in err.strip()
    assert not (tmp_path / "f.onnx").exists()


@pytest.fixture(scope="module")
def dropout_onnx(tmp_path_factory):
    """The MC-dropout classifier of the runtime tests (masks: per-example noise [S, batch, 16])."""
    import torch

    import illia_export

    from .conftest import DropoutNet

    path = tmp_path_factory.mktemp("frozen_dropout") / "dropout.onnx"
    illia_export.export(DropoutNet().eval(), torch.zeros(2, 6), path, task="classification", mc_dropout=True)
    return path


def _run_rows(path, x, row_id) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "row_id"]
    feeds = {"input": x, "row_id": np.asarray(row_id, dtype=np.int64)}
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_mc_dropout_freezes_with_row_keyed_masks(dropout_onnx, tmp_path):
    """Dropout masks are generated in the graph from each row's id with illia-noise-v2: any ONNX server
    then returns what predict(..., row_ids=ids) returns for those rows, whatever the batching."""
    out = freeze_bank(dropout_onnx, tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    m = read_manifest(out)
    assert [t.name for t in m.inputs] == ["input", "row_id"]
    assert m.extra["frozen_bank"]["row_keyed_noise"] == [n.name for n in read_manifest(dropout_onnx).noise]
    x = _x(7, 6)
    ids = np.array([5, -3, 0, 2**40, 11, 12, 7])
    got = _run_rows(out, x, ids)
    ref = load(dropout_onnx).predict(x, num_samples=S, seed=SEED, strategy="bank", row_ids=ids)
    np.testing.assert_allclose(got["probabilities"], ref.probabilities, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["mutual_information"], ref.mutual_information, atol=1e-5, rtol=0)
    # partition invariance: a row alone, with its id, gets the same answer
    alone = _run_rows(out, x[3:4], ids[3:4])
    np.testing.assert_allclose(alone["probabilities"][0], got["probabilities"][3], atol=1e-6, rtol=0)
    # the id really drives the masks (so the guard above can fail): another id, other numbers
    moved = _run_rows(out, x[3:4], [ids[3] + 1])
    assert np.abs(moved["probabilities"][0] - got["probabilities"][3]).max() > 1e-4


def test_frozen_row_noise_equals_the_reference_generator(tmp_path):
    """The in-graph generator against the numpy reference of docs/noise.md, element by element,
    for a batch axis that is not the first noise dim."""
    from onnx import TensorProto, helper

    from illia_export.runtime.frozen_rows import MIN_OPSET, RowNoiseBuilder
    from illia_export.runtime.noise import GENERATOR_V2, row_words, standard_normal_rows

    builder = RowNoiseBuilder("row_id", seed=123, num_samples=3)
    out = builder.noise(stream=2, row_shape=[4, 5], batch_axis=1)  # noise shape [S, 4, batch, 5]
    graph = helper.make_graph(
        builder.nodes, "rows", [helper.make_tensor_value_info("row_id", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MIN_OPSET)], ir_version=9)
    ids = np.array([0, 1, -1, 987654321012], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"row_id": ids})[0]
    want = standard_normal_rows(GENERATOR_V2, 123, 2, row_words(ids), [4, 5], 0, 3, use_kernel=False)
    want = np.moveaxis(want, 1, 2)  # rows at axis 2 of [S, 4, batch, 5]
    assert got.shape == want.shape == (3, 4, 4, 5)
    np.testing.assert_allclose(got, want, rtol=0, atol=6e-7 * np.maximum(1, np.abs(want)).max())


def test_frozen_rows_refuse_v1_generator(dropout_onnx, tmp_path):
    with pytest.raises(StrategyError, match="illia-noise-v2"):
        freeze_bank(dropout_onnx, tmp_path / "f.onnx", num_samples=S, seed=SEED, generator="illia-noise-v1")
    assert not (tmp_path / "f.onnx").exists()


def test_flipout_freezes_weights_and_row_keyed_signs(tmp_path):
    """bayesian-torch Flipout: weight noise baked in, the per-example signs generated per row."""
    import torch

    import illia_export

    layers = pytest.importorskip("bayesian_torch.layers")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = layers.LinearFlipout(6, 16), layers.LinearFlipout(16, 3)

        def forward(self, x):
            h, _ = self.a(x)
            y, _ = self.b(torch.relu(h))
            return y

    torch.manual_seed(0)
    src = tmp_path / "flip.onnx"
    illia_export.export(Net().eval(), torch.zeros(2, 6), src, task="classification")
    out = freeze_bank(src, tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    kinds = {n.name: n.kind for n in read_manifest(src).noise}
    assert sorted(read_manifest(out).extra["frozen_bank"]["row_keyed_noise"]) == sorted(
        n for n, k in kinds.items() if k == "flipout_sign"
    )
    x, ids = _x(5, 6), np.arange(10, 15)
    got = _run_rows(out, x, ids)
    ref = load(src).predict(x, num_samples=S, seed=SEED, strategy="bank", row_ids=ids)
    np.testing.assert_allclose(got["probabilities"], ref.probabilities, atol=1e-5, rtol=0)
