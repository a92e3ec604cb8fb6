"""Bayesian ``Embedding``: shapes, padding_idx/max_norm, sampling semantics, KL, round trips, errors."""

import pytest
import torch
import torch.nn.functional as F

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch import Embedding
from tests.nn.torch import _helpers as h

NUM, DIM = 10, 4


def _stack(x, num_samples):
    return torch.cat([x] * num_samples)


def _reference(idx, table, padding_idx=None, max_norm=None, norm_type=2.0):
    """torch's F.embedding on a copy of the table (its max_norm renormalizes in place), with
    padding rows reading as zero (illia's documented behaviour)."""
    out = F.embedding(idx, table.clone(), padding_idx, max_norm, norm_type)
    if padding_idx is not None:
        out = out * (idx != padding_idx % table.size(0)).unsqueeze(-1).to(out.dtype)
    return out


def _idx(*shape, seed=0):
    return torch.randint(0, NUM, shape, generator=torch.Generator().manual_seed(seed))


OPTIONS = [
    dict(),
    dict(padding_idx=0),
    dict(padding_idx=-1),
    dict(max_norm=0.05),
    dict(max_norm=0.05, norm_type=1.0),
    dict(padding_idx=3, max_norm=0.05),
    dict(scale_grad_by_freq=True, sparse=True),
]


@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 3, 4), ()])
def test_output_shape(shape):
    layer = Embedding(NUM, DIM)
    idx = torch.randint(0, NUM, shape)
    assert layer(idx).shape == (*shape, DIM)


@pytest.mark.parametrize("options", OPTIONS)
def test_injected_noise_matches_plain_torch(options):
    # rho_init=-1 gives sigma ~ 0.3 so rows exceed max_norm and renormalization is exercised.
    dist = GaussianDistribution((NUM, DIM), rho_init=-1.0)
    layer = Embedding(NUM, DIM, weights_distribution=dist, **options)
    idx = torch.cat([_idx(3, 6), torch.tensor([[0, 3, 9, 9, 3, 0]])])
    w = h.weights_for(layer, h.inject(layer, seed=2))["weights_distribution"]
    ref_options = {k: v for k, v in options.items() if k in ("padding_idx", "max_norm", "norm_type")}
    expected = _reference(idx, w, **ref_options)
    torch.testing.assert_close(layer(idx), expected)
    if "max_norm" in options:
        assert (
            torch.linalg.vector_norm(layer(idx), options.get("norm_type", 2.0), -1)
            <= options["max_norm"] + 1e-5
        ).all()
        # Functional: a freshly drawn (stored) table is not renormalized in place.
        h.clear(layer)
        out = layer(idx)
        norms = torch.linalg.vector_norm(layer.weights, options.get("norm_type", 2.0), -1)
        assert norms.max() > options["max_norm"]
        torch.testing.assert_close(out, _reference(idx, layer.weights.detach(), **ref_options))


@pytest.mark.parametrize("padding_idx", [0, 9, -2])
def test_padding_rows_read_as_zero_and_get_no_gradient(padding_idx):
    layer = Embedding(NUM, DIM, padding_idx=padding_idx)
    idx = torch.tensor([[padding_idx % NUM, 1, 2, padding_idx % NUM]])
    out = layer(idx)
    assert torch.equal(out[0, 0], torch.zeros(DIM)) and torch.equal(out[0, 3], torch.zeros(DIM))
    assert out[0, 1].abs().sum() > 0
    out.sum().backward()
    row = padding_idx % NUM
    assert torch.equal(layer.weights_distribution.mu.grad[row], torch.zeros(DIM))
    assert layer.weights_distribution.mu.grad[1].abs().sum() > 0


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("num_samples", [1, 3])
def test_sample_axis_blocks(options, num_samples):
    dist = GaussianDistribution((NUM, DIM), rho_init=-1.0)
    layer = Embedding(NUM, DIM, weights_distribution=dist, **options)
    idx = torch.cat([_idx(4, 5), torch.tensor([[0, 3, 9, 9, 3]])])
    h.check_sample_axis(layer, idx, num_samples, 5, _stack)


def test_sample_axis_against_reference():
    layer = Embedding(
        NUM,
        DIM,
        padding_idx=2,
        max_norm=0.05,
        weights_distribution=GaussianDistribution((NUM, DIM), rho_init=-1.0),
    )
    idx = torch.tensor([[2, 0, 9], [5, 2, 1]])
    w = h.weights_for(layer, h.inject(layer, num_samples=3, seed=4))["weights_distribution"]
    y = layer(torch.cat([idx] * 3))
    for s in range(3):
        torch.testing.assert_close(
            y[2 * s : 2 * (s + 1)], _reference(idx, w[s], padding_idx=2, max_norm=0.05)
        )


def test_zero_noise_is_the_mean_table():
    layer = Embedding(NUM, DIM)
    idx = _idx(3, 4)
    h.inject(layer, scale=0.0)
    torch.testing.assert_close(layer(idx), layer.weights_distribution.mu.detach()[idx])


def test_forward_uses_the_stored_sample():
    layer = Embedding(NUM, DIM)
    idx = _idx(3, 4)
    torch.testing.assert_close(layer(idx), layer.weights[idx])


def test_stochastic_frozen_kl_gradients():
    idx = torch.arange(NUM).reshape(2, 5)
    h.check_stochastic_and_frozen(Embedding(NUM, DIM, padding_idx=0), idx)
    layer = Embedding(
        NUM,
        DIM,
        weights_distribution=GaussianDistribution((NUM, DIM), mu_prior=0.1, std_prior=0.4, rho_init=-2.5),
    )
    h.check_kl_cost(layer, idx, expected_params=NUM * DIM)
    h.check_gradients(layer, idx)
    h.check_noise_leaves_state(layer, idx)


def test_script_roundtrip():
    h.check_script_roundtrip(Embedding(NUM, DIM, padding_idx=1, max_norm=1.0), _idx(3, 4))


def test_scripted_sample_axis():
    scripted = torch.jit.script(Embedding(NUM, DIM, padding_idx=1, max_norm=0.05))
    h.check_sample_axis(scripted, _idx(3, 4), 2, 3, _stack)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_trace_roundtrip():
    h.check_trace_roundtrip(Embedding(NUM, DIM), _idx(3, 4))


def test_deepcopy_and_state_dict_after_training_step():
    h.check_deepcopy_and_state_dict(
        lambda: Embedding(NUM, DIM, padding_idx=0), torch.arange(NUM).reshape(2, 5)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_embeddings=0, embeddings_dim=4), "num_embeddings"),
        (dict(num_embeddings=10, embeddings_dim=-4), "embeddings_dim"),
        (dict(num_embeddings=10, embeddings_dim=4, padding_idx=10), "padding_idx"),
        (dict(num_embeddings=10, embeddings_dim=4, padding_idx=-11), "padding_idx"),
        (dict(num_embeddings=10, embeddings_dim=4, max_norm=0.0), "max_norm"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Embedding(**kwargs)


def test_mismatched_distribution_shape():
    with pytest.raises(ValueError, match="weights_distribution"):
        Embedding(NUM, DIM, weights_distribution=GaussianDistribution((NUM - 1, DIM)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_indices_rejected(dtype):
    with pytest.raises(ValueError, match="integer indices"):
        Embedding(NUM, DIM)(torch.zeros(2, 3, dtype=dtype))
