"""``BatchEnsembleLinear`` for PyTorch, with probly's (Flax) semantics.

Member ``k`` computes ``((x * r_k) @ kernel) * s_k + bias_k`` on rows ``[k*B, (k+1)*B)`` of an
input of shape ``[E*B, in_features]``. Shapes follow ``nnx.Linear``: ``kernel [in, out]``,
``r [E, in]``, ``s [E, out]``, ``bias [E, out]``. It carries no weight noise: its ensemble
members are the "samples".
"""


import torch
from torch import nn

from illia_export.nn.torch.module import check_positive, current_sample_blocks, is_exporting


class BatchEnsembleLinear(nn.Module):
    """Wrap a ``torch.nn.Linear`` as a rank-one BatchEnsemble layer with `num_members` members.

    Args:
        base_layer: the ``nn.Linear`` to wrap (its weight is ``[out, in]``; stored here as
            ``kernel = weight.T``).
        num_members: number of ensemble members E.
        use_base_weights: share (copy) the base layer's weight and bias; otherwise draw a fresh
            kernel (Lecun-normal) and zero biases.
        init: ``"normal"`` (``r ~ N(r_mean, r_std)``, ``s ~ N(s_mean, s_std)``) or
            ``"random_sign"`` (entries in {-1, +1}).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        num_members: int = 4,
        use_base_weights: bool = False,
        init: str = "normal",
        r_mean: float = 1.0,
        r_std: float = 0.5,
        s_mean: float = 1.0,
        s_std: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"`base_layer` must be a torch.nn.Linear, got {type(base_layer).__name__}")
        check_positive(num_members=num_members)
        if init not in ("normal", "random_sign"):
            raise ValueError(f"`init` (={init!r}) must be 'normal' or 'random_sign'")
        in_f, out_f = base_layer.in_features, base_layer.out_features
        self.in_features = in_f
        self.out_features = out_f
        self.num_members = num_members
        self.use_bias = base_layer.bias is not None
        if use_base_weights:
            kernel = base_layer.weight.detach().t().clone()
        else:
            kernel = torch.randn(in_f, out_f, generator=generator) / in_f**0.5
        self.kernel = nn.Parameter(kernel)
        if init == "normal":
            r = torch.randn(num_members, in_f, generator=generator) * r_std + r_mean
            s = torch.randn(num_members, out_f, generator=generator) * s_std + s_mean
        else:
            r = torch.randint(0, 2, (num_members, in_f), generator=generator).float() * 2 - 1
            s = torch.randint(0, 2, (num_members, out_f), generator=generator).float() * 2 - 1
        self.r = nn.Parameter(r)
        self.s = nn.Parameter(s)
        if self.use_bias:
            if use_base_weights:
                bias = base_layer.bias.detach().unsqueeze(0).repeat(num_members, 1)
            else:
                bias = torch.zeros(num_members, out_f)
            self.bias = nn.Parameter(bias)
        else:
            self.bias = nn.Parameter(torch.zeros(num_members, out_f), requires_grad=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 2 or inputs.size(1) != self.in_features:
            raise ValueError(
                "BatchEnsembleLinear expects inputs of shape [E*B, " + str(self.in_features) + "], got "
                + str(inputs.shape)
            )
        blocks = 1
        exporting = False
        if not torch.jit.is_scripting():
            blocks = current_sample_blocks()  # S sample blocks in a vectorized capture
            exporting = is_exporting()
        if exporting:
            torch._check(inputs.size(0) % self.num_members == 0)
        elif inputs.size(0) % self.num_members != 0:
            raise ValueError(
                "BatchEnsembleLinear: the batch (" + str(inputs.size(0)) + ") must be a multiple of num_members ("
                + str(self.num_members) + ")"
            )
        # each sample block of the batch is split into num_members groups of rows
        x = inputs.reshape([blocks, self.num_members, -1, self.in_features]) * self.r.unsqueeze(1)
        y = torch.matmul(x, self.kernel) * self.s.unsqueeze(1)
        if self.use_bias:
            y = y + self.bias.unsqueeze(1)
        return y.reshape([-1, self.out_features])
