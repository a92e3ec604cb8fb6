"""Foreign stochastic-layer families (bayesian-torch, blitz, torchbnn, torch-uncertainty, probly,
MC dropout) through the torch.export capture: family x format x sample mode, the matrix each
family's registry entry declares (builders in families.py, keyed by case name; each export done
once per session, tests/exporters/torch/conftest.py).

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
from illia_export.exporters.torch.registry import FAMILIES, Family, ParityCase
from illia_export.exporters.torch.writers import all_nodes
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402

from . import cases as illia_cases
from .cases import EXPORT_CHECK_SAMPLES, holds, parity_gaps
from .families import BUILDERS

FOREIGN = [f for f in FAMILIES if f.name != "illia"]  # illia's cases run in test_parity
CASES = [(family, case) for family in FOREIGN for _, case in family.parity_cases]
PARAMS = [(family, case, f, m) for family, case in CASES for f, m in case.matrix]
SAMPLES = 600
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "aoti": ".aoti.pt2"}


@pytest.fixture
def exported(session_cache):
    """(case, format, mode) -> (eager model, example input, artifact path, manifest), once per
    session: every format the case declares for the mode from one export call (one capture)."""

    def get(case: ParityCase, fmt: str, mode: str):
        formats = [f for f, m in case.matrix if m == mode]
        if fmt not in formats:
            formats = [fmt]

        def export():
            model, x = BUILDERS[case.name]()
            folder = session_cache.folder(case.name, f"{'+'.join(formats)}-{mode}")
            paths = {f: folder / f"model-{f}{SUFFIX[f]}" for f in formats}
            mc_dropout = True if case.mc_dropout else None
            manifests = illia_export.export(
                model, x, paths, samples=mode, mc_dropout=mc_dropout, distribution_samples=EXPORT_CHECK_SAMPLES
            )
            return {f: (model, x, paths[f], manifests[f]) for f in formats}

        return session_cache.get(("family", case.name, tuple(formats), mode), export)[fmt]

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


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.fixture
def source_samples(session_cache):
    """case -> (parameters, input, the source model's own MC samples), drawn once per session."""

    def get(case: ParityCase):
        def draw():
            model, x = BUILDERS[case.name]()
            params = _parameters(model)
            return (
                params,
                x,
                _source_mc(model, x, case.mc_dropout, SAMPLES).reshape(SAMPLES, -1).astype(np.float64),
            )

        return session_cache.get(("source_mc", case.name), draw)

    return get


@pytest.mark.parametrize("family,case,fmt,mode", PARAMS, ids=[f"{c.name}-{f}-{m}" for _, c, f, m in PARAMS])
def test_family_exports_and_samples_like_the_source(exported, source_samples, family, case, fmt, mode):
    model, x, path, manifest = exported(case, fmt, mode)
    assert_validation_recorded(manifest)
    assert manifest.validation.max_abs_diff < 1e-4
    assert manifest.noise, "every family draws noise"
    if fmt == "onnx":
        ops = {n.op_type for n in all_nodes(onnx.load(str(path)).graph)}
        assert not {op for op in ops if op.startswith("Random") or op in ("Multinomial", "Bernoulli")}
    params, x_src, src = source_samples(case)
    # the reference was drawn from a fresh build of the case: the same model as the exported one
    assert torch.equal(x_src, x)
    exported_params = _parameters(model)
    assert exported_params.keys() == params.keys()
    assert all(torch.equal(exported_params[k], params[k]) for k in params)
    pred = runtime.load(path).predict(x.numpy(), num_samples=SAMPLES, seed=7)
    art = pred.samples.reshape(SAMPLES, -1).astype(np.float64)
    sd_a, sd_s = art.std(0), src.std(0)
    ratio = np.median(sd_a / sd_s)
    assert 0.8 < ratio < 1.25, f"MC std ratio artifact/source = {ratio:.3f}"
    z = (art.mean(0) - src.mean(0)) / np.sqrt((sd_a**2 + sd_s**2) / SAMPLES)
    assert np.median(np.abs(z)) < 2.0


ACROSS = [case for _, case in CASES if {("onnx", "vectorized"), ("pt2", "vectorized")} <= set(case.matrix)]


@pytest.mark.parametrize("case", ACROSS, ids=lambda c: c.name)
def test_same_noise_same_numbers_across_formats(exported, session_cache, case):
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
    a = session_cache.run("onnx", onnx_path, names, [xb, *noise])
    b = session_cache.run("pt2", pt2_path, names, [xb, *noise])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------- registry <-> builders <-> models
def test_registry_and_builders_match():
    """Every foreign family has a case, every case a builder, every builder a case (a, b, c)."""
    assert parity_gaps(FOREIGN, BUILDERS, "families.py") == []


def test_case_names_are_unique_across_the_registry():
    """Builders of both files are keyed by case name: one name, one case, in the whole registry."""
    assert parity_gaps(FAMILIES, {**illia_cases.BUILDERS, **BUILDERS}, "cases.py / families.py") == []
    assert not illia_cases.BUILDERS.keys() & BUILDERS.keys()


@pytest.mark.parametrize("family,case", CASES, ids=[c.name for _, c in CASES])
def test_case_model_holds_its_family(exported, family: Family, case: ParityCase):
    """(d) each case's model, built, holds a layer of its family; functional dropout has no module
    to find, so its export must show the dropout draw as a noise input instead."""
    model, _ = BUILDERS[case.name]()
    if holds(model, family, None):
        return
    assert family.name == "dropout", f"case {case.name!r} holds no layer of family {family.name!r}"
    fmt, mode = case.matrix[0]
    _, _, _, manifest = exported(case, fmt, mode)
    assert any(n.kind == "dropout" for n in manifest.noise), f"case {case.name!r} draws no dropout"
