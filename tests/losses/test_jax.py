"""Tests of illia_export.losses.jax: global KL normalisation, real Monte Carlo ELBO, training."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from illia_export.distributions.jax import GaussianDistribution
from illia_export.losses.jax import ELBOLoss, KLDivergenceLoss
from illia_export.nn.jax import Linear, freeze


class MLP(nnx.Module):
    def __init__(self, sizes, rngs, std_prior=0.1):
        self.layers = nnx.List(
            [
                Linear(
                    a,
                    b,
                    weights_distribution=GaussianDistribution((b, a), std_prior=std_prior, rho_init=-5.0, rngs=rngs),
                    bias_distribution=GaussianDistribution((b,), std_prior=std_prior, rho_init=-5.0, rngs=rngs),
                    rngs=rngs,
                )
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def test_kl_divides_by_global_parameter_count():
    model = MLP([3, 4, 2], nnx.Rngs(0))
    model(jnp.ones((1, 3)))
    kls = [layer.kl_cost() for layer in model.layers]
    expected = sum(float(k) for k, _ in kls) / sum(n for _, n in kls)
    assert sum(n for _, n in kls) == 3 * 4 + 4 + 4 * 2 + 2
    np.testing.assert_allclose(float(KLDivergenceLoss()(model)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(KLDivergenceLoss(weight=0.5)(model)), 0.5 * expected, rtol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        KLDivergenceLoss(reduction="sum")
    with pytest.raises(ValueError, match="no Bayesian"):
        KLDivergenceLoss()(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_elbo_runs_the_model_once_per_sample_with_fresh_weights():
    model = MLP([3, 2], nnx.Rngs(0))
    seen = []

    def loss_fn(outputs, targets):
        seen.append(np.asarray(outputs))
        return jnp.mean((outputs - targets) ** 2)

    elbo = ELBOLoss(loss_fn, num_samples=3, kl_weight=0.0)
    x, t = jnp.ones((2, 3)), jnp.zeros((2, 2))
    value = float(elbo(x, t, model))
    assert len(seen) == 3
    assert not np.allclose(seen[0], seen[1]) and not np.allclose(seen[1], seen[2])
    np.testing.assert_allclose(value, np.mean([np.mean(s**2) for s in seen]), rtol=1e-5)
    with pytest.raises(ValueError, match="num_samples"):
        ELBOLoss(loss_fn, num_samples=0)


def test_elbo_kl_term_and_gradients():
    model = MLP([3, 2], nnx.Rngs(0))
    freeze(model)  # fixed weights: the ELBO is then loss + kl_weight * KL exactly
    x, t = jnp.ones((2, 3)), jnp.zeros((2, 2))
    mse = lambda y, tt: jnp.mean((y - tt) ** 2)  # noqa: E731
    value = float(ELBOLoss(mse, num_samples=2, kl_weight=0.1)(x, t, model))
    expected = float(mse(model(x), t)) + 0.1 * float(KLDivergenceLoss()(model))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def _xent(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def test_bayesian_mlp_trains_on_digits_and_is_uncertain_on_held_out_classes():
    datasets = pytest.importorskip("sklearn.datasets")
    start = time.time()
    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    inside = np.flatnonzero(y < 8)
    rng.shuffle(inside)
    n_test = len(inside) // 5
    test_idx, train_idx = inside[:n_test], inside[n_test:]
    ood = np.flatnonzero(y >= 8)
    x_train, y_train = jnp.asarray(x[train_idx]), jnp.asarray(y[train_idx])

    model = MLP([64, 64, 8], nnx.Rngs(params=0, sample=1), std_prior=1.0)
    # full-dataset KL weighting: the KL is per parameter, so scale by num_params / N
    num_params = sum(n for _, n in (layer.kl_cost() for layer in model.layers))
    elbo = ELBOLoss(_xent, num_samples=1, kl_weight=num_params / len(train_idx))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)

    @jax.jit
    def step(params, rest, m, v, t, xb, yb):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            loss = elbo(xb, yb, model)
            return loss, nnx.state(model, nnx.Not(nnx.Param))

        (loss, rest), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        lr, c1, c2 = 5e-3, 1 - 0.9**t, 1 - 0.999**t
        params = jax.tree_util.tree_map(lambda p, a, b: p - lr * (a / c1) / (jnp.sqrt(b / c2) + 1e-8), params, m, v)
        return params, rest, m, v, loss

    batch = 64
    t = 0
    for _ in range(15):
        order = rng.permutation(len(train_idx))
        for i in range(0, len(order) - batch + 1, batch):
            t += 1
            idx = order[i : i + batch]
            params, rest, m, v, loss = step(params, rest, m, v, t, x_train[idx], y_train[idx])
    assert np.isfinite(float(loss))
    model = nnx.merge(graphdef, params, rest)

    @nnx.jit
    def one_sample(model, xs):  # one compiled draw, called 16 times (an unrolled 16 compiles ~16x longer)
        return jax.nn.softmax(model(xs))

    def predictive(model, xs):
        mean = jnp.stack([one_sample(model, xs) for _ in range(16)]).mean(0)
        return mean, -jnp.sum(mean * jnp.log(mean + 1e-12), axis=-1)

    mean_in, entropy_in = predictive(model, jnp.asarray(x[test_idx]))
    _, entropy_ood = predictive(model, jnp.asarray(x[ood]))
    accuracy = float(np.mean(np.argmax(np.asarray(mean_in), -1) == y[test_idx]))
    print(f"digits: accuracy {accuracy:.3f}, entropy in {float(entropy_in.mean()):.3f} vs held-out {float(entropy_ood.mean()):.3f}, {time.time() - start:.0f}s")
    assert accuracy >= 0.90, accuracy
    assert float(entropy_ood.mean()) > float(entropy_in.mean()), (float(entropy_ood.mean()), float(entropy_in.mean()))


def test_losses_are_nnx_modules_usable_in_nnx_transforms():
    """As in the seed, the losses are ``nnx.Module`` s: ``nnx.value_and_grad(loss_fn)(loss, model)``
    works (a plain class there fails with "not a valid JAX type")."""
    from flax import nnx

    from illia_export.losses.jax import ELBOLoss, KLDivergenceLoss
    from illia_export.nn.jax import Linear

    class Net(nnx.Module):
        def __init__(self):
            self.fc = Linear(3, 2, rngs=nnx.Rngs(params=0, sample=1))

        def __call__(self, x):
            return self.fc(x)

    model = Net()
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
    elbo = ELBOLoss(lambda out, t: jnp.mean((out - t) ** 2), num_samples=2)
    assert isinstance(elbo, nnx.Module) and isinstance(elbo.kl_loss, nnx.Module)
    assert isinstance(KLDivergenceLoss(), nnx.Module)

    def loss_fn(loss, model):
        return loss(x, y, model)

    value, grads = nnx.value_and_grad(loss_fn)(elbo, model)  # the seed's call: grads w.r.t. the loss
    assert jnp.isfinite(value) and len(jax.tree_util.tree_leaves(grads)) == 0
    value, grads = nnx.value_and_grad(loss_fn, argnums=1)(elbo, model)
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 4 and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(grads["fc"]["weights_distribution"]["mu"].get_value()).sum()) > 0
    kl_value, kl_grads = nnx.value_and_grad(lambda loss, m: loss(m), argnums=1)(KLDivergenceLoss(), model)
    assert kl_value > 0 and len(jax.tree_util.tree_leaves(kl_grads)) == 4
