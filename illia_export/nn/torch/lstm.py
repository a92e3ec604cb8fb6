"""Bayesian LSTM classifier head (illia's ``LSTM``): embedding -> LSTM cell over time -> linear.

The recurrence is a loop over ``inputs.size(1)``: a TorchScript loop when scripted (an ONNX
``Loop`` through the legacy exporter) and ``torch._higher_order_ops.while_loop`` under torch.export, so
exported graphs run at any sequence length. The four gate matrices are applied as one
batched matmul per step, and the input projection for all time steps is computed up front.
"""

from typing import Any

import torch

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch.embedding import Embedding
from illia_export.nn.torch.module import BayesianModule, check_positive, is_exporting


def _cell(
    x_t: torch.Tensor, h_t: torch.Tensor, c_t: torch.Tensor, w_h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step for every sample block: ``x_t`` is the input projection ``[S, B, 4H]``."""
    hidden = h_t.size(2)
    g = x_t + torch.bmm(h_t, w_h)
    f_t = torch.sigmoid(g[:, :, :hidden])
    i_t = torch.sigmoid(g[:, :, hidden : 2 * hidden])
    cand = torch.tanh(g[:, :, 2 * hidden : 3 * hidden])
    o_t = torch.sigmoid(g[:, :, 3 * hidden :])
    c_t = c_t * f_t + cand * i_t
    return o_t * torch.tanh(c_t), c_t


@torch.jit.unused
def _scan_cells(
    x_proj: torch.Tensor, h_t: torch.Tensor, c_t: torch.Tensor, w_h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence as a ``while_loop`` while torch.export captures the model.

    A Python loop would be unrolled to the example's sequence length; ``while_loop`` stays one
    ONNX ``Loop``, so the exported graph runs at any sequence length. (``scan`` lifts symbolic
    sizes into its body, which the ONNX exporter cannot decompose in torch 2.13.)
    """
    from torch._higher_order_ops.while_loop import while_loop

    def cond(t, h, c):
        return t < x_proj.size(2)

    def body(t, h, c):
        x_t = x_proj.index_select(2, t.reshape(1)).squeeze(2)
        h_new, c_new = _cell(x_t, h, c, w_h)
        return t + 1, h_new, c_new

    start = torch.zeros((), dtype=torch.int64, device=x_proj.device)
    _, h_t, c_t = while_loop(cond, body, (start, h_t, c_t))
    return h_t, c_t


class LSTM(BayesianModule):
    """Input: token indices ``[B, T]`` (or ``[B, T, 1]``). Returns ``(y, (h, c))`` with
    ``y: [B, output_size]`` (the head applied to the last hidden state), ``h, c: [B, hidden_size]``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embeddings_dim: int,
        hidden_size: int,
        output_size: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(hidden_size=hidden_size, output_size=output_size)
        self.num_embeddings = num_embeddings
        self.embeddings_dim = embeddings_dim
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self.embedding = Embedding(
            num_embeddings=num_embeddings,
            embeddings_dim=embeddings_dim,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
        )
        gate_shape = (hidden_size, embeddings_dim + hidden_size)
        self.wf_distribution = GaussianDistribution(gate_shape)
        self.bf_distribution = GaussianDistribution((hidden_size,))
        self.wi_distribution = GaussianDistribution(gate_shape)
        self.bi_distribution = GaussianDistribution((hidden_size,))
        self.wc_distribution = GaussianDistribution(gate_shape)
        self.bc_distribution = GaussianDistribution((hidden_size,))
        self.wo_distribution = GaussianDistribution(gate_shape)
        self.bo_distribution = GaussianDistribution((hidden_size,))
        self.wv_distribution = GaussianDistribution((output_size, hidden_size))
        self.bv_distribution = GaussianDistribution((output_size,))
        self.wf = self.wf_distribution.sample().detach()
        self.bf = self.bf_distribution.sample().detach()
        self.wi = self.wi_distribution.sample().detach()
        self.bi = self.bi_distribution.sample().detach()
        self.wc = self.wc_distribution.sample().detach()
        self.bc = self.bc_distribution.sample().detach()
        self.wo = self.wo_distribution.sample().detach()
        self.bo = self.bo_distribution.sample().detach()
        self.wv = self.wv_distribution.sample().detach()
        self.bv = self.bv_distribution.sample().detach()

    def _weights(self) -> list[torch.Tensor]:
        """``[wf, bf, wi, bi, wc, bc, wo, bo, wv, bv]``: stored when frozen, else freshly sampled.

        Injected noise takes precedence over the frozen state and leaves the stored sample alone.
        """
        injected = self.wf_distribution.use_noise
        if self.frozen and not injected:
            return [self.wf, self.bf, self.wi, self.bi, self.wc, self.bc, self.wo, self.bo, self.wv, self.bv]
        w = [
            self.wf_distribution.sample(),
            self.bf_distribution.sample(),
            self.wi_distribution.sample(),
            self.bi_distribution.sample(),
            self.wc_distribution.sample(),
            self.bc_distribution.sample(),
            self.wo_distribution.sample(),
            self.bo_distribution.sample(),
            self.wv_distribution.sample(),
            self.bv_distribution.sample(),
        ]
        if not injected:
            self.wf = w[0]
            self.bf = w[1]
            self.wi = w[2]
            self.bi = w[3]
            self.wc = w[4]
            self.bc = w[5]
            self.wo = w[6]
            self.bo = w[7]
            self.wv = w[8]
            self.bv = w[9]
        return w

    @torch.jit.export
    def freeze(self) -> None:
        """Fix the stored samples (detached from autograd), embedding included."""
        self.frozen = True
        self.embedding.freeze()
        self.wf = self.wf.detach()
        self.bf = self.bf.detach()
        self.wi = self.wi.detach()
        self.bi = self.bi.detach()
        self.wc = self.wc.detach()
        self.bc = self.bc.detach()
        self.wo = self.wo.detach()
        self.bo = self.bo.detach()
        self.wv = self.wv.detach()
        self.bv = self.bv.detach()

    @torch.jit.export
    def unfreeze(self) -> None:
        self.frozen = False
        self.embedding.unfreeze()

    def forward(
        self, inputs: torch.Tensor, init_states: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if inputs.dim() == 3 and inputs.size(-1) == 1:
            inputs = inputs.squeeze(-1)
        if inputs.dim() != 2:
            raise ValueError("LSTM expects token indices of shape [batch, seq_len], got " + str(inputs.shape))
        wf, bf, wi, bi, wc, bc, wo, bo, wv, bv = self._weights()
        emb = self.embedding(inputs)  # [S*B, T, E]
        if wf.dim() == 2:
            gates_w = torch.cat([wf, wi, wc, wo], 0).unsqueeze(0)
            gates_b = torch.cat([bf, bi, bc, bo], 0).unsqueeze(0)
            wv = wv.unsqueeze(0)
            bv = bv.unsqueeze(0)
        else:
            gates_w = torch.cat([wf, wi, wc, wo], 1)
            gates_b = torch.cat([bf, bi, bc, bo], 1)
        num_samples = gates_w.size(0)
        hidden = self.hidden_size
        emb_dim = self.embeddings_dim
        total = emb.size(0)
        seq_len = emb.size(1)
        w_x = gates_w[:, :, :emb_dim].transpose(1, 2)  # [S, E, 4H]
        w_h = gates_w[:, :, emb_dim:].transpose(1, 2)  # [S, H, 4H]
        x_proj = torch.baddbmm(gates_b.unsqueeze(1), emb.reshape([num_samples, -1, emb_dim]), w_x)
        x_proj = x_proj.reshape([num_samples, -1, seq_len, 4 * hidden])  # [S, B, T, 4H]
        if init_states is None:
            h_t = torch.zeros([num_samples, total // num_samples, hidden], dtype=emb.dtype, device=emb.device)
            c_t = torch.zeros([num_samples, total // num_samples, hidden], dtype=emb.dtype, device=emb.device)
        else:
            h_t = init_states[0].reshape([num_samples, -1, hidden])
            c_t = init_states[1].reshape([num_samples, -1, hidden])
        exporting = False
        if not torch.jit.is_scripting():
            exporting = is_exporting()
        if exporting:
            h_t, c_t = _scan_cells(x_proj, h_t, c_t, w_h)
        else:
            for t in range(seq_len):
                h_t, c_t = _cell(x_proj[:, :, t], h_t, c_t, w_h)
        y = torch.baddbmm(bv.unsqueeze(1), h_t, wv.transpose(1, 2))
        return (
            y.reshape([total, self.output_size]),
            (h_t.reshape([total, hidden]), c_t.reshape([total, hidden])),
        )

    @torch.jit.export
    def kl_cost(self) -> tuple[torch.Tensor, int]:
        """KL terms of the gates and the head (the embedding is its own Bayesian module)."""
        log_probs = (
            self.wf_distribution.log_prob(self.wf)
            + self.bf_distribution.log_prob(self.bf)
            + self.wi_distribution.log_prob(self.wi)
            + self.bi_distribution.log_prob(self.bi)
            + self.wc_distribution.log_prob(self.wc)
            + self.bc_distribution.log_prob(self.bc)
            + self.wo_distribution.log_prob(self.wo)
            + self.bo_distribution.log_prob(self.bo)
            + self.wv_distribution.log_prob(self.wv)
            + self.bv_distribution.log_prob(self.bv)
        )
        num_params = (
            self.wf_distribution.num_params()
            + self.bf_distribution.num_params()
            + self.wi_distribution.num_params()
            + self.bi_distribution.num_params()
            + self.wc_distribution.num_params()
            + self.bc_distribution.num_params()
            + self.wo_distribution.num_params()
            + self.bo_distribution.num_params()
            + self.wv_distribution.num_params()
            + self.bv_distribution.num_params()
        )
        return log_probs, num_params
