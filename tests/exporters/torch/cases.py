"""Builders of the illia family's parity cases, keyed by the case names the registry declares.

The registry (``illia_export/exporters/torch/registry.py``) says which cases exist, under which
layer, in which formats and sample modes; this module only builds each case's model and inputs.
`parity_gaps` finds what breaks the link between the two and `holds` looks for a registered layer
in a built model (both used by test_parity and test_families).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from illia_export.exporters.torch.registry import Family, Layer, class_name, family_of
from illia_export.nn.torch import LSTM, BatchEnsembleLinear, Conv1d, Conv2d, Embedding, Linear

#: Samples per side of the exporter's own distribution check in the parity matrices' exports.
#: Those matrices check same-noise parity (and test_families samples each artifact against its
#: source itself, 600 draws); the built-in check still runs on every artifact, at 200 draws
#: instead of 1000 (a third of each export's time at 1000). The distribution tests proper
#: (test_mc_dropout_models, test_capture) keep the default.
EXPORT_CHECK_SAMPLES = 200


@dataclass(frozen=True)
class Case:
    """How to build one parity case's model and inputs (its matrix is in the registry)."""

    build: Callable[[], nn.Module]
    make_input: Callable[[int, int], torch.Tensor]  # (batch, seq_len) -> input
    seq_lens: tuple[int, ...] = (5,)
    batches: tuple[int, ...] = (1, 5)  # run batches (the export is at batch 2)


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


#: case name (a registry ParityCase) -> its builder.
BUILDERS: dict[str, Case] = {
    "linear": Case(lambda: nn.Sequential(Linear(6, 5), nn.ReLU(), Linear(5, 3)), _floats(6)),
    "conv1d": Case(lambda: Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), _floats(4, 11)),
    "conv2d": Case(
        lambda: Conv2d(2, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2), _floats(2, 9, 8)
    ),
    "embedding": Case(TokenClassifier, _tokens(12), seq_lens=(5, 9)),
    "lstm": Case(lambda: LSTM(20, 6, 8, 3, padding_idx=0), _tokens(20), seq_lens=(5, 9)),
    "lstm_column": Case(lambda: LSTM(20, 6, 8, 3), _token_column(20), seq_lens=(5, 9)),
    # BatchEnsembleLinear splits the batch among its 2 members: batches are multiples of 2
    "batch_ensemble": Case(_be_model, _floats(6), batches=(2, 6)),
    "batch_ensemble_vec": Case(_be_model, _floats(6), batches=(2, 6)),
    "mixed": Case(Mixed, _floats(1, 8, 8)),
    "attention": Case(Attention, _floats(5, 4)),
    "transformer": Case(Encoder, _floats(5, 4)),
    "conv1d_relu": Case(lambda: nn.Sequential(Conv1d(2, 3, 3), nn.ReLU()), _floats(2, 7)),
    "conv_pool": Case(ConvPool, _floats(1, 6, 6)),
}


def parity_gaps(families: Iterable[Family], builders: Mapping[str, object], where: str) -> list[str]:
    """What breaks the link between registry `families` and the `builders` of `where`, one line
    per problem (empty when complete): an entry (a listed layer, or a family listing none) with
    no parity case, a case named twice, a case with no builder, a builder no entry names.
    """
    problems: list[str] = []
    named: set[str] = set()
    for family in families:
        entries = [
            (f"layer {layer.name!r} of family {family.name!r}", layer.cases) for layer in family.layers
        ]
        if not family.layers:
            entries.append((f"family {family.name!r}", family.cases))
        problems += [f"{label} has no parity case" for label, cases in entries if not cases]
        for _, case in family.parity_cases:
            if case.name in named:
                problems.append(f"case {case.name!r} is named twice in the registry")
            named.add(case.name)
            if case.name not in builders:
                problems.append(f"case {case.name!r} of family {family.name!r} has no builder in {where}")
    problems += [
        f"builder {name!r} in {where} is named by no registry entry" for name in builders if name not in named
    ]
    return problems


def holds(model: nn.Module, family: Family, layer: Layer | None) -> bool:
    """Whether `model` holds `layer` of `family` (by class name), or any module of `family`."""
    for module in model.modules():
        if family_of(module) is family and (layer is None or class_name(module) == layer.name):
            return True
    return False
