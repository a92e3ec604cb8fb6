"""MC dropout as users mean it (issue #19 items 1, 2, 4, 7): the artifact samples what
``model.train()`` samples, with BatchNorm in eval.

The matrix covers a GRU text model with AWD-style LockedDropout on float (already embedded)
inputs, a ViT-like model with timm's DropPath and fused attention dropout, and transformers'
BertForSequenceClassification with attention dropout only (``sdpa``) and with hidden and
attention dropout (``eager``). The BERT cases feed ``inputs_embeds`` [B, T, H] through a small
wrapper (:class:`mc_models.EmbedsClassifier`), exported at the example's fixed T: token inputs
with a dynamic sequence length are the h-seqdims branch's work; the lead switches these to
``input_ids`` after that merge. Every model is exported once per (format, sample mode), ONNX and
``.pt2``, vectorized and per-call spread over the models, and the artifact's Monte Carlo output
(runtime, S=500) is compared with the user's own ``model.train()`` loop (S=500): std ratio within
[0.9, 1.1], means within a few standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import illia_export
from illia_export import runtime
from illia_export.errors import ExportError, ToleranceError
from illia_export.exporters.torch.capture import inference_modes
from illia_export.exporters.torch.modes import plan_modes
from illia_export.exporters.torch.pipeline import prepare
from tests.exporters.torch import mc_models as mm

S = 500

MODELS = {
    "gru": (mm.LockedGRU, (4, 5, 6)),
    "vit": (mm.TinyViT, (4, 4, 12)),
    "bert_attention_sdpa": (lambda: mm.tiny_bert(0.0, 0.1, "sdpa"), (4, 6, 16)),
    "bert_both_eager": (lambda: mm.tiny_bert(0.1, 0.1, "eager"), (4, 6, 16)),
}
#: (model, format, samples): every model in both formats, each sample mode in both formats.
MATRIX = [
    ("gru", "onnx", "vectorized"),
    ("gru", "pt2", "per-call"),
    ("vit", "onnx", "vectorized"),
    ("vit", "pt2", "per-call"),
    ("bert_attention_sdpa", "onnx", "vectorized"),
    ("bert_attention_sdpa", "pt2", "per-call"),
    ("bert_both_eager", "onnx", "per-call"),
    ("bert_both_eager", "pt2", "vectorized"),
]


def _example(shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=MATRIX, ids=["-".join(c) for c in MATRIX])
def exported(request, tmp_path_factory):
    name, fmt, samples = request.param
    make, shape = MODELS[name]
    model = make().eval()
    x = _example(shape)
    path = tmp_path_factory.mktemp(name) / f"m.{fmt}"
    manifest = illia_export.export(model, x, path, format=fmt, samples=samples, mc_dropout=True)
    return name, model, x, path, manifest


def _train_samples(model, x, num: int) -> np.ndarray:
    flags = [(m, m.training) for m in model.modules()]
    mm.train_style(model)
    torch.manual_seed(123)
    try:
        with torch.no_grad():
            return np.stack([model(x).numpy() for _ in range(num)])
    finally:
        for m, flag in flags:
            m.training = flag


def test_artifact_samples_what_model_train_samples(exported):
    name, model, x, path, manifest = exported
    assert not model.training  # the caller's modes are restored
    art = runtime.load(path).predict(x.numpy(), num_samples=S, seed=0).samples
    ref = _train_samples(model, x, S)
    ratio = np.median(art.std(0) / ref.std(0))
    z = (art.mean(0) - ref.mean(0)) / np.sqrt(art.var(0) / S + ref.var(0) / S)
    assert 0.9 <= ratio <= 1.1, f"{name}: std ratio {ratio:.3f}"
    assert np.median(np.abs(z)) < 1.5 and np.abs(z).max() < 5.0, f"{name}: mean z {np.abs(z).max():.2f}"


def test_dropout_list_marks_sampled_only_modules_owning_noise(exported):
    name, model, _, _, manifest = exported
    owners = {n.parameter.rpartition(".")[0] for n in manifest.noise}
    sampled = {d.path for d in manifest.dropout if d.sampled}
    assert sampled and sampled <= owners | {""}
    if name == "bert_attention_sdpa":
        # attention dropout runs inside SDPA (decomposed): the attention modules own the masks, their
        # unused nn.Dropout children do not, and hidden dropout (p=0) draws nothing
        assert sampled == {f"model.bert.encoder.layer.{i}.attention.self" for i in range(2)}
        assert all(not d.sampled for d in manifest.dropout if d.path.endswith("attention.self.dropout"))
    if name == "vit":
        assert {"blocks.0.drop_path1", "blocks.1.drop_path2", "blocks.0.attn", "blocks.1.mlp.2"} <= sampled
    if name == "gru":
        assert sampled == {"drop_in", "drop_out"}
        assert "BatchNorm1d" in manifest.extra["kept_in_eval"]["norm"]


# ----------------------------------------------------------------------------------- modes
class Doubler(nn.Module):
    """A training flag that changes the computation, not the randomness."""

    def forward(self, x):
        return x * (2.0 if self.training else 1.0)


class WithDoubler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.scale, self.drop = nn.Linear(4, 4), Doubler(), nn.Dropout(0.3)

    def forward(self, x):
        return self.drop(self.scale(self.fc(x)))


def _capture(model, x, mc_dropout, plan=None):
    with torch.random.fork_rng(devices=[]), inference_modes(model, []):
        return prepare(model, x, None, None, None, "per-call", plan or plan_modes(model, mc_dropout))


def test_a_flag_that_changes_more_than_randomness_stays_in_eval_and_is_named():
    model = WithDoubler().eval()
    plan = plan_modes(model, True)
    cap = _capture(model, torch.randn(3, 4), True, plan)
    assert [d.path for d in cap.discovery.dropout if d.sampled] == ["drop"]
    assert "scale" in plan.kept and "scale" not in plan.train and "training flag" in plan.kept["scale"]
    assert not model.training and not model.scale.training


def test_a_module_list_samples_those_modules_and_their_children_only():
    cap = _capture(mm.TinyViT().eval(), torch.randn(2, 4, 12), ["blocks.1"])
    sampled = {d.path for d in cap.discovery.dropout if d.sampled}
    assert sampled and all(p.startswith("blocks.1.") for p in sampled)
    assert {d.path for d in cap.discovery.dropout if not d.sampled} >= {"blocks.0.mlp.2"}


def test_a_named_module_that_does_not_sample_is_refused():
    with pytest.raises(ExportError, match=r"mc_dropout names \['embed'\], which draw nothing.*blocks"):
        _capture(mm.TinyViT().eval(), torch.randn(2, 4, 12), ["embed"])


# -------------------------------------------------------------------------------- messages
class ResNetLikeHead(nn.Module):
    """timm ResNet's head: functional dropout gated by self.training, and DropPath; no nn.Dropout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.path, self.fc = nn.Linear(4, 8), mm.DropPath(0.1), nn.Linear(8, 2)

    def forward(self, x):
        h = self.path(torch.relu(self.body(x)))
        return self.fc(F.dropout(h, p=0.2, training=self.training))


