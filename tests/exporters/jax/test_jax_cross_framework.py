"""Cross-framework parity: torch and JAX layers with the same mu/rho and the same noise agree.

The torch side is the eager illia_export.nn.torch model with ``dist.set_noise(eps)`` on each
distribution (sample-major folded batch for a sample axis); the JAX side is the pure function
of :mod:`illia_export.exporters.jax.noise` and the ONNX artifact exported from it.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from illia_export.exporters.jax.export import export_jax
from illia_export.exporters.jax.noise import make_pure_function, model_distributions
from tests.exporters.jax import _runners, models

torch = pytest.importorskip("torch")
tnn = pytest.importorskip("illia_export.nn.torch")


class TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = tnn.Conv2d(4, 4, 3, stride=2, groups=2)
        self.fc = tnn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return self.fc(h.reshape(h.shape[0], -1))


class TorchSeq(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = tnn.LSTM(20, 4, 5, 3, padding_idx=0, max_norm=1.0)

    def forward(self, tokens):
        return self.lstm(tokens)


def copy_jax_to_torch(jax_model: nnx.Module, torch_model) -> dict:
    """Copy every distribution's mu/rho (same dotted paths, same shapes); return torch dists."""
    dists = {}
    for path, dist in model_distributions(jax_model):
        tdist = torch_model.get_submodule(path)
        assert list(tdist.mu.shape) == list(dist.shape), path
        with torch.no_grad():
            tdist.mu.copy_(torch.from_numpy(np.asarray(dist.mu[...])))
            tdist.rho.copy_(torch.from_numpy(np.asarray(dist.rho[...])))
        dists[path] = tdist
    return dists


def _torch_outputs(torch_model, dists, x, noise, num_samples):
    for path, tdist in dists.items():
        tdist.set_noise(torch.from_numpy(noise["eps_" + path.replace(".", "_")]))
    with torch.no_grad():
        folded = np.concatenate([x] * num_samples, axis=0)
        xt = torch.from_numpy(folded)
        out = torch_model(xt.long() if folded.dtype.kind == "i" else xt)
    leaves = [out] if isinstance(out, torch.Tensor) else [out[0], out[1][0], out[1][1]]
    return [o.numpy().reshape((num_samples, x.shape[0]) + tuple(o.shape[1:])) for o in leaves]


@pytest.mark.parametrize(
    "jax_factory,torch_factory,x",
    [
        (models.CNN, TorchCNN, np.random.default_rng(0).standard_normal((3, 1, 7, 7)).astype(np.float32)),
        (models.Seq, TorchSeq, np.random.default_rng(0).integers(0, 20, (3, 6)).astype(np.int32)),
    ],
    ids=["cnn", "lstm"],
)
def test_torch_and_jax_agree_for_the_same_noise(jax_factory, torch_factory, x, tmp_path):
    jax_model = jax_factory()
    torch_model = torch_factory()
    dists = copy_jax_to_torch(jax_model, torch_model)
    pure = make_pure_function(jax_model, vectorized=True, portable=False)
    rng = np.random.default_rng(1)
    noise = {e.name: rng.standard_normal((2, *e.shape)).astype(np.float32) for e in pure.noise}
    expected = _torch_outputs(torch_model, dists, x, noise, 2)
    got = [np.asarray(o) for o in jax.jit(pure.positional(1))(x, *[noise[e.name] for e in pure.noise])]
    for g, w in zip(got, expected):
        np.testing.assert_allclose(g, w, atol=1e-4)
    # and the ONNX artifact exported from JAX
    manifest = export_jax(jax_model, x, tmp_path / "m.onnx", "onnx", validate=False)
    onnx_out = _runners.run("onnx", tmp_path / "m.onnx", {"input": x, **noise}, [o.name for o in manifest.outputs])
    for g, w in zip(onnx_out, expected):
        np.testing.assert_allclose(g, w, atol=1e-4)
