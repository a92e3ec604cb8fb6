"""CUDA paths: onnxruntime CUDA EP with IOBinding, TorchScript on CUDA, torch noise on the GPU.

Skipped (with the reason) where no CUDA device is usable.
"""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.runtime import load
from illia_export.runtime.noise import standard_normal, standard_normal_torch

pytestmark = pytest.mark.gpu
X = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)


def _need_torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda.is_available() is False: no CUDA device for torch")
    return torch


def _need_ort_cuda():
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA machine)")
    _need_torch_cuda()


def test_torch_noise_on_cuda_matches_numpy():
    _need_torch_cuda()
    got = standard_normal_torch(3, 1, (1001, 7), 5, 6, device="cuda")
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), standard_normal(3, 1, (1001, 7), 5, 6), rtol=0, atol=1e-6)


def test_v2_torch_noise_on_cuda_matches_numpy():
    from illia_export.runtime.noise import standard_normal_v2, standard_normal_v2_torch

    _need_torch_cuda()
    got = standard_normal_v2_torch(3, 1, (1001, 7), 5, 6, device="cuda")
    assert got.device.type == "cuda"
    ref = standard_normal_v2(3, 1, (1001, 7), 5, 6)
    err = np.abs(got.cpu().numpy().astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() < 6e-7  # the spec's conformance bound (docs/noise.md)


@pytest.mark.parametrize("generator", ["illia-noise-v1", "illia-noise-v2"])
def test_cuda_predictions_use_the_generator(artifacts, generator):
    _need_torch_cuda()
    cpu = load(artifacts["mlp_torchscript_vectorized"]).predict(X, num_samples=4, seed=1, generator=generator)
    gpu = load(artifacts["mlp_torchscript_vectorized"], device="cuda").predict(
        X, num_samples=4, seed=1, generator=generator
    )
    assert gpu.noise_generator == generator
    np.testing.assert_allclose(gpu.samples, cpu.samples, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy", ["fresh", "bank", "local"])
def test_torchscript_cuda_matches_cpu(artifacts, strategy):
    _need_torch_cuda()
    cpu = load(artifacts["mlp_torchscript_vectorized"]).predict(X, num_samples=6, seed=1, strategy=strategy)
    gpu = load(artifacts["mlp_torchscript_vectorized"], device="cuda")
    assert gpu.backend.noise_device == "cuda"
    np.testing.assert_allclose(
        gpu.predict(X, num_samples=6, seed=1, strategy=strategy).samples, cpu.samples, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("strategy", ["fresh", "bank", "local"])
def test_onnxruntime_cuda_matches_cpu(artifacts, strategy):
    _need_ort_cuda()
    cpu = load(artifacts["mlp_onnx_vectorized"]).predict(X, num_samples=6, seed=1, strategy=strategy)
    p = load(artifacts["mlp_onnx_vectorized"], device="cuda")
    assert p.backend.session.get_providers()[0] == "CUDAExecutionProvider"
    got = p.predict(X, num_samples=6, seed=1, strategy=strategy, chunk_size=4)
    np.testing.assert_allclose(got.samples, cpu.samples, rtol=1e-4, atol=1e-4)


def test_onnxruntime_cuda_per_call(artifacts):
    _need_ort_cuda()
    cpu = load(artifacts["mlp_onnx_per-call"]).predict(X, num_samples=3, seed=4)
    got = load(artifacts["mlp_onnx_per-call"], device="cuda").predict(X, num_samples=3, seed=4)
    np.testing.assert_allclose(got.samples, cpu.samples, rtol=1e-4, atol=1e-4)
