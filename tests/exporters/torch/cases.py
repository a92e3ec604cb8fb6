"""Tiny models, one per PyTorch layer type, shared by the export parity tests.

Each case names the layer type it covers; `test_every_layer_has_a_case` fails when a layer of
the registry has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


def _floats(*shape: int) -> Callable[[int, int], torch.Tensor]:
    return lambda b, t: torch.randn(b, *shape, generator=torch.Generator().manual_seed(b))


def _tokens(high: int) -> Callable[[int, int], torch.Tensor]:
    return lambda b, t: torch.randint(0, high, (b, t), generator=torch.Generator().manual_seed(b + t))


def _be_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(BatchEnsembleLinear(nn.Linear(6, 5), num_members=2), nn.ReLU(), Linear(5, 3))


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
]
