"""End-to-end: a Bayesian MLP trained with the ELBO on scikit-learn digits.

Digits 0-7 are in-distribution (train/test split); digits 8-9 are held out as
out-of-distribution inputs. The trained model must classify the in-distribution test set
well, and its Monte Carlo predictive entropy must be higher on the held-out digits.
"""

import numpy as np
import pytest
import torch
from torch import nn

from illia_export.distributions.torch import GaussianDistribution
from illia_export.losses.torch import ELBOLoss
from illia_export.nn.torch import Linear, freeze, unfreeze

datasets = pytest.importorskip("sklearn.datasets")
model_selection = pytest.importorskip("sklearn.model_selection")

NUM_CLASSES = 8
HIDDEN = 64
STEPS = 200
MC_SAMPLES = 32


def _bayes_linear(n_in: int, n_out: int) -> Linear:
    return Linear(
        n_in,
        n_out,
        weights_distribution=GaussianDistribution((n_out, n_in), std_prior=1.0, rho_init=-5.0),
        bias_distribution=GaussianDistribution((n_out,), std_prior=1.0, rho_init=-5.0),
    )


def _data():
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    ind = y < NUM_CLASSES
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
        x[ind], y[ind], test_size=0.3, random_state=0, stratify=y[ind]
    )
    x_ood = x[~ind]
    return [torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te, x_ood)]


def _mc_probs(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([torch.softmax(model(x), -1) for _ in range(samples)])  # [S, B, C]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


@pytest.fixture
def one_thread():
    # Tiny matmuls: one thread is several times faster than two on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_bayesian_mlp_digits_accuracy_and_ood_entropy(one_thread):
    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te, x_ood = _data()
    model = nn.Sequential(_bayes_linear(64, HIDDEN), nn.ReLU(), _bayes_linear(HIDDEN, NUM_CLASSES))
    num_params = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".mu"))
    # KL per parameter * num_params / N = full KL spread over the training set (per-example ELBO).
    elbo = ELBOLoss(nn.functional.cross_entropy, num_samples=1, kl_weight=num_params / len(x_tr))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = elbo(x_tr, y_tr, model)
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)

    probs_te = _mc_probs(model, x_te, MC_SAMPLES)
    probs_ood = _mc_probs(model, x_ood, MC_SAMPLES)
    accuracy = (probs_te.mean(0).argmax(-1) == y_te).float().mean().item()
    entropy_in = _entropy(probs_te.mean(0)).mean().item()
    entropy_ood = _entropy(probs_ood.mean(0)).mean().item()
    assert accuracy >= 0.90, f"test accuracy {accuracy:.3f}"
    assert entropy_ood > entropy_in, f"OOD entropy {entropy_ood:.3f} <= in-distribution {entropy_in:.3f}"

    # The posterior is genuinely stochastic after training, and freezing makes it deterministic.
    assert (probs_te[0] - probs_te[1]).abs().max() > 0
    freeze(model)
    assert torch.equal(model(x_te), model(x_te))
    unfreeze(model)
    assert not torch.equal(model(x_te), model(x_te))
