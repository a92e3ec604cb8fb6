"""The torch.export capture: what it records, what it refuses, and the guards of its validation.

The cases here are the ones that used to pass silently (dropout dropped, a Siamese Linear with
an inexact local variant, hidden noise), the draws it cannot express, and hygiene (the caller's
modes and RNG). Each guard has a test that fails when the guard is weakened.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import illia_export
from illia_export import runtime
from illia_export.errors import ExportError, StrategyError, ToleranceError
from illia_export.exporters.torch.draws import DrawMode, classify
from illia_export.exporters.verify import distribution as distribution_check
from illia_export.nn.torch import Linear
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.drop, self.fc2 = Linear(6, 16), nn.Dropout(0.4), Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class Siamese(nn.Module):
    """One Bayesian Linear applied to two inputs: weights shared between the calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = Linear(4, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, a, b):
        return self.head(torch.abs(self.enc(a) - self.enc(b)))


class Sequence(nn.Module):
    """A Linear on [B, T, D]: weights shared across positions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = Linear(4, 3)

    def forward(self, x):
        return self.fc(x).mean(1)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(Linear(6, 8), nn.ReLU(), Linear(8, 3))


def test_dropout_off_in_eval_is_said_and_mc_dropout_samples_it(tmp_path, capsys):
    model = DropoutNet().eval()
    off = illia_export.export(model, torch.randn(4, 6), tmp_path / "off.onnx")
    assert [(d.path, d.sampled) for d in off.dropout] == [("drop", False)]
    assert all(n.kind == "weight" for n in off.noise)
    on = illia_export.export(model, torch.randn(4, 6), tmp_path / "on.onnx", mc_dropout=True)
    assert [(d.path, d.sampled) for d in on.dropout] == [("drop", True)]
    masks = [n for n in on.noise if n.kind == "dropout"]
    assert len(masks) == 1 and masks[0].shape == ["samples", "batch", 16] and masks[0].transform == "dropout"
    # the artifact's spread matches the eager model's MC dropout; without the masks it is far smaller
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    model.drop.train()
    torch.manual_seed(1)
    with torch.no_grad():
        eager = np.stack([model(torch.from_numpy(x)).numpy() for _ in range(800)])
    model.eval()
    std_on = runtime.load(tmp_path / "on.onnx").predict(x, num_samples=800, seed=0).std
    std_off = runtime.load(tmp_path / "off.onnx").predict(x, num_samples=800, seed=0).std
    assert 0.8 < np.median(std_on / eager.std(0)) < 1.25
    assert np.median(std_off / eager.std(0)) < 0.5
    assert not model.training and not model.drop.training  # the caller's modes are restored


def test_mc_dropout_names_must_be_dropout_modules(tmp_path):
    with pytest.raises(ExportError, match=r"not dropout modules.*\['drop'\]"):
        illia_export.export(DropoutNet().eval(), torch.randn(2, 6), tmp_path / "m.onnx", mc_dropout=["fc1"])
    with pytest.raises(ExportError, match="no dropout module"):
        illia_export.export(_mlp(), torch.randn(2, 6), tmp_path / "m.onnx", mc_dropout=True)
    assert not list(tmp_path.iterdir())


def test_model_without_draws_points_at_mc_dropout(tmp_path):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.2), nn.Linear(8, 2)).eval()
    with pytest.raises(ExportError, match=r"draws no random numbers.*\['1'\].*mc_dropout=True"):
        illia_export.export(plain, torch.randn(2, 6), tmp_path / "m.onnx")


def test_siamese_linear_gets_no_local_variant_and_fresh_is_right(tmp_path):
    model = Siamese().eval()
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    manifest = illia_export.export(model, (a, b), tmp_path / "s.onnx")
    assert manifest.local is None and "applied 2 times" in manifest.local_unavailable
    assert not (tmp_path / "s.local.onnx").exists()
    with pytest.raises(StrategyError, match="applied 2 times"):
        runtime.load(tmp_path / "s.onnx").predict([a.numpy(), b.numpy()], num_samples=4, seed=0, strategy="local")
    ratio = manifest.validation.distribution["output"]["std_ratio"]
    assert 0.8 < ratio < 1.25


def test_linear_on_sequences_skips_local_without_failing(tmp_path):
    manifest = illia_export.export(Sequence().eval(), torch.randn(2, 5, 4), tmp_path / "q.onnx")
    assert manifest.local is None and "3-D input" in manifest.local_unavailable
    assert_validation_recorded(manifest)


def test_linear_only_model_gets_an_exact_local_variant(tmp_path):
    manifest = illia_export.export(_mlp().eval(), torch.randn(4, 6), tmp_path / "m.onnx")
    assert manifest.local is not None and (tmp_path / "m.local.onnx").exists()
    pred = runtime.load(tmp_path / "m.onnx").predict(np.ones((3, 6), np.float32), num_samples=16, seed=0, strategy="local")
    assert pred.samples.shape == (16, 3, 3)


def test_export_restores_modes_and_global_rng(tmp_path):
    model = DropoutNet().train()
    x = torch.randn(2, 6)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    illia_export.export(model, x, tmp_path / "m.onnx", mc_dropout=True)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and model.drop.training and model.fc1.training


def test_a_local_variant_with_the_wrong_spread_does_not_ship(tmp_path, monkeypatch):
    """The guard finds an MLP's local variant exact and the variant agrees with its own reference for
    the same noise; only the distribution check against the model's own sampling (the shared tail's
    one check, also the TorchScript path's) sees that it samples a fifth of the spread."""
    from illia_export.nn.torch.linear import Linear as OurLinear

    def shrunk(self, eps):  # a local variant whose pre-activation noise is scaled down
        self.local_noise = 0.2 * eps
        self.use_local = True

    monkeypatch.setattr(OurLinear, "set_local_noise", shrunk)
    manifest = illia_export.export(_mlp().eval(), torch.randn(4, 6), tmp_path / "m.onnx")
    assert manifest.local is None and not (tmp_path / "m.local.onnx").exists()
    assert "distribution check failed: the local-reparameterization variant" in manifest.local_unavailable
    assert 0.8 < manifest.validation.distribution["output"]["std_ratio"] < 1.25  # the main artifact ships


