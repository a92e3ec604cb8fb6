"""Foreign stochastic-layer families (bayesian-torch, blitz, torchbnn, torch-uncertainty, probly,
MC dropout) through the torch.export capture: family x format x sample mode.

Each export must (1) pass the exporter's own same-noise and distribution validation, (2) leave no
random op in the graph, and (3) give, through ``runtime.load(...).predict``, a Monte Carlo
distribution that matches the source model's own sampling (computed here, independently of the
exporter), and (4) give the same numbers as the eager model fed the same noise.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import illia_export
from illia_export import runtime
from illia_export.exporters.torch.registry import FAMILIES, family_of
from illia_export.exporters.torch.writers import ArtifactRunner, all_nodes
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402

from .families import CASES, FamilyCase

FORMATS = ("onnx", "pt2")
PARAMS = [(c, f, m) for c in CASES for f in FORMATS for m in c.modes]
SAMPLES = 600


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(case: FamilyCase, fmt: str, mode: str):
        key = (case.name, fmt, mode)
        if key not in cache:
            model, x = case.build()
            path = tmp_path_factory.mktemp(case.name) / f"model.{fmt}"
            manifest = illia_export.export(
                model, x, path, format=fmt, samples=mode, mc_dropout=True if case.mc_dropout else None
            )
            cache[key] = (model, x, path, manifest)
        return cache[key]

    return get


def _source_mc(model, x: torch.Tensor, mc_dropout: bool, num: int) -> np.ndarray:
    """The source model's own MC samples, in the modes its users sample it in."""
    model.eval()
    if mc_dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.train()
    torch.manual_seed(123)
    with torch.no_grad():
        out = np.stack([model(x).numpy() for _ in range(num)])
    model.eval()
    return out


@pytest.mark.parametrize("case,fmt,mode", PARAMS, ids=[f"{c.name}-{f}-{m}" for c, f, m in PARAMS])
def test_family_exports_and_samples_like_the_source(exported, case, fmt, mode):
    model, x, path, manifest = exported(case, fmt, mode)
    assert_validation_recorded(manifest)
    assert manifest.validation.max_abs_diff < 1e-4
    assert manifest.noise, "every family draws noise"
    if fmt == "onnx":
        ops = {n.op_type for n in all_nodes(onnx.load(str(path)).graph)}
        assert not {op for op in ops if op.startswith("Random") or op in ("Multinomial", "Bernoulli")}
    pred = runtime.load(path).predict(x.numpy(), num_samples=SAMPLES, seed=7)
    art = pred.samples.reshape(SAMPLES, -1).astype(np.float64)
    src = _source_mc(model, x, case.mc_dropout, SAMPLES).reshape(SAMPLES, -1).astype(np.float64)
    sd_a, sd_s = art.std(0), src.std(0)
    ratio = np.median(sd_a / sd_s)
    assert 0.8 < ratio < 1.25, f"MC std ratio artifact/source = {ratio:.3f}"
    z = (art.mean(0) - src.mean(0)) / np.sqrt((sd_a**2 + sd_s**2) / SAMPLES)
    assert np.median(np.abs(z)) < 2.0


@pytest.mark.parametrize("case", [c for c in CASES if "vectorized" in c.modes], ids=lambda c: c.name)
def test_same_noise_same_numbers_across_formats(exported, case):
    """ONNX and .pt2 artifacts of one model agree for the same noise, at S and B other than captured."""
    _, x, onnx_path, manifest = exported(case, "onnx", "vectorized")
    _, _, pt2_path, _ = exported(case, "pt2", "vectorized")
    names = [t.name for t in manifest.inputs] + [n.name for n in manifest.noise]
    xb = x.repeat(2, *([1] * (x.dim() - 1)))[:7].numpy()
    rng = np.random.default_rng(0)
    noise = []
    for n in manifest.noise:
        shape = [5] + [7 if d == "batch" else d for d in n.shape[1:]]
        noise.append(rng.standard_normal(shape).astype(np.float32))
    a = ArtifactRunner("onnx", onnx_path, names)([xb, *noise])
    b = ArtifactRunner("pt2", pt2_path, names)([xb, *noise])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-4, rtol=1e-4)


def test_every_family_has_a_case():
    covered = {c.family for c in CASES}
    missing = {f.name for f in FAMILIES if f.name != "illia"} - covered
    assert not missing, f"families without a parity case: {missing}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_registry_knows_each_case_family(case):
    model, _ = case.build()
    families = {f.name for m in model.modules() if (f := family_of(m)) is not None}
    assert case.family in families or case.family == "dropout"
