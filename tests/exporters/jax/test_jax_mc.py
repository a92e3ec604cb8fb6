"""JAX MC sampling: every jax.random draw of an nnx model becomes a noise input.

The reference is the user's: the nnx model called S times with its own rngs (``nnx.Dropout``
with ``deterministic=False``), against the artifact run by :mod:`illia_export.runtime` with
its own seeded noise. Artifacts are exported once per module and shared.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import illia_export  # noqa: E402
from illia_export.errors import ExportError, ToleranceError  # noqa: E402
from illia_export.exporters.jax import draws as jax_draws  # noqa: E402
from illia_export.exporters.jax.export import export_jax, onnx_nodes, tflite_ops  # noqa: E402
from illia_export.runtime import load  # noqa: E402
from tests.exporters.jax import models  # noqa: E402

S = 500
SUFFIX = {"savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}


class DropMLP(nnx.Module):
    """Linear -> ReLU -> Dropout(0.3) -> Linear -> Dropout(0.2) -> Linear: the plain nnx MC-dropout model."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(params=seed, dropout=seed + 1)
        self.fc1 = nnx.Linear(6, 24, rngs=r)
        self.drop1 = nnx.Dropout(0.3, rngs=r)
        self.fc2 = nnx.Linear(24, 16, rngs=r)
        self.drop2 = nnx.Dropout(0.2, rngs=r)
        self.head = nnx.Linear(16, 3, rngs=r)

    def __call__(self, x):
        h = self.drop1(jax.nn.relu(self.fc1(x)))
        return self.head(self.drop2(jax.nn.relu(self.fc2(h))))


class UnusedDrop(DropMLP):
    def __call__(self, x):
        return self.head(jax.nn.relu(self.fc2(self.drop1(jax.nn.relu(self.fc1(x))))))


class NoisyLayer(nnx.Module):
    """A custom layer with its own randomness: weight-like normal noise, per-example uniform/bernoulli."""

    def __init__(self, rngs: nnx.Rngs):
        self.fc = nnx.Linear(6, 8, rngs=rngs)
        self.rngs = rngs

    def __call__(self, x):
        h = self.fc(x) + 0.3 * jax.random.normal(self.rngs.noise(), (8,))
        gain = jax.random.uniform(self.rngs.noise(), h.shape, minval=0.5, maxval=1.5)
        keep = jax.random.bernoulli(self.rngs.noise(), 0.7, h.shape)
        return h * gain * keep


class Noisy(nnx.Module):
    def __init__(self, seed: int = 0):
        self.noisy = NoisyLayer(nnx.Rngs(params=seed, noise=seed + 7))
        self.head = nnx.Linear(8, 2, rngs=nnx.Rngs(seed))

    def __call__(self, x):
        return self.head(jnp.tanh(self.noisy(x)))


class WithRandint(nnx.Module):
    def __init__(self):
        self.fc = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
        self.rngs = nnx.Rngs(noise=1)

    def __call__(self, x):
        shift = jax.random.randint(self.rngs.noise(), (4,), 0, 3)
        return self.fc(x) + shift


X = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
#: (model, format, sample mode) exported once each; the matrix covers every model and format
#: in both modes without exporting the full product (TF conversions are the slow part).
MATRIX = [
    ("drop", "onnx", "vectorized"),
    ("drop", "tflite", "per-call"),
    ("noisy", "onnx", "per-call"),
    ("noisy", "tflite", "vectorized"),
    ("noisy", "savedmodel", "vectorized"),
]
FACTORIES = {"drop": DropMLP, "noisy": Noisy}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("jax_mc")
    cache: dict = {}

    def get(name: str, fmt: str, mode: str):
        key = (name, fmt, mode)
        if key not in cache:
            if fmt != "onnx":
                pytest.importorskip("tensorflow")
            model = FACTORIES[name]()
            path = root / f"{name}-{mode}{SUFFIX[fmt]}"
            manifest = export_jax(
                model,
                X,
                path,
                fmt,
                samples=mode,
                mc_dropout=True if name == "drop" else None,
                distribution_samples=S,
            )
            cache[key] = (model, path, manifest)
        return cache[key]

    return get


def own_samples(model, x: np.ndarray, num: int) -> np.ndarray:
    """The user's reference: the nnx model (dropout on) called `num` times with its own rngs."""
    work = nnx.clone(model)
    for _, m in nnx.iter_modules(work):
        if isinstance(m, nnx.Dropout):
            m.deterministic = False
    step = nnx.jit(lambda m, x: m(x))
    return np.stack([np.asarray(step(work, jnp.asarray(x))) for _ in range(num)])