class HiddenNumpyNoise(nn.Module):
    """Noise torch cannot see (numpy): a graph capture freezes one draw as a constant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = Linear(4, 2)

    def forward(self, x):
        return self.fc(x) + torch.from_numpy(np.random.standard_normal(2).astype(np.float32))


def test_noise_outside_torch_fails_validation(tmp_path):
    with pytest.raises(ToleranceError):
        illia_export.export(HiddenNumpyNoise().eval(), torch.randn(2, 4), tmp_path / "h.onnx")
    assert not list(tmp_path.iterdir())


class HiddenTorchNoise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = Linear(4, 2)

    def forward(self, x):
        return self.fc(x) + 1e-6 * torch.randn(x.shape[0], 2)


def test_torchscript_artifact_with_hidden_noise_is_refused(tmp_path):
    """A scripted model keeps its own randn: the artifact is not deterministic for fixed noise."""
    torch.manual_seed(0)
    with pytest.raises(ToleranceError, match="changes between two runs"):
        illia_export.export(HiddenTorchNoise().eval(), torch.randn(2, 4), tmp_path / "h.pt", format="torchscript")
    assert not list(tmp_path.iterdir())


def test_the_same_draw_through_torch_export_becomes_an_input(tmp_path):
    torch.manual_seed(0)
    manifest = illia_export.export(HiddenTorchNoise().eval(), torch.randn(2, 4), tmp_path / "h.onnx", samples="per-call")
    draws = [n for n in manifest.noise if n.kind == "draw"]
    assert [n.shape for n in draws] == [["batch", 2]]


class Unsupported(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.how = how

    def forward(self, x):
        h = self.fc(x)
        if self.how == "randint":
            return h + torch.randint(0, 3, h.shape).float()
        if self.how == "poisson":
            return h + torch.poisson(torch.ones_like(h))
        return h * torch.empty_like(h).geometric_(0.5)


@pytest.mark.parametrize("how", ["randint", "poisson", "geometric"])
def test_draws_without_a_mapping_name_the_module(tmp_path, how):
    with pytest.raises(ExportError, match=r"the model's forward draws from torch\..*keep this module out"):
        illia_export.export(Unsupported(how).eval(), torch.randn(2, 4), tmp_path / "u.onnx", samples="per-call")


class GumbelCategorical(nn.Module):
    """Gumbel-softmax (hard and soft), a Categorical sample and an exponential draw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        logits = self.fc(x)
        hard = F.gumbel_softmax(logits, tau=0.7, hard=True)
        soft = F.gumbel_softmax(logits, tau=2.0)
        pick = torch.distributions.Categorical(logits=logits).sample()
        onehot = (pick.unsqueeze(-1) == torch.arange(5)).float()
        return hard + soft + onehot + torch.empty_like(logits).exponential_(2.0)


