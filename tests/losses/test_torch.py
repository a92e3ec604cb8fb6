"""``KLDivergenceLoss`` and ``ELBOLoss`` (PyTorch)."""

import doctest

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import illia_export.losses.torch as losses_module
from illia_export.distributions.torch import GaussianDistribution
from illia_export.losses.torch import ELBOLoss, KLDivergenceLoss, bayesian_modules
from illia_export.nn.torch import LSTM, Conv1d, Linear, freeze
from tests.nn.torch import _helpers as h


class _Net(nn.Module):
    """Nested Bayesian layers of different sizes (the last one is the smallest)."""

    def __init__(self):
        super().__init__()
        self.conv = Conv1d(2, 3, 3)
        self.body = nn.Sequential(nn.Flatten(), Linear(3 * 4, 8), nn.ReLU())
        self.head = Linear(8, 2, weights_distribution=GaussianDistribution((2, 8), std_prior=1.0))

    def forward(self, x):
        return self.head(self.body(self.conv(x)))


def _x():
    return torch.randn(5, 2, 6, generator=torch.Generator().manual_seed(0))


def _targets():
    return torch.tensor([0, 1, 1, 0, 1])


def _reference_kl(model):
    total, count = 0.0, 0
    for module in bayesian_modules(model):
        for name, dist in h.own_distributions(module).items():
            total += h.reference_log_ratio(dist, h.stored_sample(module, name))
            count += dist.mu.numel()
    return total, count


def test_finds_nested_bayesian_layers_eager_and_scripted():
    model = _Net()
    assert [type(m).__name__ for m in bayesian_modules(model)] == ["Conv1d", "Linear", "Linear"]
    assert len(bayesian_modules(torch.jit.script(model))) == 3
    lstm = LSTM(10, 4, 5, 3)
    assert len(bayesian_modules(lstm)) == 2  # the LSTM and its embedding, each counted once


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_kl_is_global_sum_over_global_count(weight):
    model = _Net()
    model(_x())
    total, count = _reference_kl(model)
    value = KLDivergenceLoss(weight=weight)(model)
    assert value.dim() == 0
    np.testing.assert_allclose(value.item(), weight * total / count, rtol=1e-4)
    # Not the seed's defect (dividing by the last layer's count).
    last_count = model.head.kl_cost()[1]
    assert count != last_count
    assert not np.isclose(value.item(), weight * total / last_count, rtol=1e-3)


def test_kl_includes_lstm_embedding():
    model = LSTM(10, 4, 5, 3)
    model(torch.randint(0, 10, (2, 3)))
    total, count = _reference_kl(model)
    assert count == model.kl_cost()[1] + model.embedding.kl_cost()[1]
    np.testing.assert_allclose(KLDivergenceLoss()(model).item(), total / count, rtol=1e-4)


def test_kl_on_scripted_model_matches_eager():
    model = _Net()
    model(_x())
    scripted = torch.jit.script(model)  # shares mu/rho and starts from the same stored samples
    torch.testing.assert_close(KLDivergenceLoss()(scripted), KLDivergenceLoss()(model))
    scripted(_x())  # a fresh draw inside the scripted copy
    total, count = _reference_kl(scripted)
    np.testing.assert_allclose(KLDivergenceLoss()(scripted).item(), total / count, rtol=1e-4)


def test_kl_gradients_reach_every_distribution():
    model = _Net()
    model(_x())
    KLDivergenceLoss()(model).backward()
    for name, dist in h.distributions(model).items():
        assert dist.mu.grad is not None and dist.rho.grad.abs().sum() > 0, name


def test_kl_of_a_model_without_bayesian_layers_is_zero():
    value = KLDivergenceLoss()(nn.Linear(3, 2))
    assert value.item() == 0.0 and value.dim() == 0


@pytest.mark.parametrize("reduction", ["sum", "none", "MEAN"])
def test_kl_rejects_unknown_reduction(reduction):
    with pytest.raises(ValueError, match="reduction"):
        KLDivergenceLoss(reduction=reduction)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), "1"])
