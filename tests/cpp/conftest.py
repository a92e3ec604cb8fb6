"""Fixtures for the C++ runtime tests: the builds (one per kind and session, through
scripts/build-cpp.sh), exported W1/W2/W3 artifacts (TorchScript, ONNX, ORT format, an
AOTInductor package), and a numpy reference of the Monte Carlo summaries computed from the same
artifacts in Python.

Builds: ``cpp_build`` is the default build (LibTorch: TorchScript + AOTInductor, and ONNX
Runtime); ``cpp_ort_build`` the ONNX Runtime-only build (no LibTorch). They need cmake and a
C++ compiler (else the tests skip, saying so); ONNX Runtime needs its headers, which
scripts/fetch-ort-headers.sh downloads once into .cache/ort-headers: without network the ORT
tests skip with that reason and the default build goes on without ONNX Runtime. Set
ILLIA_CPP_BUILD_DIR to reuse build folders between runs (``<dir>/full``, ``<dir>/ort-only``;
incremental); by default fresh temporary ones are used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO / "runtimes" / "cpp"
BUILD_SCRIPT = REPO / "scripts" / "build-cpp.sh"
#: build-cpp.sh's exit status when the ONNX Runtime headers or library cannot be had.
NO_ORT = 3
#: ... and when the python has no torch (no LibTorch).
NO_TORCH = 4


@dataclass
class CppBuild:
    """Paths of the built tools, which backends they have, and how long the build took."""

    dir: Path
    illia_mc: Path
    illia_noise: Path
    example: Path
    seconds: float
    mode: str = "full"  # full | no-ort | ort-only
    #: Why this build has no ONNX Runtime backend (None when it has one).
    no_ort_reason: str | None = None
    backends: set[str] = field(default_factory=set)

    def run(self, *args, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, check=check, timeout=300, env=env
        )

    def require_ort(self) -> None:
        if self.no_ort_reason:
            pytest.skip(self.no_ort_reason)


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _check_toolchain() -> None:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: the C++ runtime cannot be built here")
    if _compiler() is None:
        pytest.skip(
            "no C++ compiler (c++, g++ or clang++) is installed: the C++ runtime cannot be built here"
        )


def _build_dir(tmp_path_factory, name: str) -> Path:
    root = os.environ.get("ILLIA_CPP_BUILD_DIR")
    build = Path(root) / name if root else tmp_path_factory.mktemp(f"illia-cpp-{name}")
    build.mkdir(parents=True, exist_ok=True)
    return build


def run_build_script(build: Path, *flags: str) -> subprocess.CompletedProcess:
    """bash scripts/build-cpp.sh FLAGS BUILD with this interpreter as $PYTHON."""
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *flags, str(build)], capture_output=True, text=True, timeout=1500, env=env
    )


def _made(build: Path, mode: str, seconds: float, no_ort_reason: str | None) -> CppBuild:
    backends = {"torchscript", "aoti"} if mode != "ort-only" else set()
    if no_ort_reason is None:
        backends.add("onnxruntime")
    sys.stderr.write(f"\n[cpp] {mode} build in {seconds:.1f} s ({build})\n")
    return CppBuild(
        build,
        build / "illia-mc",
        build / "illia-noise",
        build / "examples" / "illia_example",
        seconds,
        mode,
        no_ort_reason,
        backends,
    )


def _fail(proc: subprocess.CompletedProcess, what: str):
    pytest.fail(
        f"C++ {what} build failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> CppBuild:
    """The default build: LibTorch (TorchScript, AOTInductor) and, where its headers can be had,
    ONNX Runtime."""
    _check_toolchain()
    build = _build_dir(tmp_path_factory, "full")
    start = time.perf_counter()
    proc = run_build_script(build)
    mode, reason = "full", None
    if proc.returncode == NO_ORT:
        reason = "ONNX Runtime backend not built: " + proc.stderr.strip().splitlines()[-1]
        mode = "no-ort"
        proc = run_build_script(build, "--no-ort")
    if proc.returncode == NO_TORCH:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        _fail(proc, "default")
    return _made(build, mode, time.perf_counter() - start, reason)


@pytest.fixture(scope="session")
def cpp_ort_build(tmp_path_factory) -> CppBuild:
    """The ONNX Runtime-only build (no LibTorch); skips when ONNX Runtime cannot be had."""
    _check_toolchain()
    build = _build_dir(tmp_path_factory, "ort-only")
    start = time.perf_counter()
    proc = run_build_script(build, "--ort-only")
    if proc.returncode == NO_ORT:
        pytest.skip("ONNX Runtime-only build impossible here: " + proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        _fail(proc, "ONNX Runtime-only")
    return _made(build, "ort-only", time.perf_counter() - start, None)


# ---------------------------------------------------------------------------------------------
# Reference workloads (W1 with fewer hidden units, W2 as specified), exported with illia-export.
# ---------------------------------------------------------------------------------------------

HIDDEN = 128
BATCH = 8


def _w1():
    import torch

    from illia_export.nn.torch import Linear

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = Linear(784, HIDDEN)
            self.fc2 = Linear(HIDDEN, HIDDEN)
            self.fc3 = Linear(HIDDEN, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    return MLP(), torch.randn(BATCH, 784)


def _w2():
    import torch

    from illia_export.nn.torch import Conv2d, Linear

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = Conv2d(1, 16, 3)
            self.conv2 = Conv2d(16, 32, 3)
            self.fc = Linear(800, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(x.flatten(1))

    return CNN(), torch.randn(BATCH, 1, 28, 28)


def _w3():
    """W3 scaled down: int64 tokens in, a tuple of outputs (logits, h, c) out."""
    import torch

    from illia_export.nn.torch import LSTM

    return LSTM(num_embeddings=100, embeddings_dim=16, hidden_size=32, output_size=5), torch.randint(
        0, 100, (BATCH, 12)
    )


WORKLOADS = {"w1": _w1, "w2": _w2, "w3": _w3}


@dataclass
class Artifact:
    path: Path
    input: Path  # .npy of the example batch
    task: str


SUFFIX = {"torchscript": ".pt", "onnx": ".onnx", "ort": ".ort", "aoti": ".pt2"}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Export on demand and cache: artifacts(workload, samples, task, format) -> Artifact.

    The model is the same for every format (seeded), so the ONNX and AOTInductor artifacts of
    one workload hold the same weights. ``"ort"`` converts the ONNX artifact to ORT format;
    ``"aoti"`` compiles an AOTInductor package with :func:`export_aoti` (1-2 min: once per
    session and workload)."""
    import torch

    import illia_export

    root = tmp_path_factory.mktemp("illia-cpp-artifacts")
    cache: dict = {}

    def get(
        workload: str, samples: str = "vectorized", task: str = "classification", format: str = "torchscript"
    ) -> Artifact:
        key = (workload, samples, task, format)
        if key not in cache:
            torch.manual_seed(0)
            model, x = WORKLOADS[workload]()
            path = root / f"{workload}_{samples}_{task}{SUFFIX[format]}"
            if format == "ort":
                to_ort_format(get(workload, samples, task, "onnx").path, path)
            elif format == "aoti":
                export_aoti(model, (x,), path, samples=samples, task=task)
            else:
                illia_export.export(model, (x,), path, format=format, samples=samples, task=task)
            npy = root / f"{workload}_x.npy"
            np.save(npy, x.numpy())
            cache[key] = Artifact(path, npy, task)
        return cache[key]

    return get


