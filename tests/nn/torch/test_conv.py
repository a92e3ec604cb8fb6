"""Bayesian ``Conv1d`` and ``Conv2d``: shapes, sampling semantics, KL, export round trips, errors.

The sample-axis path (im2col + batched matmul) is checked against ``F.conv1d``/``F.conv2d`` with
the per-sample weights over random configurations (hypothesis).
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch import Conv1d, Conv2d
from tests.nn.torch import _helpers as h


def _stack(x, num_samples):
    return torch.cat([x] * num_samples)


def _out_len(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ----------------------------------------------------------------------------------- Conv1d

CONV1D_CONFIGS = [
    dict(kernel_size=3),
    dict(kernel_size=1, stride=2),
    dict(kernel_size=3, padding=2, dilation=2),
    dict(kernel_size=2, stride=3, padding=1, groups=2),
    dict(kernel_size=3, groups=4),
]


@pytest.mark.parametrize("config", CONV1D_CONFIGS)
def test_conv1d_output_shape(config):
    layer = Conv1d(4, 8, **config)
    x = torch.randn(3, 4, 11)
    length = _out_len(
        11,
        config["kernel_size"],
        config.get("stride", 1),
        config.get("padding", 0),
        config.get("dilation", 1),
    )
    assert layer(x).shape == (3, 8, length)
    assert list(layer.weights_distribution.mu.shape) == [
        8,
        4 // config.get("groups", 1),
        config["kernel_size"],
    ]


@pytest.mark.parametrize("config", CONV1D_CONFIGS)
def test_conv1d_injected_noise_matches_plain_torch(config):
    layer = Conv1d(4, 8, **config)
    x = torch.randn(3, 4, 11)
    w = h.weights_for(layer, h.inject(layer, seed=2))
    params = [config.get(k, d) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))]
    expected = F.conv1d(x, w["weights_distribution"], w["bias_distribution"], *params)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("config", CONV1D_CONFIGS)
@pytest.mark.parametrize("num_samples", [1, 3])
def test_conv1d_sample_axis_blocks(config, num_samples):
    h.check_sample_axis(Conv1d(4, 8, **config), torch.randn(2, 4, 11), num_samples, 2, _stack)


def test_conv1d_zero_noise_is_the_mean_network():
    layer = Conv1d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 6)
    h.inject(layer, scale=0.0)
    expected = F.conv1d(x, layer.weights_distribution.mu, layer.bias_distribution.mu, padding=1)
    torch.testing.assert_close(layer(x), expected)


def test_conv1d_stochastic_frozen_kl_gradients():
    x = torch.randn(2, 4, 9)
    h.check_stochastic_and_frozen(Conv1d(4, 6, 3, groups=2), x)
    layer = Conv1d(
        4,
        6,
        3,
        groups=2,
        weights_distribution=GaussianDistribution((6, 2, 3), mu_prior=-0.1, std_prior=0.3, rho_init=-3.0),
    )
    h.check_kl_cost(layer, x, expected_params=6 * 2 * 3 + 6)
    h.check_gradients(layer, x)
    h.check_noise_leaves_state(layer, x)


def test_conv1d_forward_uses_the_stored_sample():
    layer = Conv1d(2, 3, 3, stride=2)
    x = torch.randn(2, 2, 9)
    y = layer(x)
    torch.testing.assert_close(y, F.conv1d(x, layer.weights, layer.bias, stride=2))


def test_conv1d_script_roundtrip():
    x = torch.randn(2, 4, 9)
    h.check_script_roundtrip(Conv1d(4, 6, 3, stride=2, padding=1, groups=2), x)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_conv1d_trace_roundtrip():
    h.check_trace_roundtrip(Conv1d(4, 6, 3, padding=1), torch.randn(2, 4, 9))


def test_conv1d_deepcopy_and_state_dict_after_training_step():
    h.check_deepcopy_and_state_dict(lambda: Conv1d(4, 6, 3, groups=2), torch.randn(2, 4, 9))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_channels=0, output_channels=4, kernel_size=3), "input_channels"),
        (dict(input_channels=4, output_channels=-2, kernel_size=3), "output_channels"),
        (dict(input_channels=4, output_channels=4, kernel_size=0), "kernel_size"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, stride=0), "stride"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, dilation=0), "dilation"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, padding=-1), "padding"),
        (dict(input_channels=4, output_channels=6, kernel_size=3, groups=4), "groups"),
        (dict(input_channels=3, output_channels=4, kernel_size=3, groups=2), "groups"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, groups=0), "groups"),
    ],
)
def test_conv1d_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv1d(**kwargs)


@pytest.mark.parametrize("shape", [(4, 9), (2, 3, 9), (2, 4, 9, 1)])
def test_conv1d_wrong_input_shape(shape):
    with pytest.raises(ValueError, match="Conv1d expects"):
        Conv1d(4, 4, 3)(torch.randn(*shape))


# ----------------------------------------------------------------------------------- Conv2d

CONV2D_CONFIGS = [
    dict(kernel_size=3),
    dict(kernel_size=(3, 2)),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1)),
    dict(kernel_size=3, dilation=2, groups=2),
    dict(kernel_size=1, groups=4),
]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _conv2d_args(config):
    return dict(
        stride=config.get("stride", 1),
        padding=config.get("padding", 0),
        dilation=config.get("dilation", 1),
        groups=config.get("groups", 1),
    )


@pytest.mark.parametrize("config", CONV2D_CONFIGS)
def test_conv2d_output_shape(config):
    layer = Conv2d(4, 8, **config)
    x = torch.randn(2, 4, 9, 10)
    kh, kw = _pair(config["kernel_size"])
    (sh, sw), (ph, pw), (dh, dw) = (
        _pair(config.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1))
    )
    assert layer(x).shape == (2, 8, _out_len(9, kh, sh, ph, dh), _out_len(10, kw, sw, pw, dw))
    assert list(layer.weights_distribution.mu.shape) == [8, 4 // config.get("groups", 1), kh, kw]


@pytest.mark.parametrize("config", CONV2D_CONFIGS)
def test_conv2d_injected_noise_matches_plain_torch(config):
    layer = Conv2d(4, 8, **config)
    x = torch.randn(2, 4, 9, 10)
    w = h.weights_for(layer, h.inject(layer, seed=2))
    expected = F.conv2d(x, w["weights_distribution"], w["bias_distribution"], **_conv2d_args(config))
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("config", CONV2D_CONFIGS)
def test_conv2d_sample_axis_blocks(config):
    h.check_sample_axis(Conv2d(4, 8, **config), torch.randn(2, 4, 9, 10), 3, 2, _stack)


@st.composite
def _conv2d_case(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    in_ch = groups * draw(st.integers(1, 2))
    out_ch = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    min_h = dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]
    min_w = dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]
    height = draw(st.integers(max(min_h, 1), max(min_h, 1) + 4))
    width = draw(st.integers(max(min_w, 1), max(min_w, 1) + 4))
    batch = draw(st.integers(1, 3))
    num_samples = draw(st.integers(1, 3))
    return (
        in_ch,
        out_ch,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        (batch, in_ch, height, width),
        num_samples,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_conv2d_case())
def test_conv2d_sample_axis_against_per_sample_conv(case):
    in_ch, out_ch, kernel, stride, padding, dilation, groups, shape, num_samples = case
    torch.manual_seed(0)
    layer = Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, groups)
    x = torch.randn(shape)
    w = h.weights_for(layer, h.inject(layer, num_samples=num_samples, seed=3))
    y = layer(torch.cat([x] * num_samples))
    batch = shape[0]
    for s in range(num_samples):
        ref = F.conv2d(
            x, w["weights_distribution"][s], w["bias_distribution"][s], stride, padding, dilation, groups
        )
        torch.testing.assert_close(y[s * batch : (s + 1) * batch], ref, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    length=st.integers(8, 14),
    num_samples=st.integers(1, 3),
)
def test_conv1d_sample_axis_against_per_sample_conv(
    kernel, stride, padding, dilation, groups, length, num_samples
):
    torch.manual_seed(0)
    layer = Conv1d(2, 4, kernel, stride, padding, dilation, groups)
    x = torch.randn(2, 2, length)
    w = h.weights_for(layer, h.inject(layer, num_samples=num_samples, seed=3))
    y = layer(torch.cat([x] * num_samples))
    for s in range(num_samples):
        ref = F.conv1d(
            x, w["weights_distribution"][s], w["bias_distribution"][s], stride, padding, dilation, groups
        )
        torch.testing.assert_close(y[2 * s : 2 * (s + 1)], ref, atol=1e-5, rtol=1e-5)


def test_conv2d_zero_noise_is_the_mean_network():
    layer = Conv2d(2, 3, (3, 2), padding=(1, 0))
    x = torch.randn(2, 2, 5, 6)
    h.inject(layer, scale=0.0)
    expected = F.conv2d(x, layer.weights_distribution.mu, layer.bias_distribution.mu, padding=(1, 0))
    torch.testing.assert_close(layer(x), expected)


def test_conv2d_int_and_pair_arguments_agree():
    a = Conv2d(2, 3, 3, stride=2, padding=1, dilation=1)
    b = Conv2d(2, 3, (3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 2, 7, 7)
    noise = h.inject(a)
    h.inject_given(b, noise)
    torch.testing.assert_close(a(x), b(x))


def test_conv2d_stochastic_frozen_kl_gradients():
    x = torch.randn(2, 4, 6, 6)
    h.check_stochastic_and_frozen(Conv2d(4, 6, 3, groups=2), x)
    layer = Conv2d(
        4,
        6,
        (3, 2),
        weights_distribution=GaussianDistribution((6, 4, 3, 2), std_prior=1.0, rho_init=-4.0),
        bias_distribution=GaussianDistribution((6,), mu_prior=0.5, std_prior=0.2, rho_init=-2.0),
    )
    h.check_kl_cost(layer, x, expected_params=6 * 4 * 3 * 2 + 6)
    h.check_gradients(layer, x)
    h.check_noise_leaves_state(layer, x)


def test_conv2d_forward_uses_the_stored_sample():
    layer = Conv2d(2, 4, 3, padding=1, groups=2)
    x = torch.randn(2, 2, 5, 5)
    y = layer(x)
    torch.testing.assert_close(y, F.conv2d(x, layer.weights, layer.bias, padding=1, groups=2))


def test_conv2d_script_roundtrip():
    h.check_script_roundtrip(Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2), torch.randn(2, 4, 7, 7))


def test_conv2d_scripted_sample_axis():
    scripted = torch.jit.script(Conv2d(4, 6, 3, stride=(2, 1), padding=1, dilation=(1, 2), groups=2))
    h.check_sample_axis(scripted, torch.randn(3, 4, 8, 8), 2, 3, _stack)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_conv2d_trace_roundtrip():
    h.check_trace_roundtrip(Conv2d(4, 6, 3, padding=1), torch.randn(2, 4, 6, 6))


def test_conv2d_deepcopy_and_state_dict_after_training_step():
    h.check_deepcopy_and_state_dict(lambda: Conv2d(4, 6, 3, groups=2), torch.randn(2, 4, 6, 6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_channels=0, output_channels=4, kernel_size=3), "input_channels"),
        (dict(input_channels=4, output_channels=0, kernel_size=3), "output_channels"),
        (dict(input_channels=4, output_channels=4, kernel_size=(3, 0)), "kernel_size"),
        (dict(input_channels=4, output_channels=4, kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, stride=(1, 0)), "stride"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, padding=-1), "padding"),
        (dict(input_channels=4, output_channels=4, kernel_size=3, dilation=0), "dilation"),
        (dict(input_channels=4, output_channels=6, kernel_size=3, groups=4), "groups"),
        (dict(input_channels=6, output_channels=4, kernel_size=3, groups=4), "groups"),
    ],
)
def test_conv2d_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv2d(**kwargs)


def test_mismatched_distribution_shape():
    with pytest.raises(ValueError, match="weights_distribution"):
        Conv2d(2, 3, 3, weights_distribution=GaussianDistribution((3, 2, 3)))
    with pytest.raises(ValueError, match="weights_distribution"):
        Conv1d(4, 2, 3, groups=2, weights_distribution=GaussianDistribution((2, 4, 3)))
    with pytest.raises(ValueError, match="bias_distribution"):
        Conv1d(2, 3, 3, bias_distribution=GaussianDistribution((2,)))


@pytest.mark.parametrize("shape", [(4, 6, 6), (2, 3, 6, 6), (2, 4, 6)])
def test_conv2d_wrong_input_shape(shape):
    with pytest.raises(ValueError, match="Conv2d expects"):
        Conv2d(4, 4, 3)(torch.randn(*shape))
