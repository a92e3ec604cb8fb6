"""Artifacts for the runtime tests: small models exported once per session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import illia_export  # noqa: E402
from illia_export.nn.torch import LSTM, Conv2d, Linear  # noqa: E402
from tests.session_cache import build_once  # noqa: E402


class MLP(torch.nn.Module):
    """A 6 -> 8 -> 3 Bayesian MLP with visible posterior spread."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = Linear(6, 8)
        self.fc2 = Linear(8, 3)
        for layer in (self.fc1, self.fc2):
            for dist in (layer.weights_distribution, layer.bias_distribution):
                with torch.no_grad():
                    dist.mu.normal_(0.0, 0.5)
                    dist.rho.fill_(-1.5)  # sigma ~ 0.2

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class DropoutNet(torch.nn.Module):
    """Plain MC-dropout classifier: its masks are per-example noise ``[S, batch, 16]``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.4), torch.nn.Linear(16, 3)
        )

    def forward(self, x):
        return self.body(x)


class SingleLinear(torch.nn.Module):
    def __init__(self, in_features: int = 3, out_features: int = 2) -> None:
        super().__init__()
        self.fc = Linear(in_features, out_features)
        with torch.no_grad():
            self.fc.weights_distribution.mu.copy_(torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.0, -0.5]]))
            self.fc.weights_distribution.rho.copy_(torch.tensor([[-1.0, 0.0, -2.0], [0.5, -0.5, -1.5]]))
            self.fc.bias_distribution.mu.copy_(torch.tensor([0.1, -0.2]))
            self.fc.bias_distribution.rho.copy_(torch.tensor([-1.0, -3.0]))

    def forward(self, x):
        return self.fc(x)

    def analytic(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the output: N(x mu^T + b_mu, x^2 sigma^2T + sigma_b^2)."""
        wd, bd = self.fc.weights_distribution, self.fc.bias_distribution
        mu, sig = wd.mu.detach().double().numpy(), wd.sigma().detach().double().numpy()
        bmu, bsig = bd.mu.detach().double().numpy(), bd.sigma().detach().double().numpy()
        x = x.astype(np.float64)
        return x @ mu.T + bmu, (x**2) @ (sig**2).T + bsig**2


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2d(1, 2, 3)
        self.fc = Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """MLP (classification) as ONNX/TorchScript, vectorized and per-call; a single Linear
    (regression) as ONNX/TorchScript; a small CNN (no local variant) as ONNX; a small LSTM
    (three outputs, int64 tokens, ONNX Loop) as ONNX/TorchScript."""
    def build(root: Path):
        torch.manual_seed(0)
        mlp = MLP()
        single = SingleLinear()
        cnn = SmallCNN()
        out: dict[str, Path] = {}
        x_mlp = torch.zeros(2, 6)
        for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt")):
            for samples in ("vectorized", "per-call"):
                p = root / f"mlp_{samples}.{ext}"
                illia_export.export(mlp, x_mlp, p, format=fmt, samples=samples, task="classification")
                out[f"mlp_{fmt}_{samples}"] = p
            p = root / f"single.{ext}"
            illia_export.export(single, torch.zeros(2, 3), p, format=fmt, task="regression")
            out[f"single_{fmt}"] = p
        p = root / "cnn.onnx"
        illia_export.export(cnn, torch.zeros(2, 1, 6, 6), p, format="onnx", task="classification")
        out["cnn_onnx"] = p
        lstm = LSTM(50, 8, 16, 3)  # outputs y [B, 3], h [B, 16], c [B, 16]
        tokens = torch.randint(0, 50, (2, 5))
        for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt")):
            p = root / f"lstm.{ext}"
            illia_export.export(lstm, tokens, p, format=fmt, task="classification", validate=False)
            out[f"lstm_{fmt}"] = p
        return out

    return build_once(tmp_path_factory, "runtime-artifacts", build)


@pytest.fixture(scope="session")
def single_model() -> SingleLinear:
    return SingleLinear()


def write_multi_output_onnx(path: Path, manifest: dict | None, ir_version: int = 10) -> None:
    """A hand-built vectorized graph: x [B, 2], eps [S, 2] -> y = x * eps [S, B, 2], z = y + 1."""
    from onnx import TensorProto, helper


    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])
    eps = helper.make_tensor_value_info("eps_scale", TensorProto.FLOAT, ["samples", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["samples", "batch", 2])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["samples", "batch", 2])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Unsqueeze", ["eps_scale", "axes"], ["eps3"]),
        helper.make_node("Mul", ["input", "eps3"], ["y"]),
        helper.make_node("Add", ["y", "one"], ["z"]),
    ]
    graph = helper.make_graph(nodes, "multi", [x, eps], [y, z], initializer=[one, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    save_stamped(model, path, manifest)


def save_stamped(model, path: Path, manifest: dict | None) -> None:
    """Save a hand-built ONNX graph with `manifest` embedded; a valid manifest without a digest is
    stamped as the exporters do (runtime.load refuses unverified manifests), an invalid one (a test
    that means it to be refused) is written as given."""
    import onnx

    from illia_export.artifact.manifest import ONNX_METADATA_KEY

    if manifest is not None:
        text = json.dumps(manifest)
        if isinstance(manifest, dict) and "digest" not in manifest:
            from illia_export.artifact.digest import stamp_digest
            from illia_export.artifact.manifest import Manifest
            from illia_export.errors import ManifestError

            try:
                stamped = Manifest.from_dict(manifest)
            except ManifestError:
                stamped = None
            if stamped is not None:
                onnx.save(model, str(path))
                stamp_digest(path, stamped)
                text = stamped.to_json()
        prop = model.metadata_props.add()
        prop.key = ONNX_METADATA_KEY
        prop.value = text
    onnx.save(model, str(path))


MULTI_MANIFEST = {
    "contract": 1,
    "format": "onnx",
    "source": "torch",
    "task": "regression",
    "sample_axis": 0,
    "inputs": [{"name": "input", "shape": ["batch", 2], "dtype": "float32"}],
    "noise": [
        {
            "name": "eps_scale",
            "parameter": "scale",
            "shape": ["samples", 2],
            "distribution": "standard_normal",
        }
    ],
    "outputs": [
        {"name": "y", "shape": ["samples", "batch", 2], "dtype": "float32"},
        {"name": "z", "shape": ["samples", "batch", 2], "dtype": "float32"},
    ],
    "validation": None,
}
