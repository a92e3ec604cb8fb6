"""Shared checks for the Bayesian PyTorch layer tests.

Every check works on eager and TorchScript modules alike: distributions are found by their
``set_noise`` method, stored samples by the ``<name>_distribution`` -> ``<name>`` convention.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

ATOL = 1e-5


def distributions(module: nn.Module) -> dict[str, nn.Module]:
    """Every Gaussian distribution in `module`, by dotted name."""
    return {name: m for name, m in module.named_modules() if hasattr(m, "set_noise") and hasattr(m, "rho")}


def own_distributions(module: nn.Module) -> dict[str, nn.Module]:
    """The distributions a layer's own ``kl_cost`` covers (direct children only)."""
    return {name: m for name, m in module.named_children() if hasattr(m, "set_noise") and hasattr(m, "rho")}


def stored_sample(module: nn.Module, dist_name: str) -> torch.Tensor:
    """The sample a layer stores for its distribution ``<attr>_distribution``."""
    owner = module
    *path, leaf = dist_name.split(".")
    for part in path:
        owner = getattr(owner, part)
    return getattr(owner, leaf[: -len("_distribution")])


def inject(module: nn.Module, num_samples: int | None = None, seed: int = 0, scale: float = 1.0) -> dict:
    """Inject standard-normal noise (times `scale`) into every distribution; return it by name."""
    gen = torch.Generator().manual_seed(seed)
    noise = {}
    for name, dist in distributions(module).items():
        shape = list(dist.mu.shape) if num_samples is None else [num_samples, *dist.mu.shape]
        eps = torch.randn(shape, generator=gen) * scale
        dist.set_noise(eps)
        noise[name] = eps
    return noise


def inject_given(module: nn.Module, noise: dict) -> None:
    dists = distributions(module)
    assert set(dists) == set(noise)
    for name, eps in noise.items():
        dists[name].set_noise(eps)


def clear(module: nn.Module) -> None:
    for dist in distributions(module).values():
        dist.clear_noise()


def weight(dist: nn.Module, eps: torch.Tensor) -> torch.Tensor:
    """``mu + softplus(rho) * eps``, detached: what a layer must use for noise `eps`."""
    return (dist.mu + F.softplus(dist.rho) * eps).detach()


def weights_for(module: nn.Module, noise: dict) -> dict:
    dists = distributions(module)
    return {name: weight(dists[name], eps) for name, eps in noise.items()}


