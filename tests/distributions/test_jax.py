"""Tests of illia_export.distributions.jax.GaussianDistribution."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from illia_export.distributions.jax import GaussianDistribution


def test_init_statistics_fix_seed_defect():
    dist = GaussianDistribution((200, 100), mu_init=0.5, rho_init=-3.0, rngs=nnx.Rngs(1))
    mu, rho = np.asarray(dist.mu[...]), np.asarray(dist.rho[...])
    assert abs(mu.mean() - 0.5) < 0.01 and abs(mu.std() - 0.1) < 0.01
    assert abs(rho.mean() + 3.0) < 0.01 and abs(rho.std() - 0.1) < 0.01
    assert not np.allclose(mu, rho + 3.5)  # independent draws
    assert isinstance(dist.mu, nnx.Param) and isinstance(dist.rho, nnx.Param)
    assert dist.num_params == 20000


def test_sample_is_fresh_each_call_and_reproducible_by_seed():
    dist = GaussianDistribution((5,), rho_init=0.0, rngs=nnx.Rngs(0))
    a, b = dist.sample(), dist.sample()
    assert not np.allclose(a, b)
    assert not np.allclose(dist(), a)
    again = GaussianDistribution((5,), rho_init=0.0, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(again.sample(), a)
    # explicit rngs
    s1 = dist.sample(nnx.Rngs(sample=3))
    s2 = dist.sample(nnx.Rngs(sample=3))
    np.testing.assert_array_equal(s1, s2)


def test_sample_statistics():
    dist = GaussianDistribution((4000,), mu_init=1.0, rho_init=0.0, rngs=nnx.Rngs(2))
    w = np.asarray(dist.sample()) - np.asarray(dist.mu[...])
    sigma = np.log1p(np.exp(np.asarray(dist.rho[...])))
    z = w / sigma
    assert abs(z.mean()) < 0.06 and abs(z.std() - 1) < 0.06


def test_noise_injection_with_and_without_sample_axis():
    dist = GaussianDistribution((3, 2), rho_init=-1.0, rngs=nnx.Rngs(0))
    eps = jax.random.normal(jax.random.key(0), (4, 3, 2))
    expected = dist.mu[...] + jax.nn.softplus(dist.rho[...]) * eps
    dist.set_noise(eps)
    np.testing.assert_allclose(dist.sample(), expected, rtol=1e-6)
    np.testing.assert_allclose(dist.sample_from_noise(eps[0]), expected[0], rtol=1e-6)
    dist.set_noise(jnp.zeros((3, 2)))
    np.testing.assert_array_equal(dist.sample(), dist.mu[...])
    dist.clear_noise()
    assert not np.allclose(dist.sample(), dist.mu[...])
    with pytest.raises(ValueError, match="does not fit"):
        dist.set_noise(jnp.zeros((2, 3)))


def test_log_prob_matches_numpy_and_averages_sample_axis():
    dist = GaussianDistribution((6,), mu_prior=0.2, std_prior=0.5, rho_init=-1.0, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    mu, sigma = np.asarray(dist.mu[...], np.float64), np.log1p(np.exp(np.asarray(dist.rho[...], np.float64)))

    def ref(v):
        c = 0.5 * math.log(2 * math.pi)
        lq = -c - np.log(sigma) - (v - mu) ** 2 / (2 * sigma**2)
        lp = -c - math.log(0.5) - (v - 0.2) ** 2 / (2 * 0.25)
        return lq.sum() - lp.sum()

    np.testing.assert_allclose(float(dist.log_prob(jnp.asarray(x[0]))), ref(x[0]), rtol=1e-5)
    np.testing.assert_allclose(float(dist.log_prob(jnp.asarray(x))), np.mean([ref(v) for v in x]), rtol=1e-5)
    assert np.isfinite(float(dist.log_prob()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        GaussianDistribution((3, 0))
    with pytest.raises(ValueError, match="std_prior"):
        GaussianDistribution((3,), std_prior=0.0)


def test_gradients_reach_mu_and_rho():
    dist = GaussianDistribution((3,), rngs=nnx.Rngs(0))
    dist.set_noise(jnp.ones((3,)))
    grads = nnx.grad(lambda d: jnp.sum(d.sample() ** 2) + d.log_prob(d.sample()))(dist)
    assert float(jnp.abs(grads["mu"][...]).max()) > 0
    assert float(jnp.abs(grads["rho"][...]).max()) > 0
