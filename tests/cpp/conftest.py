"""Fixtures for the C++ runtime tests: one CMake build per session, exported W1/W2 artifacts,
and a numpy reference of the Monte Carlo summaries computed from the same artifacts in Python.

The build needs cmake, a C++17 compiler and the LibTorch of the installed torch wheel; where
cmake or the compiler is missing the tests skip with that reason. Set ILLIA_CPP_BUILD_DIR to
reuse a build folder between runs (incremental); by default a fresh temporary one is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO / "runtimes" / "cpp"


@dataclass
class CppBuild:
    """Paths of the built tools and how long the build took."""

    dir: Path
    illia_mc: Path
    illia_noise: Path
    example: Path
    seconds: float

    def run(self, *args, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, check=check, timeout=300
        )


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> CppBuild:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed: the C++ runtime cannot be built here")
    if _compiler() is None:
        pytest.skip(
            "no C++ compiler (c++, g++ or clang++) is installed: the C++ runtime cannot be built here"
        )
    import torch

    build = Path(os.environ.get("ILLIA_CPP_BUILD_DIR") or tmp_path_factory.mktemp("illia-cpp-build"))
    build.mkdir(parents=True, exist_ok=True)
    configure = [
        cmake,
        "-S",
        str(RUNTIME_DIR),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        "-DILLIA_BUILD_EXAMPLES=ON",
    ]
    if shutil.which("ninja") and not (build / "Makefile").exists():
        configure += ["-G", "Ninja"]
    start = time.perf_counter()
    for cmd in (configure, [cmake, "--build", str(build), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"C++ build failed: {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    seconds = time.perf_counter() - start
    sys.stderr.write(f"\n[cpp] runtimes/cpp built in {seconds:.1f} s ({build})\n")
    return CppBuild(
        build, build / "illia-mc", build / "illia-noise", build / "examples" / "illia_example", seconds
    )


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


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Export on demand and cache: artifacts(workload, samples, task) -> Artifact."""
    import torch

    import illia_export

    root = tmp_path_factory.mktemp("illia-cpp-artifacts")
    cache: dict = {}

    def get(workload: str, samples: str = "vectorized", task: str = "classification") -> Artifact:
        key = (workload, samples, task)
        if key not in cache:
            torch.manual_seed(0)
            model, x = WORKLOADS[workload]()
            path = root / f"{workload}_{samples}_{task}.pt"
            illia_export.export(model, (x,), path, format="torchscript", samples=samples, task=task)
            npy = root / f"{workload}_x.npy"
            np.save(npy, x.numpy())
            cache[key] = Artifact(path, npy, task)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def reference():
    """reference(artifact, num_samples, seed) -> the summaries computed in Python (see below)."""
    return reference_summary


def reference_summary(artifact: Artifact, num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The summaries the C++ tool writes, computed independently in Python: the TorchScript
    artifact run with ``standard_normal`` noise (stream k = manifest position, samples
    [0, S)), then mean/std (ddof=0) of the raw output and, for classifiers, the softmax
    measures in float64 (nats)."""
    import torch

    from illia_export.exporters.manifest import read_manifest
    from illia_export.runtime.noise import standard_normal

    manifest = read_manifest(artifact.path)
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
