"""Parity of exported graphs with the eager source model, for the same noise.

The matrix comes from the registry (``illia_export/exporters/torch/registry.py``): every parity
case of the illia family (per layer type and per architecture) x the formats it declares (ONNX,
TorchScript, .pt2, AOTInductor for a few) x the sample modes it declares: exported at batch 2
(once per session, tests/exporters/torch/conftest.py), run at two other batches (and two
sequence lengths for token models) on 3 random noise draws and on zero noise; max abs diff
<= 1e-4 against the eager model with the same eps injected one sample at a time
(``set_noise``, independent of the exporter's interception). The builders are in cases.py,
keyed by case name; the tests below fail when registry and builders drift apart.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import illia_export
import illia_export.nn.torch as illia_nn
from illia_export.artifact.manifest import read_manifest
from illia_export.exporters.torch.export import TORCH_FORMATS
from illia_export.exporters.torch.registry import (
    FAMILIES,
    PARITY_FORMATS,
    Family,
    Layer,
    ParityCase,
    class_name,
    parity_cases,
)
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402

from .cases import BUILDERS, EXPORT_CHECK_SAMPLES, holds, parity_gaps

TOL = 1e-4
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "aoti": ".pt2"}
ILLIA = next(f for f in FAMILIES if f.name == "illia")
CASES = parity_cases("illia")  # (family, layer or None, case)
PARAMS = [(case, f, m) for _, _, case in CASES for f, m in case.matrix]


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


def eager_reference(
    model, x, noise: list[np.ndarray], parameters: list[str], vectorized: bool
) -> list[np.ndarray]:
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


@pytest.fixture
def exported(session_cache):
    """(case, format, mode) -> (eager model, artifact path, manifest), exported once per session:
    every format the case declares for the mode from one call (one torch.export capture for ONNX,
    .pt2 and AOTInductor), as a user shipping several formats would."""

    def get(case: ParityCase, fmt: str, mode: str):
        formats = [f for f, m in case.matrix if m == mode]
        if fmt not in formats:
            formats = [fmt]

        def export():
            torch.manual_seed(0)
            builder = BUILDERS[case.name]
            model = builder.build().eval()
            folder = session_cache.folder(case.name, f"{'+'.join(formats)}-{mode}")
            paths = {f: folder / f"model-{f}{SUFFIX[f]}" for f in formats}
            x = builder.make_input(2, builder.seq_lens[0])
            manifests = illia_export.export(model, x, paths, samples=mode, distribution_samples=EXPORT_CHECK_SAMPLES)
            return {f: (model, paths[f], manifests[f]) for f in formats}

        return session_cache.get(("parity", case.name, tuple(formats), mode), export)[fmt]

    return get


def _names(manifest) -> list[str]:
    return [t.name for t in manifest.inputs] + [n.name for n in manifest.noise]


@pytest.mark.parametrize("case,fmt,mode", PARAMS, ids=[f"{c.name}-{f}-{m}" for c, f, m in PARAMS])
def test_parity(exported, session_cache, case: ParityCase, fmt: str, mode: str):
    model, path, manifest = exported(case, fmt, mode)
    builder = BUILDERS[case.name]
    vectorized = mode == "vectorized"
    assert manifest.sample_axis == (0 if vectorized else None)
    assert manifest.validation is not None and manifest.validation.max_abs_diff <= TOL
    params = [n.parameter for n in manifest.noise]
    rng = np.random.default_rng(42)
    for batch in builder.batches:
        for seq in builder.seq_lens:
            x = builder.make_input(batch, seq)
            draws = [
                [
                    rng.standard_normal(([3] if vectorized else []) + n.event_shape).astype(np.float32)
                    for n in manifest.noise
                ]
                for _ in range(3)
            ]
            draws.append([np.zeros_like(d) for d in draws[0]])
            for noise in draws:
                got = session_cache.run(fmt, path, _names(manifest), [x.numpy()] + noise)
                want = eager_reference(model, x, noise, params, vectorized)
                assert len(got) == len(want) == len(manifest.outputs)
                for g, w in zip(got, want):
                    assert g.shape == w.shape
                    np.testing.assert_allclose(g, w, atol=TOL, rtol=0)


def _case(name: str) -> ParityCase:
    return next(case for _, _, case in CASES if case.name == name)


@pytest.mark.parametrize(
    "case,fmt", [(_case("linear"), f) for f, m in _case("linear").matrix if m == "vectorized"],
    ids=lambda v: getattr(v, "name", v),
)
def test_zero_noise_is_mean_network(exported, session_cache, case, fmt):
    builder = BUILDERS[case.name]
    model, path, manifest = exported(case, fmt, "vectorized")
    x = builder.make_input(4, 0)
    noise = [np.zeros([2] + n.event_shape, np.float32) for n in manifest.noise]
    got = session_cache.run(fmt, path, _names(manifest), [x.numpy()] + noise)[0]
    w1, b1 = model[0].weights_distribution.mu, model[0].bias_distribution.mu
    w2, b2 = model[2].weights_distribution.mu, model[2].bias_distribution.mu
    with torch.no_grad():
        mean_net = (torch.relu(x @ w1.T + b1) @ w2.T + b2).numpy()
    np.testing.assert_allclose(got[0], mean_net, atol=1e-5)
    np.testing.assert_allclose(got[1], mean_net, atol=1e-5)


ONNX_VECTORIZED = [case for _, _, case in CASES if ("onnx", "vectorized") in case.matrix]


@pytest.mark.parametrize("case", ONNX_VECTORIZED, ids=lambda c: c.name)
def test_onnx_graph_structure(exported, case):
    model, path, manifest = exported(case, "onnx", "vectorized")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    inputs = [i.name for i in graph.graph.input]
    assert inputs == _names(manifest)
    ops = {n.op_type for n in graph.graph.node}
    assert not any(op.startswith("Random") for op in ops)
    assert read_manifest(path).to_dict() == manifest.to_dict()
    if any(class_name(m) == "LSTM" for m in model.modules()):
        assert "Loop" in ops  # the recurrence stays a loop: any sequence length runs


# ----------------------------------------------------------------- registry <-> builders <-> models
def test_registry_and_builders_match():
    """Every illia layer has a case, every case a builder, every builder a case (a, b, c)."""
    assert parity_gaps([ILLIA], BUILDERS, "cases.py") == []


def test_parity_gaps_finds_each_kind_of_drift():
    """The check above fails on each kind of drift (so it cannot pass vacuously)."""
    drifted = Family(
        "illia",
        "illia_export",
        ("illia_export.nn.torch.",),
        "",
        layers=(
            Layer("Linear", ("weights_distribution",), cases=(ParityCase("linear", ("onnx",)),)),
            # (a) a layer without a case; (b) a case without a builder
            Layer("Conv1d", ("weights_distribution",)),
            Layer("Conv2d", ("weights_distribution",), cases=(ParityCase("no_such_builder", ("onnx",)),)),
        ),
        cases=(ParityCase("linear", ("pt2",)),),  # named twice
    )
    gaps = parity_gaps([drifted], {"linear": BUILDERS["linear"], "orphan": BUILDERS["conv1d"]}, "cases.py")
    assert gaps == [
        "layer 'Conv1d' of family 'illia' has no parity case",
        "case 'no_such_builder' of family 'illia' has no builder in cases.py",
        "case 'linear' is named twice in the registry",
        "builder 'orphan' in cases.py is named by no registry entry",  # (c)
    ]
    foreign = Family("lib", "lib", ("lib.",), "")  # a family without layers needs its own case
    assert parity_gaps([foreign], {}, "families.py") == ["family 'lib' has no parity case"]


@pytest.mark.parametrize("layer,case", [(lay, c) for _, lay, c in CASES], ids=[c.name for _, _, c in CASES])
def test_case_model_holds_its_layer(layer, case):
    """(d) each case's model, built, holds the layer it is listed under (family cases: an illia layer)."""
    torch.manual_seed(0)
    assert holds(BUILDERS[case.name].build(), ILLIA, layer), (
        f"case {case.name!r} is listed under {layer.name if layer else 'the illia family'} but its model holds none"
    )


