"""Bayesian ``Linear``: shapes, sampling semantics, KL, export round trips, errors."""

import pytest
import torch
import torch.nn.functional as F

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch import Linear
from tests.nn.torch import _helpers as h


def _stack(x, num_samples):
    return torch.cat([x] * num_samples)


@pytest.mark.parametrize("batch_shape", [(5,), (2, 3), (1,), ()])
@pytest.mark.parametrize("sizes", [(4, 3), (1, 1), (7, 2)])
def test_output_shape(batch_shape, sizes):
    layer = Linear(*sizes)
    assert layer(torch.randn(*batch_shape, sizes[0])).shape == (*batch_shape, sizes[1])


def test_distribution_shapes_and_state_dict_keys():
    layer = Linear(4, 3)
    assert list(layer.weights_distribution.mu.shape) == [3, 4]
    assert list(layer.bias_distribution.mu.shape) == [3]
    assert sorted(layer.state_dict()) == [
        "bias_distribution.mu",
        "bias_distribution.mu_prior",
        "bias_distribution.rho",
        "bias_distribution.std_prior",
        "weights_distribution.mu",
        "weights_distribution.mu_prior",
        "weights_distribution.rho",
        "weights_distribution.std_prior",
    ]


def test_stochastic_unfrozen_deterministic_frozen():
    h.check_stochastic_and_frozen(Linear(4, 3), torch.randn(5, 4))


def test_forward_uses_the_stored_sample():
    layer = Linear(4, 3)
    x = torch.randn(5, 4)
    y = layer(x)
    torch.testing.assert_close(y, F.linear(x, layer.weights, layer.bias))


def test_kl_cost_matches_scipy():
    layer = Linear(
        4,
        3,
        weights_distribution=GaussianDistribution((3, 4), mu_prior=0.2, std_prior=0.5, rho_init=-2.0),
        bias_distribution=GaussianDistribution((3,), std_prior=2.0, rho_init=-1.0),
    )
    h.check_kl_cost(layer, torch.randn(5, 4), expected_params=15)


def test_gradients_reach_mu_and_rho():
    h.check_gradients(Linear(4, 3), torch.randn(5, 4))


@pytest.mark.parametrize("batch_shape", [(5,), (2, 3)])
def test_injected_noise_matches_plain_torch(batch_shape):
    layer = Linear(4, 3)
    x = torch.randn(*batch_shape, 4)
    noise = h.inject(layer, seed=2)
    w = h.weights_for(layer, noise)
    expected = x @ w["weights_distribution"].T + w["bias_distribution"]
    torch.testing.assert_close(layer(x), expected)
    layer.freeze()  # injected noise takes precedence over freezing
    torch.testing.assert_close(layer(x), expected)


def test_zero_noise_is_the_mean_network():
    layer = Linear(4, 3)
    x = torch.randn(5, 4)
    h.inject(layer, scale=0.0)
    expected = F.linear(x, layer.weights_distribution.mu, layer.bias_distribution.mu)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("batch_shape", [(4,), (2, 5)])
def test_sample_axis_blocks(num_samples, batch_shape):
    layer = Linear(6, 3)
    x = torch.randn(*batch_shape, 6)
    h.check_sample_axis(layer, x, num_samples, batch_shape[0], _stack)


def test_sample_axis_matches_reference_per_block():
    layer = Linear(4, 2)
    x = torch.randn(3, 4)
    noise = h.inject(layer, num_samples=2, seed=4)
    w = h.weights_for(layer, noise)
    y = layer(torch.cat([x, x]))
    for s in range(2):
        ref = x @ w["weights_distribution"][s].T + w["bias_distribution"][s]
        torch.testing.assert_close(y[3 * s : 3 * (s + 1)], ref)


def test_injected_noise_leaves_frozen_sample_alone():
    h.check_noise_leaves_state(Linear(4, 3), torch.randn(5, 4))


def test_script_save_load_roundtrip():
    h.check_script_roundtrip(Linear(4, 3), torch.randn(5, 4))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_trace_save_load_roundtrip():
    h.check_trace_roundtrip(Linear(4, 3), torch.randn(5, 4))


def test_scripted_sample_axis_with_new_batch_size():
    scripted = torch.jit.script(Linear(4, 3))
    h.check_sample_axis(scripted, torch.randn(7, 4), 2, 7, _stack)


def test_deepcopy_and_state_dict_after_training_step():
    h.check_deepcopy_and_state_dict(lambda: Linear(4, 3), torch.randn(5, 4))


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 3), "input_size"),
        ((4, -1), "output_size"),
        ((4.0, 3), "input_size"),
        ((True, 3), "input_size"),
    ],
)
def test_bad_constructor_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        Linear(*args)


def test_mismatched_distribution_shape():
    with pytest.raises(ValueError, match="weights_distribution"):
        Linear(4, 3, weights_distribution=GaussianDistribution((4, 3)))
    with pytest.raises(ValueError, match="bias_distribution"):
        Linear(4, 3, bias_distribution=GaussianDistribution((1,)))


@pytest.mark.parametrize("shape", [(5, 3), (5, 4, 2)])
def test_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=r"\[\*, 4\]"):
        Linear(4, 3)(torch.randn(*shape))
