"""Row-keyed noise (``row_ids``): a row's answer depends on (seed, S, its id, its inputs) only,
never on the batch it arrives in — what Ray Data partitions and request batchers need."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import illia_export  # noqa: E402
from illia_export.errors import InputError  # noqa: E402
from illia_export.runtime import load  # noqa: E402
from illia_export.runtime import noise as nz  # noqa: E402
from tests.runtime.conftest import DropoutNet  # noqa: E402

SEED = 99
S = 6
B = 9


@pytest.fixture(scope="module")
def dropout_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("rowkeyed")
    net = DropoutNet()
    out = {}
    for samples in ("vectorized", "per-call"):
        p = root / f"drop_{samples}.onnx"
        illia_export.export(net, torch.zeros(2, 6), p, format="onnx", samples=samples, mc_dropout=True,
                            task="classification")
        out[f"onnx_{samples}"] = p
    p = root / "drop.pt2"
    illia_export.export(net, torch.zeros(2, 6), p, format="pt2", mc_dropout=True, task="classification")
    out["pt2"] = p
    return out


def _x(n: int = B) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 6)).astype(np.float32)


def _by_partition(pred, x, ids, strategy, parts):
    """Predict `x` in shuffled pieces of the sizes in `parts`; reassemble rows in input order."""
    order = np.random.default_rng(len(parts)).permutation(len(x))
    out = np.empty((S, len(x), 3), dtype=np.float32)
    start = 0
    for size in parts:
        rows = order[start : start + size]
        res = pred.predict(x[rows], num_samples=S, seed=SEED, strategy=strategy, row_ids=ids[rows])
        out[:, rows] = res.samples
        start += size
    assert start == len(x)
    return out


CASES = [
    ("dropout", "onnx_vectorized", "fresh"),
    ("dropout", "onnx_vectorized", "bank"),
    ("dropout", "onnx_per-call", "fresh"),
    ("dropout", "pt2", "fresh"),
    ("dropout", "pt2", "bank"),
    ("mlp", "mlp_onnx_vectorized", "local"),
    ("mlp", "mlp_onnx_vectorized", "fresh"),
]


@pytest.mark.parametrize("family,key,strategy", CASES)
def test_rows_do_not_depend_on_the_partition(family, key, strategy, dropout_artifacts, artifacts):
    path = dropout_artifacts[key] if family == "dropout" else artifacts[key]
    pred = load(path)
    x = _x()
    ids = np.arange(100, 100 + B)
    whole = pred.predict(x, num_samples=S, seed=SEED, strategy=strategy, row_ids=ids).samples
    for parts in ([4, 5], [1, 2, 6], [1] * B):
        np.testing.assert_allclose(_by_partition(pred, x, ids, strategy, parts), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["fresh", "bank"])
def test_without_ids_rows_are_keyed_by_their_index(strategy, dropout_artifacts):
    """The default: predict(x) == predict(x, row_ids=range(B)) (one layout everywhere), so the
    same row at another position sees another dropout mask unless it carries its id (the
    invariance test above really tests the keying)."""
    pred = load(dropout_artifacts["onnx_vectorized"])
    x = _x()
    whole = pred.predict(x, num_samples=S, seed=SEED, strategy=strategy).samples
    np.testing.assert_array_equal(
        whole, pred.predict(x, num_samples=S, seed=SEED, strategy=strategy, row_ids=range(B)).samples
    )
    a = whole[:, 0]
    b = pred.predict(x[::-1].copy(), num_samples=S, seed=SEED, strategy=strategy).samples[:, -1]
    assert not np.allclose(a, b)
    ka = pred.predict(x, num_samples=S, seed=SEED, strategy=strategy, row_ids=np.arange(B)).samples[:, 0]
    kb = pred.predict(x[::-1].copy(), num_samples=S, seed=SEED, strategy=strategy,
                      row_ids=np.arange(B)[::-1].copy()).samples[:, -1]
    np.testing.assert_allclose(ka, kb, rtol=1e-5, atol=1e-6)


def test_local_rows_are_keyed_by_index_by_default_and_by_id_when_given(artifacts):
    pred = load(artifacts["mlp_onnx_vectorized"])
    x = _x()
    full = pred.predict(x, num_samples=S, seed=SEED, strategy="local").samples[:, 3]
    alone = pred.predict(x[3:4], num_samples=S, seed=SEED, strategy="local").samples[:, 0]
    assert not np.allclose(full, alone)  # default ids: position 3 vs position 0
    full = pred.predict(x, num_samples=S, seed=SEED, strategy="local", row_ids=np.arange(B)).samples[:, 3]
    alone = pred.predict(x[3:4], num_samples=S, seed=SEED, strategy="local", row_ids=[3]).samples[:, 0]
    np.testing.assert_allclose(full, alone, rtol=1e-5, atol=1e-6)


def test_weight_noise_is_not_keyed(artifacts):
    """An MLP's fresh/bank noise is weights only: row ids change nothing."""
    pred = load(artifacts["mlp_onnx_vectorized"])
    assert pred.row_keyed_streams("fresh") == []
    x = _x()
    a = pred.predict(x, num_samples=S, seed=SEED).samples
    b = pred.predict(x, num_samples=S, seed=SEED, row_ids=np.arange(7, 7 + B)).samples
    np.testing.assert_array_equal(a, b)