def reference_log_ratio(dist: nn.Module, x: torch.Tensor) -> float:
    """``sum log q(x) - sum log p(x)`` with scipy, in float64 (averaged over a sample axis)."""
    mu = dist.mu.detach().double().numpy()
    sigma = np.log1p(np.exp(dist.rho.detach().double().numpy()))
    xs = x.detach().double().numpy()
    log_q = norm.logpdf(xs, loc=mu, scale=sigma).sum()
    log_p = norm.logpdf(xs, loc=float(dist.mu_prior), scale=float(dist.std_prior)).sum()
    return float(log_q - log_p) / (xs.size // mu.size)


def main(out) -> torch.Tensor:
    """The main output (the LSTM returns ``(y, (h, c))``)."""
    return out[0] if isinstance(out, tuple) else out


def flat(out) -> torch.Tensor:
    """All outputs flattened into one vector (for exact comparisons of nested outputs)."""
    if isinstance(out, (tuple, list)):
        return torch.cat([flat(o) for o in out])
    return out.reshape(-1)


def rows(out, start: int, stop: int):
    """Rows ``[start, stop)`` of every output (sample-major blocks)."""
    if isinstance(out, (tuple, list)):
        return type(out)(rows(o, start, stop) for o in out)
    return out[start:stop]


def assert_close(a, b, atol: float = ATOL) -> None:
    torch.testing.assert_close(flat(a), flat(b), atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------- generic checks


def check_stochastic_and_frozen(layer: nn.Module, x) -> None:
    """Unfrozen: two calls differ. Frozen: identical, and equal to the stored sample's output."""
    call = (lambda: layer(*x)) if isinstance(x, tuple) else (lambda: layer(x))
    layer.unfreeze()
    a, b = flat(call()), flat(call())
    assert not torch.equal(a, b)
    layer.freeze()
    c, d = flat(call()), flat(call())
    assert torch.equal(c, d)
    assert torch.equal(b, c), "freeze must keep the last sample, not draw a new one"
    layer.unfreeze()
    assert not torch.equal(flat(call()), c)


def check_kl_cost(layer: nn.Module, x, expected_params: int) -> None:
    """kl_cost at the stored sample equals an independent scipy computation."""
    layer.unfreeze()
    layer(*x) if isinstance(x, tuple) else layer(x)
    kl, count = layer.kl_cost()
    dists = own_distributions(layer)
    reference = sum(reference_log_ratio(d, stored_sample(layer, n)) for n, d in dists.items())
    assert count == expected_params == sum(d.mu.numel() for d in dists.values())
    assert kl.dim() == 0
    np.testing.assert_allclose(kl.item(), reference, rtol=1e-4, atol=1e-2)


def check_gradients(layer: nn.Module, x) -> None:
    """Gradients of output + KL reach every mu and rho."""
    layer.unfreeze()
    layer.zero_grad()
    out = layer(*x) if isinstance(x, tuple) else layer(x)
    (flat(out).pow(2).sum() + layer.kl_cost()[0]).backward()
    for name, dist in distributions(layer).items():
        for pname in ("mu", "rho"):
            grad = getattr(dist, pname).grad
            assert grad is not None, f"{name}.{pname} has no gradient"
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{name}.{pname} gradient is zero"


def check_sample_axis(layer: nn.Module, x, num_samples: int, batch: int, stack: Callable) -> None:
    """Noise ``[S, ...]`` on S stacked copies of the batch: block s == the run with noise[s]."""
    noise = inject(layer, num_samples=num_samples, seed=1)
    big = layer(*stack(x, num_samples)) if isinstance(x, tuple) else layer(stack(x, num_samples))
    for s in range(num_samples):
        inject_given(layer, {k: v[s] for k, v in noise.items()})
        single = layer(*x) if isinstance(x, tuple) else layer(x)
        assert_close(rows(big, s * batch, (s + 1) * batch), single)
    clear(layer)


def check_noise_leaves_state(layer: nn.Module, x) -> None:
    """Injected noise takes precedence over freeze and leaves the stored (frozen) sample alone."""
    call = (lambda: layer(*x)) if isinstance(x, tuple) else (lambda: layer(x))
    layer.freeze()
    frozen = flat(call())
    inject(layer, seed=5)
    injected = flat(call())
    assert not torch.equal(frozen, injected)
    clear(layer)
    assert torch.equal(flat(call()), frozen)
    layer.unfreeze()


def check_script_roundtrip(layer: nn.Module, x) -> None:
    """Script -> save -> load: same outputs for the same noise; freeze/unfreeze/kl_cost work."""
    layer.unfreeze()
    scripted = torch.jit.script(layer)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    call = (lambda m: m(*x)) if isinstance(x, tuple) else (lambda m: m(x))
    noise = inject(layer, seed=3)
    expected = call(layer)
    clear(layer)
    for module in (scripted, loaded):
        inject_given(module, noise)
        assert_close(call(module), expected)
        clear(module)
        assert not torch.equal(flat(call(module)), flat(call(module)))
        module.freeze()
        assert torch.equal(flat(call(module)), flat(call(module)))
        module.unfreeze()
        assert not torch.equal(flat(call(module)), flat(call(module)))
        kl, count = module.kl_cost()
        assert isinstance(count, int) and count == layer.kl_cost()[1]
        assert torch.isfinite(kl)


def check_trace_roundtrip(layer: nn.Module, x) -> None:
    """Tracing records the sampling ops (no baked sample); a frozen trace bakes the frozen sample."""
    call = (lambda m: m(*x)) if isinstance(x, tuple) else (lambda m: m(x))
    layer.unfreeze()
    traced = torch.jit.trace(layer, x if isinstance(x, tuple) else (x,), check_trace=False)
    layer.freeze()
    frozen_expected = flat(call(layer))
    traced_frozen = torch.jit.trace(layer, x if isinstance(x, tuple) else (x,), check_trace=False)
    layer.unfreeze()
    for module, stochastic in ((traced, True), (traced_frozen, False)):
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        a, b = flat(call(loaded)), flat(call(loaded))
        if stochastic:
            assert not torch.equal(a, b)
        else:
            assert torch.equal(a, b)
            torch.testing.assert_close(a, frozen_expected)
        loaded.freeze()
        loaded.unfreeze()
        kl, count = loaded.kl_cost()
        assert count == layer.kl_cost()[1] and torch.isfinite(kl)


def check_deepcopy_and_state_dict(make: Callable[[], nn.Module], x) -> None:
    """After a training step: deepcopy works, state_dict holds only mu/rho and the prior buffers
    (no stored sample) and round-trips."""
    torch.manual_seed(0)
    layer = make()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    out = layer(*x) if isinstance(x, tuple) else layer(x)
    (flat(out).pow(2).mean() + layer.kl_cost()[0] * 1e-3).backward()
    opt.step()
    layer(*x) if isinstance(x, tuple) else layer(x)  # stored sample now carries autograd history
    twin = copy.deepcopy(layer)
    state = layer.state_dict()
    assert state and all(k.endswith((".mu", ".rho", ".mu_prior", ".std_prior")) for k in state), sorted(state)
    fresh = make()
    fresh.load_state_dict(state)
    noise = inject(layer, seed=7)
    expected = layer(*x) if isinstance(x, tuple) else layer(x)
    for other in (twin, fresh):
        inject_given(other, noise)
        assert_close(other(*x) if isinstance(x, tuple) else other(x), expected)
    # The copy is independent: changing the original's parameters leaves the copy alone.
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    assert not torch.equal(flat(layer(*x) if isinstance(x, tuple) else layer(x)), flat(expected))
    assert_close(twin(*x) if isinstance(x, tuple) else twin(x), expected)