def test_functional_dropout_without_dropout_modules_is_named(tmp_path):
    with pytest.raises(ExportError, match=r"in training mode it draws in 'path' \(Tensor.bernoulli_\), the model's "
                       r"forward \(dropout\).*mc_dropout=True"):
        illia_export.export(ResNetLikeHead().eval(), torch.randn(2, 4), tmp_path / "r.onnx")
    assert not list(tmp_path.iterdir())


def test_randomness_inside_a_fused_kernel_is_refused_naming_the_module(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.GRU(4, 6, num_layers=2, dropout=0.3, batch_first=True))
    with pytest.raises(ToleranceError, match=r"module '0' \(GRU\).*inter-layer dropout.*dropout=0.3"):
        illia_export.export(model.eval(), torch.randn(2, 3, 4), tmp_path / "g.onnx", mc_dropout=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_dropout_is_intercepted_inside_the_functional(need_weights):
    """nn.MultiheadAttention draws its attention dropout inside F.multi_head_attention_forward
    (F.dropout on the weights, or SDPA): fed noise must give torch's own distribution."""
    from illia_export.exporters.torch.draws import DrawMode

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True).train()
    x = torch.randn(2, 5, 8)
    gen = torch.Generator().manual_seed(0)
    fed = []
    with torch.no_grad():
        for _ in range(1000):
            with DrawMode(generator=gen) as mode:
                fed.append(mha(x, x, x, need_weights=need_weights)[0])
        assert [r.call.op for r in mode.recorded] == ["dropout" if need_weights else "scaled_dot_product_attention"]
        torch.manual_seed(1)
        own = torch.stack([mha(x, x, x, need_weights=need_weights)[0] for _ in range(1000)])
    fed = torch.stack(fed)
    assert 0.9 < float((fed.std(0) / own.std(0)).median()) < 1.1
    assert float(((fed.mean(0) - own.mean(0)).abs() / own.std(0)).median()) * 1000**0.5 < 2.0