def test_holds_rejects_a_model_without_the_layer():
    lstm = next(layer for layer in ILLIA.layers if layer.name == "LSTM")
    assert not holds(BUILDERS["linear"].build(), ILLIA, lstm)
    assert not holds(torch.nn.Sequential(torch.nn.Linear(2, 2)), ILLIA, None)


def test_every_layer_class_of_the_package_is_registered():
    """A new Bayesian layer in illia_export.nn.torch must get a registry entry (and with it a case)."""
    classes = {
        name
        for name in illia_nn.__all__
        if isinstance(cls := getattr(illia_nn, name), type)
        and issubclass(cls, torch.nn.Module)
        and cls is not illia_nn.BayesianModule  # the base class, not a layer
    }
    assert classes == {layer.name for layer in ILLIA.layers}


def test_declared_formats_are_the_exporters():
    assert set(PARITY_FORMATS) == set(TORCH_FORMATS)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "linear", "formats": ("onxx",)}, "unknown: \\['onxx'\\]"),
        ({"name": "linear", "formats": ()}, "formats"),
        ({"name": "linear", "formats": ("onnx", "onnx")}, "distinct"),
        ({"name": "linear", "formats": ("onnx",), "modes": ("sampled",)}, "unknown: \\['sampled'\\]"),
        ({"name": "linear", "formats": ("onnx",), "modes": ()}, "modes"),
        ({"name": "not-a-key", "formats": ("onnx",)}, "identifier"),
    ],
)
def test_parity_case_refuses_bad_declarations(kwargs, match):
    with pytest.raises(illia_export.errors.ExportError, match=match):
        ParityCase(**kwargs)


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


NOT_TORCHSCRIPT = [(case, m) for _, _, case in CASES if "torchscript" not in case.formats for m in case.modes]


@pytest.mark.parametrize("case,mode", NOT_TORCHSCRIPT, ids=[f"{c.name}-{m}" for c, m in NOT_TORCHSCRIPT])
def test_cases_left_out_of_torchscript_are_refused_clearly(tmp_path, case, mode):
    """A case the registry keeps out of TorchScript is refused there with the fix, writing nothing."""
    builder = BUILDERS[case.name]
    with pytest.raises(illia_export.errors.ExportError, match="samples='per-call'"):
        illia_export.export(
            builder.build().eval(),
            builder.make_input(2, 0),
            tmp_path / "m.pt",
            format="torchscript",
            samples=mode,
        )
    assert not list(tmp_path.iterdir())


def test_session_cache_computes_once_and_keeps_failures(tmp_path):
    """A failed export fails every test that needs it, without being exported again."""
    from .conftest import SessionCache

    cache, calls = SessionCache(tmp_path), []

    def failing():
        calls.append(1)
        raise illia_export.errors.ExportError("boom")

    for _ in range(2):
        with pytest.raises(illia_export.errors.ExportError, match="boom"):
            cache.get("k", failing)
    assert cache.get("ok", lambda: calls.append(2) or 7) == 7 == cache.get("ok", lambda: calls.append(3) or 8)
    assert calls == [1, 2]
