"""Bayesian embedding table (illia's ``Embedding``)."""

from typing import Any

import torch
import torch.nn.functional as F

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch.module import BayesianModule, check_distribution_shape, check_positive


class Embedding(BayesianModule):
    """Lookup in a sampled table ``w ~ q(w)`` of shape ``(num_embeddings, embeddings_dim)``.

    Input: integer indices ``[*]`` -> ``[*, embeddings_dim]``. Rows at `padding_idx` read as
    zeros (as in ``torch.nn.Embedding``); `max_norm` rescales looked-up rows whose
    `norm_type`-norm exceeds it (computed functionally, the sampled table is not modified).
    """

    def __init__(
        self,
        num_embeddings: int,
        embeddings_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        weights_distribution: GaussianDistribution | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(num_embeddings=num_embeddings, embeddings_dim=embeddings_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"`padding_idx` (={padding_idx}) must be within [-{num_embeddings}, {num_embeddings})")
            padding_idx = padding_idx % num_embeddings
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"`max_norm` (={max_norm}) must be positive")
        self.num_embeddings = num_embeddings
        self.embeddings_dim = embeddings_dim
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self.weights_distribution = weights_distribution or GaussianDistribution((num_embeddings, embeddings_dim))
        check_distribution_shape("weights_distribution", self.weights_distribution, [num_embeddings, embeddings_dim])
        self.weights = self.weights_distribution.sample().detach()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dtype == torch.float32 or inputs.dtype == torch.float64 or inputs.dtype == torch.float16:
            raise ValueError("Embedding expects integer indices, got a floating-point tensor")
        injected = self.weights_distribution.use_noise
        if self.frozen and not injected:
            w = self.weights
        else:
            w = self.weights_distribution.sample()
            if not injected:
                # Injected noise leaves the stored sample alone (see BayesianModule).
                self.weights = w
        if w.dim() == 2:
            out = F.embedding(inputs, w, None, None, 2.0, self.scale_grad_by_freq, False)
        else:
            # Sample axis: offset each sample block's indices into its own table.
            num_samples = w.size(0)
            idx = inputs.reshape([num_samples, -1])
            offsets = torch.arange(num_samples, dtype=idx.dtype, device=idx.device).unsqueeze(1) * self.num_embeddings
            flat = (idx + offsets).reshape([-1])
            out = w.reshape([-1, self.embeddings_dim]).index_select(0, flat)
            out = out.reshape(list(inputs.shape) + [self.embeddings_dim])
        max_norm = self.max_norm
        if max_norm is not None:
            norms = torch.linalg.vector_norm(out, self.norm_type, [-1], True)
            scale = torch.where(norms > max_norm, max_norm / (norms + 1e-7), torch.ones_like(norms))
            out = out * scale
        padding_idx = self.padding_idx
        if padding_idx is not None:
            out = out * (inputs != padding_idx).unsqueeze(-1).to(out.dtype)
        return out

    @torch.jit.export
    def freeze(self) -> None:
        """Fix the stored sample (detached from autograd): later forwards are deterministic."""
        self.frozen = True
        self.weights = self.weights.detach()

    @torch.jit.export
    def kl_cost(self) -> tuple[torch.Tensor, int]:
        return self.weights_distribution.log_prob(self.weights), self.weights_distribution.num_params()