@pytest.mark.parametrize(("name", "fmt", "mode"), MATRIX)
def test_artifact_samples_like_the_model(name, fmt, mode, artifacts):
    model, path, manifest = artifacts(name, fmt, mode)
    assert manifest.validation.passed
    # the export's own distribution check is recorded and within the band
    ratio = manifest.validation.distribution["output"]["std_ratio"]
    assert 0.9 <= ratio <= 1.1, ratio
    # and independently: the runtime's MC std against the model's own sampling, at a batch
    # size the example did not have (per-example noise sized from the input)
    x = np.random.default_rng(5).standard_normal((5, 6)).astype(np.float32)
    pred = load(path).predict(x, num_samples=S, seed=11)
    got = pred.outputs["output"].astype(np.float64)
    want = own_samples(model, x, S).astype(np.float64)
    assert got.shape == want.shape == (S, 5, manifest.outputs[0].shape[-1])
    std_ratio = np.median(got.std(0) / want.std(0))
    assert 0.9 <= std_ratio <= 1.1, std_ratio
    z = (got.mean(0) - want.mean(0)) / np.sqrt((got.var(0) + want.var(0)) / S)
    assert np.median(np.abs(z)) < 2.0


def test_noise_inputs_follow_the_torch_contract(artifacts):
    _, _, drop = artifacts("drop", "onnx", "vectorized")
    assert [(n.name, n.shape, n.kind, n.transform) for n in drop.noise] == [
        ("eps_drop1_dropout", ["samples", "batch", 24], "dropout", "dropout"),
        ("eps_drop2_dropout", ["samples", "batch", 16], "dropout", "dropout"),
    ]
    assert [(d.path, d.p, d.sampled) for d in drop.dropout] == [("drop1", 0.3, True), ("drop2", 0.2, True)]
    _, _, noisy = artifacts("noisy", "onnx", "per-call")
    assert [(n.name, n.shape, n.kind, n.transform) for n in noisy.noise] == [
        ("eps_noisy_normal", [8], "weight", "affine"),
        ("eps_noisy_uniform", ["batch", 8], "draw", "uniform"),
        ("eps_noisy_bernoulli", ["batch", 8], "draw", "bernoulli"),
    ]


def test_graphs_hold_no_random_op(artifacts):
    import onnx

    for name, mode in (("drop", "vectorized"), ("noisy", "per-call")):
        _, path, _ = artifacts(name, "onnx", mode)
        ops = {n.op_type for n in onnx_nodes(onnx.load(str(path)).graph)}
        assert not [op for op in ops if op.startswith("Random") or op == "Multinomial"], ops
    for name, mode in (("drop", "per-call"), ("noisy", "vectorized")):
        _, path, _ = artifacts(name, "tflite", mode)
        ops = tflite_ops(path.read_bytes())
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM" or "RANDOM" in op], ops