def test_kl_rejects_bad_weight(weight):
    with pytest.raises(ValueError, match="weight"):
        KLDivergenceLoss(weight=weight)


@pytest.mark.parametrize("num_samples", [1, 4])
def test_elbo_reruns_the_model_per_sample(num_samples):
    model = _Net()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    elbo = ELBOLoss(F.cross_entropy, num_samples=num_samples, kl_weight=0.1)
    torch.manual_seed(3)
    value = elbo(_x(), _targets(), model)
    assert len(calls) == num_samples
    torch.manual_seed(3)
    terms = []
    for _ in range(num_samples):
        out = model(_x())
        terms.append(F.cross_entropy(out, _targets()) + 0.1 * KLDivergenceLoss()(model))
    torch.testing.assert_close(value, torch.stack(terms).mean())
    if num_samples > 1:
        assert len({round(t.item(), 6) for t in terms}) == num_samples  # genuinely different draws


def test_elbo_monte_carlo_reduces_variance():
    """Real MC: averaging K fresh draws shrinks the estimator's spread (the seed's did not)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Linear(4, 8, weights_distribution=GaussianDistribution((8, 4), rho_init=-0.5)),
        nn.Tanh(),
        Linear(8, 3),
    )
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with torch.no_grad():
        one = torch.stack([ELBOLoss(F.cross_entropy, 1)(x, y, model) for _ in range(40)])
        many = torch.stack([ELBOLoss(F.cross_entropy, 16)(x, y, model) for _ in range(40)])
    assert many.std() < 0.5 * one.std()


def test_elbo_frozen_model_is_one_draw():
    model = freeze(_Net())
    elbo = ELBOLoss(F.cross_entropy, num_samples=3, kl_weight=0.5)
    expected = F.cross_entropy(model(_x()), _targets()) + 0.5 * KLDivergenceLoss()(model)
    torch.testing.assert_close(elbo(_x(), _targets(), model), expected)


def test_elbo_backward_and_training_step_reduce_loss():
    torch.manual_seed(0)
    model = _Net()
    elbo = ELBOLoss(F.cross_entropy, num_samples=2, kl_weight=1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = _x(), _targets()
    with torch.no_grad():
        before = np.mean([elbo(x, y, model).item() for _ in range(5)])
    for _ in range(30):
        opt.zero_grad()
        elbo(x, y, model).backward()
        opt.step()
    with torch.no_grad():
        after = np.mean([elbo(x, y, model).item() for _ in range(5)])
    assert after < before


def test_elbo_with_tuple_inputs_and_tuple_outputs():
    model = LSTM(10, 4, 5, 3)
    tokens = torch.randint(0, 10, (2, 6))
    states = (torch.zeros(2, 5), torch.zeros(2, 5))
    elbo = ELBOLoss(lambda out, t: F.cross_entropy(out[0], t), num_samples=2)
    value = elbo((tokens, states), torch.tensor([0, 2]), model)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert model.wf_distribution.mu.grad is not None


def test_elbo_on_scripted_model():
    scripted = torch.jit.script(_Net())
    value = ELBOLoss(F.cross_entropy, num_samples=2)(_x(), _targets(), scripted)
    value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize("num_samples", [0, -2, 1.5, True])
def test_elbo_rejects_bad_num_samples(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        ELBOLoss(F.cross_entropy, num_samples=num_samples)


def test_elbo_rejects_bad_arguments():
    with pytest.raises(TypeError, match="loss_function"):
        ELBOLoss("cross_entropy")
    with pytest.raises(ValueError, match="kl_weight"):
        ELBOLoss(F.cross_entropy, kl_weight=-1e-3)


def test_module_docstring_example_runs():
    result = doctest.testmod(losses_module)
    assert result.attempted > 0 and result.failed == 0