def to_ort_format(onnx_path: Path, ort_path: Path) -> None:
    """Save ONNX Runtime's ORT-format version of an ONNX model (the metadata, hence the
    manifest, is kept)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# AOTInductor packages (compiled once per session and workload: 1-2 min each on two cores)
# ---------------------------------------------------------------------------------------------


def export_aoti(
    model, example_inputs: tuple, path: Path, samples: str = "vectorized", task: str = "raw"
) -> Path:
    """An AOTInductor package of `model` through the exporter (``format="aoti"``), validated
    against the eager model like every export."""
    import illia_export

    illia_export.export(model, example_inputs, path, format="aoti", samples=samples, task=task)
    return Path(path)


@pytest.fixture(scope="session")
def reference():
    """reference(artifact, num_samples, seed) -> the summaries computed in Python (see below)."""
    return reference_summary


def reference_summary(artifact: Artifact, num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The summaries the C++ tool writes, computed independently in Python: the TorchScript
    artifact run with the numpy reference of the manifest's noise generator (stream k = manifest position, samples
    [0, S)), then mean/std (ddof=0) of the raw output and, for classifiers, the softmax
    measures in float64 (nats)."""
    import torch

    from illia_export.artifact.manifest import read_manifest
    from illia_export.runtime.noise import reference

    manifest = read_manifest(artifact.path)
    standard_normal = reference(manifest.noise_generator)
    module = torch.jit.load(str(artifact.path))
    x = torch.from_numpy(np.load(artifact.input))
    noise = [standard_normal(seed, k, n.event_shape, 0, num_samples) for k, n in enumerate(manifest.noise)]
    with torch.no_grad():
        if manifest.vectorized:
            out = module(x, *[torch.from_numpy(a) for a in noise]).numpy()
        else:
            out = np.stack(
                [module(x, *[torch.from_numpy(a[s]) for a in noise]).numpy() for s in range(num_samples)]
            )
    values = out.astype(np.float64)
    result = {"mean": values.mean(0), "std": values.std(0)}
    if manifest.task == "classification":
        z = values - values.max(-1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(-1, keepdims=True)
        mean = probs.mean(0)
        entropy = -(mean * np.log(mean)).sum(-1)
        expected = (-(probs * np.log(probs)).sum(-1)).mean(0)
        result.update(
            probabilities=mean,
            entropy=entropy,
            expected_entropy=expected,
            mutual_information=np.maximum(entropy - expected, 0.0),
        )
    return result
