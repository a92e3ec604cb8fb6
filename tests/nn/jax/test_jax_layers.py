"""Behaviour of the Bayesian Flax-NNX layers: shapes, sampling, freezing, KL, gradients, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from illia_export.nn.jax import (
    LSTM,
    BayesianModule,
    Conv1d,
    Conv2d,
    Embedding,
    Linear,
    SampledWeights,
    freeze,
    portable_ops,
    unfreeze,
)
from tests.nn.jax._helpers import grad_norms, np_kl


def _floats(shape):
    # numpy's generator: module-level data must not compile jax.random kernels at collection
    return jnp.asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))


def _tokens(shape, high=10):
    return jnp.asarray(np.random.default_rng(0).integers(0, high, shape, dtype=np.int32))


# (id, factory, input, expected output shape)
SHAPE_CASES = [
    ("linear", lambda r: Linear(5, 3, rngs=r), _floats((4, 5)), (4, 3)),
    ("linear-3d", lambda r: Linear(5, 3, rngs=r), _floats((2, 4, 5)), (2, 4, 3)),
    ("linear-nobias", lambda r: Linear(5, 3, use_bias=False, rngs=r), _floats((4, 5)), (4, 3)),
    ("conv1d", lambda r: Conv1d(2, 4, 3, rngs=r), _floats((3, 2, 10)), (3, 4, 8)),
    ("conv1d-strided", lambda r: Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, rngs=r), _floats((2, 4, 11)), (2, 6, 5)),
    ("conv1d-nobias", lambda r: Conv1d(2, 4, 1, use_bias=False, rngs=r), _floats((3, 2, 7)), (3, 4, 7)),
    ("conv2d", lambda r: Conv2d(1, 3, 3, rngs=r), _floats((2, 1, 8, 8)), (2, 3, 6, 6)),
    ("conv2d-strided", lambda r: Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, rngs=r), _floats((2, 4, 9, 7)), (2, 6, 5, 5)),
    ("conv2d-nobias", lambda r: Conv2d(2, 2, 2, groups=2, use_bias=False, rngs=r), _floats((1, 2, 5, 5)), (1, 2, 4, 4)),
    ("embedding", lambda r: Embedding(10, 4, rngs=r), _tokens((3, 5)), (3, 5, 4)),
    ("embedding-pad-maxnorm", lambda r: Embedding(10, 4, padding_idx=0, max_norm=0.05, rngs=r), _tokens((3, 5)), (3, 5, 4)),
    ("lstm", lambda r: LSTM(10, 4, 6, 3, rngs=r), _tokens((2, 7)), (2, 3)),
    ("lstm-3d-input", lambda r: LSTM(10, 4, 6, 3, padding_idx=1, rngs=r), _tokens((2, 5, 1)), (2, 3)),
]
IDS = [c[0] for c in SHAPE_CASES]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


#: one case per layer type (plus the strided/grouped convs) for the costlier checks
CORE = [c for c in SHAPE_CASES if c[0] in ("linear", "conv1d-strided", "conv2d-strided", "embedding-pad-maxnorm", "lstm")]


def _build(param):
    name, factory, x, shape = param
    return name, factory(nnx.Rngs(params=0, sample=1)), x, shape


@pytest.fixture(params=SHAPE_CASES, ids=IDS)
def case(request):
    return _build(request.param)


@pytest.fixture(params=CORE, ids=[c[0] for c in CORE])
def core_case(request):
    return _build(request.param)


def test_output_shape(case):
    _, layer, x, shape = case
    out = layer(x)
    assert _first(out).shape == shape
    if isinstance(layer, LSTM):
        h, c = out[1]
        assert h.shape == c.shape == (x.shape[0], layer.hidden_size)


def test_stochastic_unfrozen_deterministic_frozen(case):
    _, layer, x, _ = case
    a, b = _first(layer(x)), _first(layer(x))
    assert not np.allclose(a, b)
    layer.freeze()
    assert layer.frozen
    c, d = _first(layer(x)), _first(layer(x))
    np.testing.assert_array_equal(c, d)
    np.testing.assert_array_equal(c, b)  # frozen reuses the last sample
    # freeze keeps the variable types (seed defect: replaced by plain arrays)
    assert isinstance(layer.weights_distribution.mu if hasattr(layer, "weights_distribution") else layer.wf_distribution.mu, nnx.Param)
    assert all(isinstance(v, SampledWeights) for _, v in layer._distribution_pairs())
    nnx.split(layer)  # still a valid graph
    layer.unfreeze()
    assert not np.allclose(_first(layer(x)), d)


def test_kl_cost_matches_numpy(core_case):
    _, layer, x, _ = core_case
    layer(x)
    kl, n = layer.kl_cost()
    pairs = layer._distribution_pairs()
    expected = sum(np_kl(d, v[...]) for d, v in pairs)
    assert n == sum(int(np.prod(d.shape)) for d, _ in pairs)
    np.testing.assert_allclose(float(kl), expected, rtol=2e-4, atol=1e-2)


def test_gradients_reach_mu_and_rho(core_case):
    _, layer, x, _ = core_case

    def loss(m):
        out = _first(m(x))
        return jnp.sum(out**2) + m.kl_cost()[0] * 1e-3

    grads = grad_norms(nnx.state(nnx.jit(nnx.grad(loss))(layer)))
    dists = [k for k in grads if k.endswith(".mu") or k.endswith(".rho")]
    assert dists and set(dists) == set(grads)  # only mu/rho are nnx.Params
    for name in dists:
        assert grads[name] > 0, name


def test_frozen_layer_gives_no_gradient_through_outputs(core_case):
    _, layer, x, _ = core_case
    freeze(layer)
    grads = grad_norms(nnx.state(nnx.jit(nnx.grad(lambda m: jnp.sum(_first(m(x)) ** 2)))(layer)))
    assert all(v == 0 for v in grads.values())
    unfreeze(layer)
    assert not layer.frozen


def test_sample_axis_folding_equals_per_sample_calls(core_case):
    _, layer, x, _ = core_case
    pairs = layer._distribution_pairs()
    if isinstance(layer, LSTM):
        pairs = pairs + layer.embedding._distribution_pairs()
    eps = [jax.random.normal(jax.random.key(i), (3, *d.shape)) for i, (d, _) in enumerate(pairs)]
    for (d, _), e in zip(pairs, eps):
        d.set_noise(e)
    folded = _first(layer(jnp.concatenate([x] * 3, axis=0)))
    for s in range(3):
        for (d, _), e in zip(pairs, eps):
            d.set_noise(e[s])
        one = _first(layer(x))
        np.testing.assert_allclose(folded[s * x.shape[0] : (s + 1) * x.shape[0]], one, rtol=1e-5, atol=1e-5)


def test_portable_ops_match_default(core_case):
    _, layer, x, _ = core_case
    layer.freeze()
    ref = _first(layer(x))
    with portable_ops():
        out = _first(layer(x))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_injected_zero_noise_is_mean_network():
    layer = Linear(3, 2, rngs=nnx.Rngs(0))
    layer.weights_distribution.set_noise(jnp.zeros((2, 3)))
    layer.bias_distribution.set_noise(jnp.zeros((2,)))
    x = _floats((4, 3))
    expected = x @ layer.weights_distribution.mu[...].T + layer.bias_distribution.mu[...]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)
    layer.freeze()  # injected noise wins over frozen
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


def test_embedding_padding_and_max_norm_semantics():
    emb = Embedding(6, 3, padding_idx=-1, max_norm=0.5, rngs=nnx.Rngs(0))
    assert emb.padding_idx == 5
    table = jnp.arange(18, dtype=jnp.float32).reshape(6, 3) / 10
    emb.weights_distribution.set_noise(jnp.zeros((6, 3)))
    emb.weights_distribution.mu[...] = table
    idx = jnp.array([[0, 5, 1]])
    out = np.asarray(emb(idx))
    np.testing.assert_array_equal(out[0, 1], 0.0)
    norms = np.linalg.norm(np.asarray(table), axis=1)
    np.testing.assert_allclose(out[0, 0], np.asarray(table[0]) * (0.5 / (norms[0] + 1e-7) if norms[0] > 0.5 else 1), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[0, 2]), min(norms[1], 0.5), rtol=1e-5)


def test_lstm_init_states_and_sequence_length():
    lstm = LSTM(10, 4, 5, 2, rngs=nnx.Rngs(0))
    lstm.freeze()
    tokens = _tokens((2, 6))
    y, (h, c) = lstm(tokens)
    # continuing from the state after 3 steps equals running all 6
    _, (h3, c3) = lstm(tokens[:, :3])
    y2, (h2, c2) = lstm(tokens[:, 3:], init_states=(h3, c3))
    np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2, h, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="init_states"):
        lstm(tokens, init_states=(h[:1], c))


BAD_CTORS = [
    (lambda: Linear(0, 3), "input_size"),
    (lambda: Linear(3, -1), "output_size"),
    (lambda: Conv1d(3, 4, 0), "kernel_size"),
    (lambda: Conv1d(3, 4, 2, padding=-1), "padding"),
    (lambda: Conv1d(3, 4, 2, groups=2), "groups"),
    (lambda: Conv2d(4, 6, 3, groups=4), "groups"),
    (lambda: Conv2d(4, 6, (3, 0)), "kernel_size"),
    (lambda: Conv2d(4, 6, 3, stride=0), "stride"),
    (lambda: Conv2d(0, 6, 3), "input_channels"),
    (lambda: Embedding(0, 3), "num_embeddings"),
    (lambda: Embedding(5, 3, padding_idx=7), "padding_idx"),
    (lambda: Embedding(5, 3, max_norm=0.0), "max_norm"),
    (lambda: LSTM(5, 3, 0, 2), "hidden_size"),
    (lambda: LSTM(5, 3, 4, 0), "output_size"),
]


@pytest.mark.parametrize("factory,arg", BAD_CTORS, ids=[a for _, a in BAD_CTORS])
def test_bad_constructor_arguments_name_the_argument(factory, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        factory()


BAD_CALLS = [
    (lambda: Linear(3, 2), _floats((2, 4)), "inputs"),
    (lambda: Conv1d(2, 4, 3), _floats((2, 10)), "inputs"),
    (lambda: Conv1d(2, 4, 3), _floats((2, 3, 10)), "inputs"),
    (lambda: Conv2d(2, 4, 3), _floats((2, 2, 10)), "inputs"),
    (lambda: Embedding(5, 3), _floats((2, 3)), "integer"),
    (lambda: LSTM(5, 3, 4, 2), _tokens((2,), 5), "inputs"),
]


@pytest.mark.parametrize("factory,x,msg", BAD_CALLS, ids=["linear", "conv1d-rank", "conv1d-ch", "conv2d", "emb", "lstm"])
def test_wrong_input_rank_raises(factory, x, msg):
    with pytest.raises(ValueError, match=msg):
        factory()(x)


def test_bayesian_module_base_and_model_helpers():
    class Net(nnx.Module):
        def __init__(self):
            r = nnx.Rngs(0)
            self.a = Linear(3, 4, rngs=r)
            self.b = Conv1d(1, 1, 1, rngs=r)
            self.plain = nnx.Linear(4, 2, rngs=r)

    net = Net()
    assert isinstance(net.a, BayesianModule) and net.a.is_bayesian
    freeze(net)
    assert net.a.frozen and net.b.frozen
    unfreeze(net)
    assert not net.a.frozen and not net.b.frozen
    # default rngs: layers are usable without an explicit nnx.Rngs
    assert Linear(2, 2)(jnp.ones((1, 2))).shape == (1, 2)