def test_keyed_noise_follows_the_documented_spec(dropout_artifacts):
    """Row b of stream k is the generator's stream of key mix64(stream_key(seed, k) + GOLDEN*(w+1)),
    checked element by element against the scalar reference (docs/noise.md)."""
    pred = load(dropout_artifacts["onnx_vectorized"], noise_impl="numpy")
    (k,) = pred.row_keyed_streams("fresh")
    spec = pred.manifest.noise[k]
    ids = np.array([5, 0, 2**40])
    got = pred.noise(3, SEED, row_ids=ids)[spec.name]
    assert got.shape == (3, 3, 16)
    for b, w in enumerate(ids.tolist()):
        key = nz.mix64_int(nz.stream_key(SEED, k) + nz.GOLDEN * (w + 1))
        for s in range(3):
            for i in (0, 7, 15):
                want = nz.v2_value(nz.v2_hash_int(key, s * 16 + i))
                assert got[s, b, i] == pytest.approx(want, abs=1e-6)


def test_equal_ids_get_equal_noise_and_strings_are_stable(dropout_artifacts):
    pred = load(dropout_artifacts["onnx_vectorized"])
    x = np.repeat(_x(1), 3, axis=0)
    out = pred.predict(x, num_samples=S, seed=SEED, row_ids=["a", "b", "a"]).samples
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    assert not np.allclose(out[:, 0], out[:, 1])
    want = int.from_bytes(hashlib.blake2b(b"a", digest_size=8).digest(), "little")
    assert nz.row_words(np.array(["a"]))[0] == want
    assert nz.row_words(np.array([b"a"], dtype=object))[0] == want
    assert nz.row_words(np.array([-1]))[0] == 2**64 - 1


@pytest.mark.parametrize(
    "ids,match",
    [
        (np.arange(B - 1), "8 ids for a batch of 9"),
        (np.arange(2 * B).reshape(B, 2), "one-dimensional"),
        (np.linspace(0, 1, B), "integers, strings or bytes"),
        (np.array([None] * B, dtype=object), "integers, strings or bytes"),
    ],
)
def test_bad_row_ids_are_refused(ids, match, dropout_artifacts):
    pred = load(dropout_artifacts["onnx_vectorized"])
    with pytest.raises(InputError, match=match):
        pred.predict(_x(), num_samples=2, seed=0, row_ids=ids)


def test_folded_batch_dims_cannot_be_keyed(dropout_artifacts):
    """A noise input laid out as 'k*batch' mixes rows with another axis: refused, input named."""
    from illia_export.errors import StrategyError

    pred = load(dropout_artifacts["onnx_vectorized"])
    (k,) = pred.row_keyed_streams("fresh")
    spec = pred.manifest.noise[k]
    spec.shape = [d if d != "batch" else "3*batch" for d in spec.shape]
    with pytest.raises(StrategyError, match=f"{spec.name}.*cannot be keyed"):
        pred.predict(_x(), num_samples=2, seed=0, row_ids=np.arange(B))
    # without explicit ids, such noise keeps the batch-wide layout instead of failing
    from illia_export.runtime.strategies import keyed_streams

    assert keyed_streams(pred.manifest.noise, strict=False) == []