def test_same_noise_transforms_are_the_contract(artifacts):
    """Fed z, the artifact computes the documented transforms: dropout keeps Φ(z) >= p, scaled by 1/(1-p)."""
    from scipy.stats import norm

    model, path, manifest = artifacts("drop", "onnx", "vectorized")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    z1 = rng.standard_normal((4, 2, 24)).astype(np.float32)
    z2 = rng.standard_normal((4, 2, 16)).astype(np.float32)
    (got,) = sess.run(["output"], {"input": X, "eps_drop1_dropout": z1, "eps_drop2_dropout": z2})
    p = {
        ".".join(map(str, k)): np.asarray(v.get_value())
        for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    h = np.maximum(X @ p["fc1.kernel"] + p["fc1.bias"], 0)
    h = h * (norm.cdf(z1) >= 0.3) / 0.7
    h = np.maximum(h @ p["fc2.kernel"] + p["fc2.bias"], 0)
    h = h * (norm.cdf(z2) >= 0.2) / 0.8
    want = h @ p["head.kernel"] + p["head.bias"]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mc_dropout_selects_and_refuses_clearly(tmp_path):
    x = X
    m = export_jax(
        DropMLP(), x, tmp_path / "sub.onnx", samples="per-call", mc_dropout=["drop2"], distribution_samples=0
    )
    assert [n.name for n in m.noise] == ["eps_drop2_dropout"]
    assert [(d.path, d.sampled) for d in m.dropout] == [("drop1", False), ("drop2", True)]
    # "sampled" only for a module that owns a noise input (drop2 is never called here)
    m = export_jax(
        UnusedDrop(), x, tmp_path / "u.onnx", samples="per-call", mc_dropout=True, distribution_samples=0
    )
    assert [(d.path, d.sampled) for d in m.dropout] == [("drop1", True), ("drop2", False)]
    assert [n.name for n in m.noise] == ["eps_drop1_dropout"]
    with pytest.raises(ExportError, match=r"\['nope'\].*\['drop1', 'drop2'\]"):
        export_jax(DropMLP(), x, tmp_path / "a.onnx", mc_dropout=["nope"])
    with pytest.raises(ExportError, match="mc_dropout=True, but the model has no dropout module"):
        illia_export.export(
            models.make_mlp(), np.zeros((2, 12), np.float32), tmp_path / "b.onnx", mc_dropout=True
        )
    with pytest.raises(ExportError, match=r"\['local'\] do not apply to a JAX model"):
        illia_export.export(DropMLP(), x, tmp_path / "c.onnx", mc_dropout=True, local=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.onnx", "u.onnx"]


def test_no_noise_is_refused_unless_deterministic(tmp_path):
    model = DropMLP()
    # dropout off (no mc_dropout): nothing random is left, and the message says how to sample it
    with pytest.raises(
        ExportError,
        match=r"draws no random numbers.*\['drop1', 'drop2'\].*mc_dropout=True.*deterministic=True",
    ):
        export_jax(model, X, tmp_path / "a.onnx", samples="per-call")
    with pytest.raises(ExportError, match="draws no random numbers"):
        export_jax(model, X, tmp_path / "a.onnx", samples="vectorized")
    with pytest.raises(ExportError, match="samples='per-call'"):
        export_jax(model, X, tmp_path / "b.onnx", samples="vectorized", deterministic=True)
    with pytest.raises(
        ExportError, match=r"deterministic=True, but the model draws 2 random numbers.*drop1\.dropout"
    ):
        export_jax(model, X, tmp_path / "c.onnx", samples="per-call", deterministic=True, mc_dropout=True)
    assert list(tmp_path.iterdir()) == []
    manifest = export_jax(model, X, tmp_path / "d.onnx", samples="per-call", deterministic=True)
    assert manifest.noise == [] and manifest.validation.passed
    assert all(not d.sampled for d in manifest.dropout)


def test_unsupported_draw_is_refused_with_its_line(tmp_path):
    with pytest.raises(ExportError, match=r"random_bits at .*test_jax_mc\.py:\d+.*not randint"):
        export_jax(WithRandint(), X, tmp_path / "r.onnx", samples="per-call")
    assert not (tmp_path / "r.onnx").exists()


def test_a_draw_that_loses_its_randomness_fails_the_distribution_check(tmp_path, monkeypatch):
    # same-noise validation cannot see this (graph and reference share the broken transform);
    # the check against the model's own sampling must
    monkeypatch.setattr(jax_draws, "phi", lambda z: jnp.full(jnp.shape(z), 0.99, jnp.float32))
    with pytest.raises(ToleranceError, match="randomness is missing"):
        export_jax(
            DropMLP(), X, tmp_path / "m.onnx", samples="vectorized", mc_dropout=True, distribution_samples=S
        )
    assert not (tmp_path / "m.onnx").exists()


def test_export_leaves_the_users_model_alone(tmp_path):
    model = Noisy()
    count = int(model.noisy.rngs.noise.count[...])
    model2 = DropMLP()
    model2.eval()
    export_jax(model, X, tmp_path / "n.onnx", samples="per-call", distribution_samples=300)
    export_jax(model2, X, tmp_path / "d.onnx", samples="per-call", mc_dropout=True, distribution_samples=300)
    assert int(model.noisy.rngs.noise.count[...]) == count
    assert model2.drop1.deterministic is True and model2.drop2.deterministic is True


class WithGumbel(nnx.Module):
    def __init__(self):
        self.fc = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
        self.rngs = nnx.Rngs(noise=1)

    def __call__(self, x):
        return self.fc(x) + jax.random.gumbel(self.rngs.noise(), (4,))


def test_a_sampler_behind_a_jitted_helper_is_refused_by_name(tmp_path):
    with pytest.raises(
        ExportError,
        match=r"the model's forward draws through jax.random's 'gumbel'.*jax.random.normal / uniform / bernoulli",
    ):
        export_jax(WithGumbel(), X, tmp_path / "g.onnx", samples="per-call")
    assert not (tmp_path / "g.onnx").exists()


def test_source_sampling_is_the_model_called_repeatedly():
    from illia_export.exporters.jax.sampling import source_samples

    model = DropMLP()
    count = int(model.drop1.rngs.count[...])
    (scanned,) = source_samples(model, [X], 40)
    np.testing.assert_allclose(scanned, own_samples(model, X, 40), atol=1e-5)
    assert int(model.drop1.rngs.count[...]) == count
    assert scanned.std(0).min() > 0


def test_a_frozen_bayesian_model_is_checked_against_its_unfrozen_sampling(tmp_path):
    from illia_export.nn.jax.module import freeze

    model = models.make_mlp(hidden=8)
    x = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    model(x)
    freeze(model)  # calls now repeat the last weights; the graph samples (injected noise wins)
    manifest = export_jax(model, x, tmp_path / "f.onnx", samples="per-call", distribution_samples=300)
    assert 0.8 <= manifest.validation.distribution["output"]["std_ratio"] <= 1.25
    assert all(layer.frozen for layer in model.layers)
