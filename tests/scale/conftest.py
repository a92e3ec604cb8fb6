"""Artifacts and tables for the batch-scoring tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import illia_export  # noqa: E402
from tests.runtime.conftest import MLP, DropoutNet, SingleLinear  # noqa: E402

ROWS = 600
from tests.session_cache import build_once  # noqa: E402


@pytest.fixture(scope="session")
def scale_files(tmp_path_factory):
    """mlp.onnx (+ local variant), dropout.onnx (per-example masks), single.onnx (regression);
    x.npy and x.parquet (six feature columns f0..f5) and ids.parquet (string ids + a tensor column)."""
    def build(root: Path):
        torch.manual_seed(0)
        illia_export.export(MLP(), torch.zeros(2, 6), root / "mlp.onnx", format="onnx", task="classification")
        illia_export.export(
            DropoutNet(), torch.zeros(2, 6), root / "dropout.onnx", format="onnx", mc_dropout=True, task="classification"
        )
        single = torch.nn.Sequential(torch.nn.Linear(6, 3), SingleLinear())
        illia_export.export(single, torch.zeros(2, 6), root / "single.onnx", format="onnx", task="regression")
        x = np.random.default_rng(0).normal(size=(ROWS, 6)).astype(np.float32)
        np.save(root / "x.npy", x)
        pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(6)}), root / "x.parquet")
        ids = np.array([f"user-{i * 7 % ROWS:05d}" for i in range(ROWS)])
        tensor = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 6)
        pq.write_table(pa.table({"user": ids, "input": tensor, "note": pa.array(["n"] * ROWS)}), root / "ids.parquet")
        return {"root": root, "x": x, "ids": ids, **{p.stem: p for p in root.glob("*.onnx")}}

    return build_once(tmp_path_factory, "scale-files", build)


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance (2 CPUs) for the session, shut down at its end unless one was running.

    Both Ray modules are one xdist group (tests/conftest.py), so they share one instance:
    starting Ray takes seconds of both cores."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()
