"""The runtime's speed paths give the original graph's numbers: grouped convolutions on
onnxruntime (``ort_conv``), fed weights and cached bank weights on ``.pt2``.

Each test checks that the speed path was taken (so a matcher that stops matching fails here)
and that, fed the same noise, it returns what the artifact's own graph returns.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import illia_export  # noqa: E402
from illia_export.nn.torch import Conv1d, Conv2d, Linear  # noqa: E402
from illia_export.runtime import load  # noqa: E402
from illia_export.runtime.backends import ort_conv  # noqa: E402
from tests.exporters.torch import families  # noqa: E402

S, B = 5, 3


class SmallCNN(torch.nn.Module):
    """Two sampled convolutions with ReLU and pooling between them (the W2 shape, smaller)."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = Conv2d(2, 4, 3)
        self.conv2 = Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.fc = Linear(6, 3)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


class SmallConv1d(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = Conv1d(2, 4, 3, stride=2, padding=1)
        self.fc = Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean(dim=2))


def _export(model, x, path, **kwargs):
    illia_export.export(model, x, path, format="onnx", validate=False, **kwargs)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """``small(fmt, **conv_args)``: SmallCNN(**conv_args) exported as `fmt` once for the module
    (the tests only read the file: the fresh and bank checks of one model share it)."""
    root = tmp_path_factory.mktemp("speedpaths")
    paths: dict = {}

    def get(fmt: str = "onnx", **conv_args):
        key = (fmt, tuple(sorted(conv_args.items())))
        if key not in paths:
            path = root / f"cnn{len(paths)}.{fmt}"
            illia_export.export(SmallCNN(**conv_args).eval(), torch.randn(2, 2, 14, 14), path, format=fmt, validate=False)
            paths[key] = path
        return paths[key]

    return get


def _predict_both(path, x, strategy):
    """Predictions of the grouped-convolution path and of the original graph, same seed."""
    fast = load(path, threads=1)
    slow = load(path, threads=1, grouped_conv=False)
    got = fast.predict(x, num_samples=S, seed=7, strategy=strategy).samples
    again = fast.predict(x, num_samples=S, seed=7, strategy=strategy).samples  # the checked session
    want = slow.predict(x, num_samples=S, seed=7, strategy=strategy).samples
    return fast, got, again, want


def _verified_runners(backend) -> list:
    runners = [r for r in backend._conv.values() if r is not None]
    return [r for r in runners if any(e and e[1] for e in r._sessions.values())]


@pytest.mark.parametrize("strategy", ["fresh", "bank"])
@pytest.mark.parametrize(
    "conv_args", [{}, {"stride": 2, "padding": 1}, {"dilation": 2, "padding": 2}, {"groups": 2}]
)
def test_grouped_conv_same_numbers(small, strategy, conv_args):
    x = np.random.default_rng(1).standard_normal((B, 2, 14, 14)).astype("float32")
    fast, got, again, want = _predict_both(small(**conv_args), x, strategy)
    assert _verified_runners(fast.backend), "the grouped-convolution rewrite was not used"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again, want, rtol=1e-5, atol=1e-5)


def test_conv_sites_read_the_parameters(small):
    path = small(stride=2, padding=1, dilation=2)
    sites = ort_conv.find_conv_sites(onnx.load(str(path)))
    assert [(s.channels, s.out_channels, s.kernel, s.strides, s.pads, s.dilations) for s in sites] == [
        (2, 4, (3, 3), (1, 1), (0, 0), (1, 1)),
        (4, 6, (3, 3), (2, 2), (1, 1), (2, 2)),
    ]
    assert sites[0].shared is not None  # the first layer convolves the model input once
    assert sites[1].shared is None


def test_grouped_conv_chains_channel_local_ops(small):
    """ReLU and pooling between two sampled convolutions run on the grouped layout: the
    rewritten graph transposes activations only after the last convolution."""
    model = onnx.load(str(small()))
    rewritten = onnx.load_from_string(ort_conv.rewrite(model, ort_conv.find_conv_sites(model), S))
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Conv") == 2 and "Gather" not in ops
    first, second = (k for k, n in enumerate(rewritten.graph.node) if n.op_type == "Conv")
    between = ops[first:second]
    assert "Transpose" not in between and "Relu" in between and "MaxPool" in between


def test_conv1d_same_numbers(tmp_path):
    path = _export(SmallConv1d().eval(), torch.randn(2, 2, 11), tmp_path / "c1.onnx")
    fast, got, _, want = _predict_both(
        path, np.random.default_rng(0).standard_normal((B, 2, 11)).astype("float32"), "fresh"
    )
    assert _verified_runners(fast.backend)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["bt_hand_conv", "torchbnn_cnn", "bt_flipout"])
