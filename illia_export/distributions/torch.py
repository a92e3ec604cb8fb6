"""Mean-field Gaussian weight distribution for PyTorch: ``w = mu + softplus(rho) * eps``.

The noise ``eps`` is normally drawn inside :meth:`GaussianDistribution.sample`; exporters and
runtimes *inject* it instead through :meth:`set_noise`, which is how a deterministic graph with
the noise as an explicit input is produced. Injected noise may carry a leading sample axis
``[S, *shape]``; the sample then has that axis too.
"""

import torch
import torch.nn.functional as F
from torch import nn


class GaussianDistribution(nn.Module):
    """A learnable diagonal Gaussian over a parameter tensor of shape `shape`.

    Args:
        shape: shape of the parameter tensor (e.g. ``(out, in)`` for a Linear weight).
        mu_prior: mean of the Gaussian prior ``p(w)``.
        std_prior: standard deviation of the prior (> 0).
        mu_init: mean of the initial ``mu`` values (drawn as ``N(mu_init, 0.1)``).
        rho_init: mean of the initial ``rho`` values (drawn as ``N(rho_init, 0.1)``);
            ``sigma = softplus(rho)``, so -7 gives ``sigma ~ 9e-4``.

    Attributes:
        mu_prior, std_prior: the prior's mean and standard deviation as registered buffers of
            shape ``[1]`` (as in the seed), so they follow ``.to(device/dtype)`` and are part of
            ``state_dict()``. State dicts saved before they were buffers (without these keys)
            still load: the missing priors keep the values given to the constructor, which is
            what those versions used.
    """

    # version 2: mu_prior/std_prior are buffers (version 1 kept them as Python floats)
    _version = 2

    noise: torch.Tensor
    use_noise: bool
    mu_prior: torch.Tensor
    std_prior: torch.Tensor

    def __init__(
        self,
        shape: tuple[int, ...],
        mu_prior: float = 0.0,
        std_prior: float = 0.1,
        mu_init: float = 0.0,
        rho_init: float = -7.0,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise ValueError(f"`shape` (={shape}) must have positive dims")
        if not std_prior > 0:
            raise ValueError(f"`std_prior` (={std_prior}) must be positive")
        self.shape = list(shape)
        self.register_buffer("mu_prior", torch.tensor([float(mu_prior)]))
        self.register_buffer("std_prior", torch.tensor([float(std_prior)]))
        self.mu = nn.Parameter(torch.empty(shape).normal_(mu_init, 0.1))
        self.rho = nn.Parameter(torch.empty(shape).normal_(rho_init, 0.1))
        self.noise = torch.zeros(0)
        self.use_noise = False

    @torch.jit.export
    def set_noise(self, eps: torch.Tensor) -> None:
        """Use `eps` (shape ``shape`` or ``[S, *shape]``) instead of drawing noise in `sample`."""
        self.noise = eps
        self.use_noise = True

    @torch.jit.export
    def clear_noise(self) -> None:
        """Go back to drawing fresh noise in `sample`."""
        self.noise = torch.zeros(0)
        self.use_noise = False

    @torch.jit.export
    def sigma(self) -> torch.Tensor:
        """Posterior standard deviation ``softplus(rho)``."""
        return F.softplus(self.rho)

    @torch.jit.export
    def sample(self) -> torch.Tensor:
        """One sample ``mu + softplus(rho) * eps`` (eps injected or freshly drawn)."""
        if self.use_noise:
            eps = self.noise
        else:
            eps = torch.randn_like(self.rho)
        return self.mu + F.softplus(self.rho) * eps

    @torch.jit.export
    def log_prob(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """``sum log q(x) - sum log p(x)``: the seed's one-sample KL estimate, not a density.

        `x` may carry leading sample axes; the result is then averaged over them. With
        ``x=None`` a fresh sample is used.
        """
        if x is None:
            x = self.sample()
        half_log_2pi = 0.9189385332046727  # 0.5 * log(2 pi)
        sigma = F.softplus(self.rho)
        log_q = -half_log_2pi - torch.log(sigma) - (x - self.mu) ** 2 / (2.0 * sigma**2)
        log_p = -half_log_2pi - torch.log(self.std_prior) - (x - self.mu_prior) ** 2 / (2.0 * self.std_prior**2)
        n_samples = x.numel() // self.mu.numel()
        return (log_q.sum() - log_p.sum()) / n_samples

    @torch.jit.export
    def num_params(self) -> int:
        """Number of scalar parameters the distribution covers (``prod(shape)``)."""
        return self.mu.numel()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # State dicts of version 1 (priors were Python floats, not saved): keep this module's
        # priors, i.e. the constructor's values, which is what version 1 used.
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            for name in ("mu_prior", "std_prior"):
                key = prefix + name
                if key not in state_dict:
                    state_dict[key] = getattr(self, name).detach().clone()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
