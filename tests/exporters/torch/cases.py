"""Tiny models, one per PyTorch layer type, shared by the export parity tests.

Each case names the layer type it covers; `test_every_layer_has_a_case` fails when a layer of
the registry has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from illia_export.nn.torch import LSTM, BatchEnsembleLinear, Conv1d, Conv2d, Embedding, Linear


@dataclass
class Case:
    name: str
    layer_type: str
    build: Callable[[], nn.Module]
    make_input: Callable[[int, int], torch.Tensor]  # (batch, seq_len) -> input
    modes: tuple[str, ...] = ("vectorized", "per-call")
    seq_lens: tuple[int, ...] = (5,)


class Mixed(nn.Module):
    """Bayesian conv + linear among ordinary torch layers (BatchNorm, Dropout, pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(torch.relu(self.norm(self.conv(x))))))


class TokenClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = Embedding(12, 4, padding_idx=0, max_norm=1.0)
        self.fc = Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x).mean(1))


class Attention(nn.Module):
    """Bayesian projections around nn.MultiheadAttention (the legacy ONNX exporter failed here)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(self.attn(h, h, h, need_weights=False)[0].mean(1))


class Encoder(nn.Module):
    """nn.TransformerEncoder between Bayesian layers."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.enc(self.inp(x)).mean(1))


class ConvPool(nn.Module):
    """Bayesian Conv2d followed by AdaptiveAvgPool2d(2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2d(1, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def _floats(*shape: int) -> Callable[[int, int], torch.Tensor]:
    return lambda b, t: torch.randn(b, *shape, generator=torch.Generator().manual_seed(b))


def _tokens(high: int) -> Callable[[int, int], torch.Tensor]:
    return lambda b, t: torch.randint(0, high, (b, t), generator=torch.Generator().manual_seed(b + t))


def _be_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(BatchEnsembleLinear(nn.Linear(6, 5), num_members=2), nn.ReLU(), Linear(5, 3))


def _token_column(high: int) -> Callable[[int, int], torch.Tensor]:
    """The LSTM's documented ``[B, T, 1]`` token input."""
    return lambda b, t: _tokens(high)(b, t).unsqueeze(-1)


CASES = [
    Case("linear", "Linear", lambda: nn.Sequential(Linear(6, 5), nn.ReLU(), Linear(5, 3)), _floats(6)),
    Case("conv1d", "Conv1d", lambda: Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), _floats(4, 11)),
    Case(
        "conv2d",
        "Conv2d",
        lambda: Conv2d(2, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
        _floats(2, 9, 8),
    ),
    Case("embedding", "Embedding", TokenClassifier, _tokens(12), seq_lens=(5, 9)),
    Case("lstm", "LSTM", lambda: LSTM(20, 6, 8, 3, padding_idx=0), _tokens(20), seq_lens=(5, 9)),
    Case("batch_ensemble", "BatchEnsembleLinear", _be_model, _floats(6), modes=("per-call",)),
    Case("mixed", "Mixed", Mixed, _floats(1, 8, 8)),
    Case("lstm_column", "LSTM", lambda: LSTM(20, 6, 8, 3), _token_column(20), seq_lens=(5, 9)),
    Case("attention", "MultiheadAttention", Attention, _floats(5, 4)),
    Case("transformer", "TransformerEncoder", Encoder, _floats(5, 4)),
    Case("conv1d_relu", "Conv1d+ReLU", lambda: nn.Sequential(Conv1d(2, 3, 3), nn.ReLU()), _floats(2, 7)),
    Case("conv_pool", "AdaptiveAvgPool2d", ConvPool, _floats(1, 6, 6)),
    Case("batch_ensemble_vec", "BatchEnsembleLinear", _be_model, _floats(6), modes=("vectorized",)),
]

#: Cases the TorchScript format does not take: its scripted wrapper has no sample blocks, so
#: BatchEnsembleLinear stays per-call there (a clear error says so).
NOT_TORCHSCRIPT = {"batch_ensemble_vec"}
#: Cases also compiled with AOTInductor (slow: one compile per case and mode).
AOTI_CASES = {"linear", "conv2d", "lstm"}
