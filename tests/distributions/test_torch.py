"""``GaussianDistribution`` (PyTorch): init, sampling, noise injection, log_prob, scripting."""

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from illia_export.distributions.torch import GaussianDistribution


def _reference_log_ratio(dist, x):
    mu = dist.mu.detach().double().numpy()
    sigma = np.log1p(np.exp(dist.rho.detach().double().numpy()))
    xs = x.detach().double().numpy()
    value = norm.logpdf(xs, mu, sigma).sum() - norm.logpdf(xs, dist.mu_prior.item(), dist.std_prior.item()).sum()
    return value / (xs.size // mu.size)


def _analytic_kl(dist):
    mu = dist.mu.detach().double()
    sigma = F.softplus(dist.rho.detach().double())
    prior_std = dist.std_prior
    kl = torch.log(prior_std / sigma) + (sigma**2 + (mu - dist.mu_prior) ** 2) / (2 * prior_std**2) - 0.5
    return kl.sum().item()


@pytest.mark.parametrize("shape", [(3,), (4, 5), (2, 3, 4, 5)])
def test_parameter_shapes_and_num_params(shape):
    dist = GaussianDistribution(shape)
    assert dist.mu.shape == shape and dist.rho.shape == shape
    assert dist.num_params() == int(np.prod(shape))
    assert dist.sample().shape == shape
    assert sorted(dist.state_dict()) == ["mu", "mu_prior", "rho", "std_prior"]


def test_init_statistics_mu_and_rho_separate():
    torch.manual_seed(0)
    dist = GaussianDistribution((200, 200), mu_init=0.5, rho_init=-3.0)
    assert abs(dist.mu.mean().item() - 0.5) < 0.01 and abs(dist.mu.std().item() - 0.1) < 0.01
    assert abs(dist.rho.mean().item() + 3.0) < 0.01 and abs(dist.rho.std().item() - 0.1) < 0.01


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(0, 3)), "shape"),
        (dict(shape=(3, -1)), "shape"),
        (dict(shape=(3,), std_prior=0.0), "std_prior"),
        (dict(shape=(3,), std_prior=-1.0), "std_prior"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianDistribution(**kwargs)


def test_sigma_is_softplus_rho_and_stable():
    dist = GaussianDistribution((3,))
    with torch.no_grad():
        dist.rho.copy_(torch.tensor([-30.0, 0.0, 60.0]))
    sigma = dist.sigma()
    torch.testing.assert_close(
        sigma, torch.tensor([np.log1p(np.exp(-30.0)), np.log(2.0), 60.0], dtype=torch.float32)
    )
    assert torch.isfinite(sigma).all()


def test_fresh_samples_vary_and_have_the_right_moments():
    torch.manual_seed(0)
    dist = GaussianDistribution((4,), rho_init=-1.0)
    draws = torch.stack([dist.sample().detach() for _ in range(4000)])
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), dist.mu.detach(), atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), dist.sigma().detach(), atol=0.03, rtol=0)


@pytest.mark.parametrize("num_samples", [None, 1, 3])
def test_injected_noise_is_used_exactly(num_samples):
    dist = GaussianDistribution((4, 2), rho_init=-2.0)
    shape = (4, 2) if num_samples is None else (num_samples, 4, 2)
    eps = torch.randn(shape)
    dist.set_noise(eps)
    expected = dist.mu.detach() + F.softplus(dist.rho.detach()) * eps
    torch.testing.assert_close(dist.sample().detach(), expected)
    torch.testing.assert_close(dist.sample().detach(), expected)  # no redraw while injected
    dist.clear_noise()
    assert not torch.equal(dist.sample(), dist.sample())


def test_zero_noise_gives_the_mean():
    dist = GaussianDistribution((5,))
    dist.set_noise(torch.zeros(5))
    assert torch.equal(dist.sample().detach(), dist.mu.detach())


def test_log_prob_matches_scipy():
    dist = GaussianDistribution((6, 3), mu_prior=0.2, std_prior=0.5, rho_init=-2.0)
    x = dist.sample()
    np.testing.assert_allclose(dist.log_prob(x).item(), _reference_log_ratio(dist, x), rtol=1e-5, atol=1e-3)


def test_log_prob_with_sample_axis_is_the_average():
    dist = GaussianDistribution((6, 3), rho_init=-2.0)
    dist.set_noise(torch.randn(4, 6, 3))
    xs = dist.sample()
    per_sample = [dist.log_prob(xs[s]).item() for s in range(4)]
    np.testing.assert_allclose(dist.log_prob(xs).item(), np.mean(per_sample), rtol=1e-5)
    np.testing.assert_allclose(dist.log_prob(xs).item(), _reference_log_ratio(dist, xs), rtol=1e-5, atol=1e-3)