def test_grouped_conv_foreign_families(tmp_path, case):
    model, x = getattr(families, case)()
    path = _export(model.eval(), x, tmp_path / f"{case}.onnx")
    for strategy in ("fresh", "bank"):
        fast, got, _, want = _predict_both(path, x.numpy(), strategy)
        assert _verified_runners(fast.backend), f"{case}/{strategy}: the rewrite was not used"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_wrong_rewrite_falls_back_to_the_original_graph(small, monkeypatch):
    """A rewrite that computes something else is caught on its first call and never used."""
    path = small()
    real = ort_conv.rewrite

    def off_by_one(model, sites, num_samples):
        # the wrong sample count: reshapes that fit, numbers that do not
        return real(model, sites, num_samples + 1) if num_samples > 1 else real(model, sites, num_samples)

    monkeypatch.setattr(ort_conv, "rewrite", off_by_one)
    x = np.random.default_rng(0).standard_normal((B, 2, 14, 14)).astype("float32")
    fast, got, again, want = _predict_both(path, x, "fresh")
    assert not _verified_runners(fast.backend)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again, want)


def test_grouped_conv_leaves_mlp_graphs_alone(tmp_path):
    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    path = _export(MLP().eval(), torch.randn(2, 4), tmp_path / "m.onnx")
    p = load(path, threads=1)
    p.predict(np.ones((2, 4), "float32"), num_samples=3, seed=0)
    assert all(r is None for r in p.backend._conv.values())


# --------------------------------------------------------------------------------------- .pt2
class SmallMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.fc2 = Linear(6, 8), Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _pt2_both(path, x, strategy, num_samples=S):
    fast = load(path, threads=1)
    slow = load(path, threads=1, fast_paths=False)
    got = [fast.predict(x, num_samples=num_samples, seed=3, strategy=strategy).samples for _ in range(2)]
    want = slow.predict(x, num_samples=num_samples, seed=3, strategy=strategy).samples
    return fast, got, want


def _pt2_rewrites(backend) -> list:
    return [r for r in backend.__dict__.get("_fast_modules", {}).values() if r is not None and r.verified]


@pytest.mark.parametrize("strategy", ["fresh", "bank"])
def test_pt2_fed_weights_same_numbers(tmp_path, strategy):
    path = tmp_path / "mlp.pt2"
    illia_export.export(SmallMLP().eval(), torch.randn(2, 6), path, format="pt2", validate=False)
    x = np.random.default_rng(0).standard_normal((B, 6)).astype("float32")
    fast, got, want = _pt2_both(path, x, strategy)
    fed = [r for r in _pt2_rewrites(fast.backend) if any(p is not None for p in r.pairs)]
    assert fed, "the .pt2 backend did not take the sampled weights"
    assert all(p is not None for p in fed[0].pairs)
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["fresh", "bank"])
def test_pt2_grouped_conv_same_numbers(small, strategy):
    path = small("pt2", stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((B, 2, 14, 14)).astype("float32")
    fast, got, want = _pt2_both(path, x, strategy)
    assert any(r.convs == 2 for r in _pt2_rewrites(fast.backend)), "the convolutions were not grouped"
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["torchbnn_cnn", "bt_hand_linear"])
def test_pt2_per_call_same_numbers(tmp_path, case):
    """Per-call artifacts of foreign layers take their sampled weights too (bayesian-torch's
    ``eps * 1.0 + 0.0`` included) and drop the never-returned KL term."""
    model, x = getattr(families, case)()
    path = tmp_path / "pc.pt2"
    illia_export.export(model.eval(), x, path, format="pt2", samples="per-call", validate=False)
    fast, got, want = _pt2_both(path, x.numpy(), "fresh", num_samples=3)
    fed = [r for r in _pt2_rewrites(fast.backend) if any(p is not None for p in r.pairs)]
    assert fed and all(p is not None for p in fed[0].pairs)
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_pt2_wrong_rewrite_is_not_used(small, monkeypatch):
    from illia_export.runtime.backends import pt2_fast

    path = small("pt2")
    real = pt2_fast.grouped_conv2d
    monkeypatch.setattr(pt2_fast, "grouped_conv2d", lambda *a: real(*a) * 1.01)
    x = np.random.default_rng(0).standard_normal((B, 2, 14, 14)).astype("float32")
    fast, got, want = _pt2_both(path, x, "fresh")
    assert not _pt2_rewrites(fast.backend)
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_pt2_shape_guards_run_once_per_shape():
    from illia_export.runtime.backends.pt2_fast import GuardedOnce

    seen = []
    call = GuardedOnce(lambda a, b: a + b, lambda *args: seen.append(tuple(a.shape for a in args)))
    x, y = torch.ones(2, 3), torch.ones(4, 3)
    for _ in range(3):
        call(x, x)
    call(y, y)
    call(x, x)
    assert seen == [((2, 3), (2, 3)), ((4, 3), (4, 3))]


def test_pt2_failing_shape_guard_raises():
    from illia_export.runtime.backends.pt2_fast import GuardedOnce

    def guards(*args):
        raise AssertionError("batch must be even")

    with pytest.raises(AssertionError, match="even"):
        GuardedOnce(lambda a: a, guards)(torch.ones(3))