def test_gumbel_softmax_categorical_and_exponential_become_noise_inputs(tmp_path):
    """The export's own distribution check compares with torch's sampling of the same model."""
    manifest = illia_export.export(
        GumbelCategorical().eval(), torch.randn(3, 4), tmp_path / "g.onnx", samples="per-call"
    )
    ops = [n.parameter for n in manifest.noise]
    assert ops == ["gumbel_softmax", "gumbel_softmax_1", "multinomial", "exponential"]
    assert manifest.noise[2].shape == ["batch", 5]
    assert 0.9 < manifest.validation.distribution["output"]["std_ratio"] < 1.1


class DataDependentDraws(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = Linear(4, 2)

    def forward(self, x):
        out = self.fc(x)
        for _ in range(x.shape[0]):  # one extra draw per row
            out = out + 0.0 * torch.randn(1)
        return out


def test_data_dependent_number_of_draws_is_refused(tmp_path):
    with pytest.raises(ExportError, match="data-dependent number of draws"):
        illia_export.export(DataDependentDraws().eval(), torch.randn(2, 4), tmp_path / "d.onnx", samples="per-call")


@pytest.mark.parametrize(
    "call,transform",
    [
        (lambda: torch.randn(3, 2), "affine"),
        (lambda: torch.rand(3, 2), "uniform"),
        (lambda: torch.normal(torch.zeros(3, 2), torch.ones(3, 2)), "affine"),
        (lambda: torch.bernoulli(torch.full((3, 2), 0.3)), "bernoulli"),
        (lambda: torch.empty(3, 2).uniform_(-1, 1), "uniform"),
        (lambda: F.dropout(torch.ones(3, 2), 0.5, training=True), "dropout"),
    ],
)
def test_transforms_give_the_right_distribution(call, transform):
    """Each transform of z ~ N(0, 1) has the distribution torch's own draw has."""
    gen = torch.Generator().manual_seed(0)
    fed = []
    for _ in range(4000):
        z = torch.randn(3, 2, generator=gen)
        with DrawMode(feed=[z]) as mode:
            fed.append(call())
        assert mode.used == 1
    torch.manual_seed(0)
    own = torch.stack([call() for _ in range(4000)])
    fed = torch.stack(fed)
    assert torch.allclose(fed.mean(0), own.mean(0), atol=0.08)
    assert torch.allclose(fed.std(0), own.std(0), atol=0.08)
    with DrawMode(feed=None, generator=torch.Generator().manual_seed(0)) as recording:
        call()
    assert recording.recorded[0].call.transform == transform


def test_dropout_off_draws_nothing():
    assert classify(F.dropout, (torch.ones(2),), {"p": 0.5, "training": False}) is None


# ------------------------------------------------------------------ guards of the distribution check
def test_distribution_check_catches_missing_randomness():
    rng = np.random.default_rng(0)
    source = rng.standard_normal((500, 4, 3))
    with pytest.raises(ToleranceError, match="randomness is missing"):
        distribution_check.compare(["out"], [source], [np.zeros((500, 4, 3)) + source.mean(0)])


def test_distribution_check_catches_a_shifted_mean_and_extra_spread():
    rng = np.random.default_rng(0)
    source = rng.standard_normal((1000, 4, 3))
    with pytest.raises(ToleranceError, match="means differ"):
        distribution_check.compare(["out"], [source], [rng.standard_normal((1000, 4, 3)) + 0.5])
    with pytest.raises(ToleranceError, match="adds spread"):
        distribution_check.compare(["out"], [source], [3 * rng.standard_normal((1000, 4, 3))])


def test_distribution_check_accepts_the_same_distribution_and_deterministic_outputs():
    rng = np.random.default_rng(0)
    rec = distribution_check.compare(
        ["a", "b"],
        [rng.standard_normal((1000, 8)), np.ones((1000, 2))],
        [rng.standard_normal((1000, 8)), np.ones((1000, 2))],
    )
    assert 0.9 < rec["a"]["std_ratio"] < 1.1 and rec["b"]["std_ratio"] == 1.0


def test_distribution_check_rejects_non_finite_samples():
    with pytest.raises(ToleranceError, match="non-finite"):
        distribution_check.compare(["o"], [np.ones((10, 2))], [np.full((10, 2), np.nan)])


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_reserved_and_bad_names_are_refused_on_both_paths(tmp_path, fmt, suffix):
    for names, match in ((["eps_x"], "reserved for noise inputs"), (["1x"], "valid identifier"), (["a", "b"], "2 input names")):
        with pytest.raises(ExportError, match=match):
            illia_export.export(_mlp().eval(), torch.randn(2, 6), tmp_path / f"m{suffix}", format=fmt, input_names=names)
    assert not list(tmp_path.iterdir())


class HeteroscedasticDict(nn.Module):
    """A regression head returning a dict: the names become the outputs, the likelihood is inferred."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.mean, self.lv = Linear(5, 8), Linear(8, 1), Linear(8, 1)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"mean": self.mean(h), "log_variance": self.lv(h)}


def test_dict_outputs_keep_their_names_and_give_the_likelihood(tmp_path):
    manifest = illia_export.export(
        HeteroscedasticDict().eval(), torch.randn(4, 5), tmp_path / "h.pt2", format="pt2", task="regression",
        likelihood="gaussian",
    )
    assert [o.name for o in manifest.outputs] == ["mean", "log_variance"]
    assert (manifest.likelihood.mean, manifest.likelihood.scale_kind) == ("mean", "log_variance")
    pred = runtime.load(tmp_path / "h.pt2").predict(np.ones((3, 5), np.float32), num_samples=50, seed=0)
    np.testing.assert_allclose(pred.predictive_variance, pred.aleatoric_variance + pred.epistemic_variance)


def test_decoder_cache_outputs_are_left_out_and_other_non_tensors_named():
    """A transformers decoder returns its key/value cache (GPT-2's past_key_values) beside the
    logits: generation state, not a prediction, so it is not a graph output. Any other non-tensor
    output is refused by name."""
    from illia_export.exporters.torch.capture import flatten_outputs

    cache_type = type("DynamicCache", (), {"__module__": "transformers.cache_utils"})
    logits = torch.zeros(2, 3)
    assert flatten_outputs({"logits": logits, "past_key_values": cache_type()}) == ([logits], ["logits"])
    with pytest.raises(ExportError, match="output 'state' of the model is a object, not a tensor"):
        flatten_outputs({"logits": logits, "state": object()})
