"""BatchEnsembleLinear (probly semantics) for Flax-NNX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from illia_export.nn.jax import BatchEnsembleLinear


def _base(bias=True):
    return nnx.Linear(5, 3, use_bias=bias, rngs=nnx.Rngs(0))


def test_member_k_uses_its_own_rows_and_factors():
    layer = BatchEnsembleLinear(_base(), rngs=nnx.Rngs(1), num_members=3)
    layer.bias[...] = jax.random.normal(jax.random.key(2), (3, 3))
    x = np.random.default_rng(0).standard_normal((3 * 4, 5)).astype(np.float32)
    out = np.asarray(layer(jnp.asarray(x)))
    assert out.shape == (12, 3)
    kernel, r, s, b = (np.asarray(v[...]) for v in (layer.kernel, layer.r, layer.s, layer.bias))
    assert kernel.shape == (5, 3) and r.shape == (3, 5) and s.shape == (3, 3) and b.shape == (3, 3)
    for k in range(3):
        rows = x[k * 4 : (k + 1) * 4]
        np.testing.assert_allclose(out[k * 4 : (k + 1) * 4], ((rows * r[k]) @ kernel) * s[k] + b[k], rtol=1e-5, atol=1e-5)


def test_init_options():
    base = _base()
    shared = BatchEnsembleLinear(base, num_members=2, use_base_weights=True)
    np.testing.assert_array_equal(shared.kernel[...], base.kernel[...])
    np.testing.assert_array_equal(shared.bias[...], np.tile(np.asarray(base.bias[...]), (2, 1)))
    fresh = BatchEnsembleLinear(base, rngs=nnx.Rngs(5), num_members=2)
    assert not np.allclose(fresh.kernel[...], base.kernel[...])
    np.testing.assert_array_equal(fresh.bias[...], 0.0)
    signs = BatchEnsembleLinear(base, num_members=64, init="random_sign")
    assert set(np.unique(np.asarray(signs.r[...]))) == {-1.0, 1.0}
    assert set(np.unique(np.asarray(signs.s[...]))) == {-1.0, 1.0}
    normal = BatchEnsembleLinear(nnx.Linear(400, 300, rngs=nnx.Rngs(0)), num_members=8, r_mean=2.0, r_std=0.1, s_mean=-1.0, s_std=0.3)
    r, s = np.asarray(normal.r[...]), np.asarray(normal.s[...])
    assert abs(r.mean() - 2.0) < 0.01 and abs(r.std() - 0.1) < 0.01
    assert abs(s.mean() + 1.0) < 0.02 and abs(s.std() - 0.3) < 0.02
    no_bias = BatchEnsembleLinear(_base(bias=False), num_members=2)
    assert no_bias.bias is None and not no_bias.use_bias
    assert no_bias(jnp.ones((4, 5))).shape == (4, 3)


def test_gradients_reach_all_parameters():
    layer = BatchEnsembleLinear(_base(), num_members=2)
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((4, 5))) ** 2))(layer)
    for name in ("kernel", "r", "s", "bias"):
        assert float(jnp.abs(grads[name][...]).max()) > 0, name


def test_errors():
    with pytest.raises(TypeError, match="base_layer"):
        BatchEnsembleLinear(object())
    with pytest.raises(ValueError, match="num_members"):
        BatchEnsembleLinear(_base(), num_members=0)
    with pytest.raises(ValueError, match="init"):
        BatchEnsembleLinear(_base(), init="uniform")
    layer = BatchEnsembleLinear(_base(), num_members=2)
    with pytest.raises(ValueError, match="multiple of num_members"):
        layer(jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="inputs"):
        layer(jnp.ones((2, 2, 5)))


def test_matches_the_torch_layer():
    torch = pytest.importorskip("torch")
    from illia_export.nn.torch import BatchEnsembleLinear as TorchBE

    layer = BatchEnsembleLinear(_base(), num_members=2)
    layer.bias[...] = jnp.ones((2, 3)) * 0.5
    tlayer = TorchBE(torch.nn.Linear(5, 3), num_members=2)
    with torch.no_grad():
        for name in ("kernel", "r", "s", "bias"):
            getattr(tlayer, name).copy_(torch.from_numpy(np.array(getattr(layer, name)[...])))
    x = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    with torch.no_grad():
        expected = tlayer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-6)
