"""Bayesian ``LSTM`` (embedding -> LSTM cell over time -> linear head).

Checked against a plain-torch implementation of the seed's equations with the same sampled
weights, at several sequence lengths, with and without ``init_states`` and a sample axis.
"""

import pytest
import torch
import torch.nn.functional as F

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch import LSTM
from tests.nn.torch import _helpers as h

NUM, EMB, HID, OUT = 12, 5, 6, 3


def _tokens(batch, seq_len, seed=0):
    return torch.randint(0, NUM, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def _states(batch, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, HID, generator=gen), torch.randn(batch, HID, generator=gen)


def _stack(x, num_samples):
    if isinstance(x, tuple):
        tokens, (h0, c0) = x
        return torch.cat([tokens] * num_samples), (
            torch.cat([h0] * num_samples),
            torch.cat([c0] * num_samples),
        )
    return torch.cat([x] * num_samples)


def _reference(tokens, w, init_states=None, padding_idx=None):
    """The seed's LSTM equations with plain torch ops; `w` maps distribution names to samples."""
    x = F.embedding(tokens, w["embedding.weights_distribution"])
    if padding_idx is not None:
        x = x * (tokens != padding_idx).unsqueeze(-1)
    batch = tokens.size(0)
    if init_states is None:
        h_t, c_t = torch.zeros(batch, HID), torch.zeros(batch, HID)
    else:
        h_t, c_t = init_states
    for t in range(tokens.size(1)):
        z = torch.cat([x[:, t], h_t], 1)
        f_t = torch.sigmoid(z @ w["wf_distribution"].T + w["bf_distribution"])
        i_t = torch.sigmoid(z @ w["wi_distribution"].T + w["bi_distribution"])
        cand = torch.tanh(z @ w["wc_distribution"].T + w["bc_distribution"])
        o_t = torch.sigmoid(z @ w["wo_distribution"].T + w["bo_distribution"])
        c_t = c_t * f_t + cand * i_t
        h_t = o_t * torch.tanh(c_t)
    return h_t @ w["wv_distribution"].T + w["bv_distribution"], (h_t, c_t)


def _lstm(**kwargs):
    return LSTM(NUM, EMB, HID, OUT, **kwargs)


@pytest.mark.parametrize("seq_len", [1, 4, 9])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_states", [False, True])
def test_output_shapes(seq_len, batch, with_states):
    layer = _lstm()
    states = _states(batch) if with_states else None
    y, (h_t, c_t) = layer(_tokens(batch, seq_len), states)
    assert y.shape == (batch, OUT) and h_t.shape == (batch, HID) and c_t.shape == (batch, HID)


def test_trailing_singleton_axis_accepted():
    layer = _lstm()
    tokens = _tokens(2, 4)
    h.inject(layer)
    h.assert_close(layer(tokens.unsqueeze(-1)), layer(tokens))


@pytest.mark.parametrize("seq_len", [1, 5])
@pytest.mark.parametrize("with_states", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_injected_noise_matches_plain_torch(seq_len, with_states, padding_idx):
    layer = _lstm(padding_idx=padding_idx)
    tokens = _tokens(3, seq_len)
    tokens[0, 0] = 0
    states = _states(3) if with_states else None
    w = h.weights_for(layer, h.inject(layer, seed=2))
    h.assert_close(layer(tokens, states), _reference(tokens, w, states, padding_idx))
    layer.freeze()  # injected noise takes precedence over freezing
    h.assert_close(layer(tokens, states), _reference(tokens, w, states, padding_idx))


@pytest.mark.parametrize("seq_len", [2, 7])
@pytest.mark.parametrize("with_states", [False, True])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_sample_axis_blocks(seq_len, with_states, num_samples):
    layer = _lstm(padding_idx=1)
    tokens = _tokens(2, seq_len)
    x = (tokens, _states(2)) if with_states else tokens
    h.check_sample_axis(layer, x, num_samples, 2, _stack)


def test_sample_axis_against_reference():
    layer = _lstm()
    tokens = _tokens(2, 4)
    states = _states(2)
    noise = h.inject(layer, num_samples=2, seed=4)
    w = h.weights_for(layer, noise)
    y, (h_t, c_t) = layer(*_stack((tokens, states), 2))
    for s in range(2):
        ref = _reference(tokens, {k: v[s] for k, v in w.items()}, states)
        h.assert_close((y[2 * s : 2 * s + 2], (h_t[2 * s : 2 * s + 2], c_t[2 * s : 2 * s + 2])), ref)


def test_zero_noise_is_the_mean_network():
    layer = _lstm()
    tokens = _tokens(2, 3)
    h.inject(layer, scale=0.0)
    means = {name: d.mu.detach() for name, d in h.distributions(layer).items()}
    h.assert_close(layer(tokens), _reference(tokens, means))


def test_forward_uses_the_stored_sample():
    layer = _lstm()
    tokens = _tokens(2, 3)
    out = layer(tokens)
    stored = {name: h.stored_sample(layer, name).detach() for name in h.distributions(layer)}
    h.assert_close(out, _reference(tokens, stored))


def test_stochastic_and_frozen():
    h.check_stochastic_and_frozen(_lstm(), _tokens(2, 4))
    h.check_stochastic_and_frozen(_lstm(), (_tokens(2, 4), _states(2)))


def test_freeze_reaches_the_embedding():
    layer = _lstm()
    layer.freeze()
    assert layer.frozen and layer.embedding.frozen
    layer.unfreeze()
    assert not layer.frozen and not layer.embedding.frozen


def test_kl_cost_matches_scipy_and_excludes_the_embedding():
    layer = _lstm()
    layer.wf_distribution = GaussianDistribution((HID, EMB + HID), mu_prior=0.3, std_prior=0.7, rho_init=-2.0)
    gates = 4 * (HID * (EMB + HID) + HID) + OUT * HID + OUT
    h.check_kl_cost(layer, _tokens(2, 3), expected_params=gates)


def test_gradients_reach_mu_and_rho():
    h.check_gradients(_lstm(), torch.arange(NUM).reshape(3, 4))


def test_injected_noise_leaves_frozen_sample_alone():
    h.check_noise_leaves_state(_lstm(), _tokens(2, 4))


def test_script_roundtrip_and_two_sequence_lengths():
    layer = _lstm(padding_idx=0)
    h.check_script_roundtrip(layer, _tokens(2, 4))
    scripted = torch.jit.script(layer)
    for seq_len in (3, 8):  # the loop is a real loop: any length runs
        tokens = _tokens(2, seq_len, seed=seq_len)
        noise = h.inject(layer, seed=seq_len)
        h.inject_given(scripted, noise)
        h.assert_close(scripted(tokens), layer(tokens))
        h.assert_close(scripted(tokens), _reference(tokens, h.weights_for(layer, noise), padding_idx=0))
        h.check_sample_axis(scripted, (tokens, _states(2)), 2, 2, _stack)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_trace_roundtrip():
    h.check_trace_roundtrip(_lstm(), _tokens(2, 4))


def test_deepcopy_and_state_dict_after_training_step():
    h.check_deepcopy_and_state_dict(_lstm, _tokens(2, 4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_embeddings=0, embeddings_dim=4, hidden_size=4, output_size=2), "num_embeddings"),
        (dict(num_embeddings=5, embeddings_dim=0, hidden_size=4, output_size=2), "embeddings_dim"),
        (dict(num_embeddings=5, embeddings_dim=4, hidden_size=0, output_size=2), "hidden_size"),
        (dict(num_embeddings=5, embeddings_dim=4, hidden_size=4, output_size=-1), "output_size"),
        (
            dict(num_embeddings=5, embeddings_dim=4, hidden_size=4, output_size=2, padding_idx=5),
            "padding_idx",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSTM(**kwargs)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 2), (1, 2, 3, 1)])
def test_wrong_input_rank(shape):
    with pytest.raises(ValueError, match="LSTM expects"):
        _lstm()(torch.zeros(shape, dtype=torch.long))


def test_float_tokens_rejected():
    with pytest.raises(ValueError, match="integer indices"):
        _lstm()(torch.zeros(2, 3))