def test_log_prob_without_argument_uses_a_sample():
    dist = GaussianDistribution((6,), rho_init=-2.0)
    eps = torch.randn(6)
    dist.set_noise(eps)
    torch.testing.assert_close(dist.log_prob(), dist.log_prob(dist.sample()))
    dist.clear_noise()
    assert torch.isfinite(dist.log_prob())


def test_log_prob_is_a_one_sample_kl_estimate():
    """Averaged over many samples, log q - log p converges to the analytic KL(q || p)."""
    torch.manual_seed(0)
    dist = GaussianDistribution((5, 4), mu_prior=0.1, std_prior=0.3, mu_init=0.2, rho_init=-1.5)
    dist.set_noise(torch.randn(20000, 5, 4))
    estimate = dist.log_prob(dist.sample()).item()
    np.testing.assert_allclose(estimate, _analytic_kl(dist), rtol=0.02)


def test_gradients_flow_to_mu_and_rho():
    dist = GaussianDistribution((3, 2))
    x = dist.sample()
    (x.sum() + dist.log_prob(x)).backward()
    assert dist.mu.grad.abs().sum() > 0 and dist.rho.grad.abs().sum() > 0


def test_script_save_load():
    dist = GaussianDistribution((3, 2))
    scripted = torch.jit.script(dist)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    eps = torch.randn(2, 3, 2)
    for module in (scripted, loaded):
        module.set_noise(eps)
        torch.testing.assert_close(module.sample(), dist.mu + F.softplus(dist.rho) * eps)
        torch.testing.assert_close(
            module.log_prob(module.sample()), dist.log_prob(dist.mu + F.softplus(dist.rho) * eps)
        )
        module.clear_noise()
        assert not torch.equal(module.sample(), module.sample())
        assert module.num_params() == 6
        torch.testing.assert_close(module.sigma(), F.softplus(dist.rho))


def test_deepcopy_with_injected_noise():
    dist = GaussianDistribution((3,))
    dist.set_noise(torch.randn(3))
    twin = copy.deepcopy(dist)
    torch.testing.assert_close(twin.sample(), dist.sample())


def test_priors_are_buffers_that_move_with_the_module():
    dist = GaussianDistribution((3, 2), mu_prior=0.25, std_prior=0.5)
    buffers = dict(dist.named_buffers())
    assert set(buffers) == {"mu_prior", "std_prior"}
    assert buffers["mu_prior"].shape == (1,) and buffers["std_prior"].item() == 0.5
    double = copy.deepcopy(dist).double()
    assert double.std_prior.dtype == torch.float64 and double.mu.dtype == torch.float64
    x = double.mu.detach() + 0.1
    assert double.log_prob(x).dtype == torch.float64
    np.testing.assert_allclose(double.log_prob(x).item(), _reference_log_ratio(double, x), rtol=1e-10)
    # the KL estimate is still right: its average over many samples is the analytic KL
    torch.manual_seed(0)
    xs = torch.stack([dist.sample().detach() for _ in range(4000)])
    np.testing.assert_allclose(dist.log_prob(xs).item(), _analytic_kl(dist), rtol=0.05)


def test_state_dicts_without_prior_buffers_still_load():
    """A state dict saved before the priors were buffers (version 1, no prior keys) loads; the
    priors keep the constructor's values, which that version used."""
    import collections

    saved = GaussianDistribution((4,), mu_prior=0.5, std_prior=0.3)
    old = collections.OrderedDict((k, v) for k, v in saved.state_dict().items() if k in ("mu", "rho"))
    old._metadata = collections.OrderedDict({"": {"version": 1}})
    target = GaussianDistribution((4,), mu_prior=0.5, std_prior=0.3)
    target.load_state_dict(old)
    assert torch.equal(target.mu, saved.mu) and target.std_prior.item() == pytest.approx(0.3)
    # a current state dict must be complete (strict loading still catches missing priors)
    new = saved.state_dict()
    del new["std_prior"]
    with pytest.raises(RuntimeError, match="std_prior"):
        target.load_state_dict(new)
    # and a current one carries the priors over
    other = GaussianDistribution((4,), mu_prior=0.0, std_prior=1.0)
    other.load_state_dict(saved.state_dict())
    assert other.std_prior.item() == pytest.approx(0.3) and other.mu_prior.item() == 0.5


def test_scripted_distribution_keeps_noise_injection_and_prior_buffers():
    dist = GaussianDistribution((2, 3), std_prior=0.2)
    scripted = torch.jit.script(dist)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    eps = torch.randn(2, 3)
    loaded.set_noise(eps)
    torch.testing.assert_close(loaded.sample(), dist.mu + F.softplus(dist.rho) * eps)
    torch.testing.assert_close(loaded.log_prob(dist.mu.detach()), dist.log_prob(dist.mu.detach()))
    loaded.clear_noise()
    assert not torch.equal(loaded.sample(), loaded.sample())
    assert loaded.std_prior.item() == pytest.approx(0.2)
