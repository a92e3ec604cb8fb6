"""Parity of exported graphs with the eager source model, for the same noise.

For every layer type / architecture x format (ONNX, TorchScript, .pt2, AOTInductor for a few
cases) x sample mode: exported at batch 2, run at batches 1 and 5 (and two sequence lengths for
token models) on 3 random noise draws and on zero noise; max abs diff <= 1e-4 against the eager
model with the same eps injected one sample at a time (``set_noise``, independent of the
exporter's interception).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import illia_export
from illia_export.artifact.manifest import read_manifest
from illia_export.exporters.torch.export import TORCH_FORMATS
from illia_export.exporters.torch.registry import LAYER_NOISE, NOISELESS_LAYERS
from illia_export.exporters.torch.writers import ArtifactRunner
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402

from .cases import AOTI_CASES, CASES, NOT_TORCHSCRIPT, Case

TOL = 1e-4
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "aoti": ".pt2"}


def _formats(case: Case) -> list[str]:
    out = [f for f in TORCH_FORMATS if f != "aoti" or case.name in AOTI_CASES]
    return [f for f in out if f != "torchscript" or case.name not in NOT_TORCHSCRIPT]


PARAMS = [(c, f, m) for c in CASES for f in _formats(c) for m in c.modes]


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


def eager_reference(model, x, noise: list[np.ndarray], parameters: list[str], vectorized: bool) -> list[np.ndarray]:
    """Outputs of the eager model with eps injected, sample by sample (independent of the exporter)."""
    modules = dict(model.named_modules())
    draws = noise[0].shape[0] if vectorized else 1
    outs = []
    with torch.no_grad():
        for s in range(draws):
            for p, eps in zip(parameters, noise):
                modules[p].set_noise(torch.from_numpy(eps[s] if vectorized else eps))
            outs.append([o.numpy() for o in _flat(model(x))])
            for p in parameters:
                modules[p].clear_noise()
    if not vectorized:
        return outs[0]
    return [np.stack([o[i] for o in outs]) for i in range(len(outs[0]))]


def run_artifact(path, fmt, arrays: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    if fmt == "onnx":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, dict(zip(names, arrays)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ArtifactRunner(fmt, path, names)(arrays)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(case: Case, fmt: str, mode: str):
        key = (case.name, fmt, mode)
        if key not in cache:
            torch.manual_seed(0)
            model = case.build().eval()
            path = tmp_path_factory.mktemp(case.name) / f"model{SUFFIX[fmt]}"
            manifest = illia_export.export(model, case.make_input(2, case.seq_lens[0]), path, format=fmt, samples=mode)
            cache[key] = (model, path, manifest)
        return cache[key]

    return get


@pytest.mark.parametrize("case,fmt,mode", PARAMS, ids=[f"{c.name}-{f}-{m}" for c, f, m in PARAMS])
def test_parity(exported, case: Case, fmt: str, mode: str):
    model, path, manifest = exported(case, fmt, mode)
    vectorized = mode == "vectorized"
    assert manifest.sample_axis == (0 if vectorized else None)
    assert manifest.validation is not None and manifest.validation.max_abs_diff <= TOL
    params = [n.parameter for n in manifest.noise]
    names = [t.name for t in manifest.inputs] + [n.name for n in manifest.noise]
    rng = np.random.default_rng(42)
    for batch in (1, 5) if case.layer_type != "BatchEnsembleLinear" else (2, 6):
        for seq in case.seq_lens:
            x = case.make_input(batch, seq)
            draws = [
                [rng.standard_normal(([3] if vectorized else []) + n.event_shape).astype(np.float32) for n in manifest.noise]
                for _ in range(3)
            ]
            draws.append([np.zeros_like(d) for d in draws[0]])
            for noise in draws:
                got = run_artifact(path, fmt, [x.numpy()] + noise, names)
                want = eager_reference(model, x, noise, params, vectorized)
                assert len(got) == len(want) == len(manifest.outputs)
                for g, w in zip(got, want):
                    assert g.shape == w.shape
                    np.testing.assert_allclose(g, w, atol=TOL, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_zero_noise_is_mean_network(exported, fmt):
    case = next(c for c in CASES if c.name == "linear")
    model, path, manifest = exported(case, fmt, "vectorized")
    x = case.make_input(4, 0)
    noise = [np.zeros([2] + n.event_shape, np.float32) for n in manifest.noise]
    got = run_artifact(path, fmt, [x.numpy()] + noise, [t.name for t in manifest.inputs] + [n.name for n in manifest.noise])[0]
    w1, b1 = model[0].weights_distribution.mu, model[0].bias_distribution.mu
    w2, b2 = model[2].weights_distribution.mu, model[2].bias_distribution.mu
    with torch.no_grad():
        mean_net = (torch.relu(x @ w1.T + b1) @ w2.T + b2).numpy()
    np.testing.assert_allclose(got[0], mean_net, atol=1e-5)
    np.testing.assert_allclose(got[1], mean_net, atol=1e-5)


def test_every_layer_has_a_case():
    covered = {c.layer_type for c in CASES}
    missing = (set(LAYER_NOISE) | set(NOISELESS_LAYERS)) - covered
    assert not missing, f"layer types without a parity case: {missing}"


@pytest.mark.parametrize("case", [c for c in CASES if "vectorized" in c.modes], ids=lambda c: c.name)
def test_onnx_graph_structure(exported, case):
    _, path, manifest = exported(case, "onnx", "vectorized")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inputs = [i.name for i in model.graph.input]
    assert inputs == [t.name for t in manifest.inputs] + [n.name for n in manifest.noise]
    ops = {n.op_type for n in model.graph.node}
    assert not any(op.startswith("Random") for op in ops)
    assert read_manifest(path).to_dict() == manifest.to_dict()
    if case.layer_type == "LSTM":
        assert "Loop" in ops  # the recurrence stays a loop: any sequence length runs


class _Varargs(torch.nn.Module):
    """A model TorchScript cannot compile (``*args`` in forward); torch.export takes it."""

    def __init__(self) -> None:
        super().__init__()
        from illia_export.nn.torch import Linear

        self.fc = Linear(4, 2)

    def forward(self, *xs):
        return self.fc(xs[0])


def test_unscriptable_model_refuses_torchscript_but_exports_to_pt2(tmp_path):
    model = _Varargs().eval()
    with pytest.raises(illia_export.errors.ExportError, match="torch.jit.script.*onnx, pt2 or aoti"):
        illia_export.export(model, torch.randn(2, 4), tmp_path / "m.pt", format="torchscript")
    assert not list(tmp_path.iterdir())
    manifest = illia_export.export(model, torch.randn(2, 4), tmp_path / "m.pt2", format="pt2")
    assert_validation_recorded(manifest)


def test_batch_ensemble_vectorized_torchscript_is_refused_clearly(tmp_path):
    case = next(c for c in CASES if c.name == "batch_ensemble_vec")
    with pytest.raises(illia_export.errors.ExportError, match="samples='per-call'"):
        illia_export.export(case.build().eval(), case.make_input(2, 0), tmp_path / "m.pt", format="torchscript")
    assert not list(tmp_path.iterdir())
