"""The C++ runtime (illia-mc) against the Python runtime on the same TorchScript artifacts.

For W1 (MLP 784-512-512-10) and W2 (CNN), batch 64, S = 32, vectorized and per-call artifacts,
strategies fresh and bank: the fastest of `--repeat` predict calls in one process, for
``illia_export.runtime.load(p).predict(...)`` and for ``illia-mc --repeat``. Prints one row per
case and the ratio python/cpp (> 1: C++ faster). Build the tool first (docs/cpp.md)::

    cmake -S runtimes/cpp -B build/cpp -DCMAKE_BUILD_TYPE=Release \\
          -DCMAKE_PREFIX_PATH="$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
    cmake --build build/cpp -j2
    .venv/bin/python benchmarks/cpp_vs_python.py [--illia-mc build/cpp/illia-mc] [--repeat 5]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import illia_export  # noqa: E402
from illia_export.nn.torch import Conv2d, Linear  # noqa: E402
from illia_export.runtime import load  # noqa: E402

BATCH, SAMPLES = 64, 32


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = Linear(784, 512), Linear(512, 512), Linear(512, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = Conv2d(1, 16, 3), Conv2d(16, 32, 3), Linear(800, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--illia-mc", default="build/cpp/illia-mc")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tool = Path(args.illia_mc)
    if not tool.exists():
        sys.exit(f"{tool} not found: build runtimes/cpp first (see docs/cpp.md) or pass --illia-mc PATH")

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="illia-bench-cpp-"))
    print(f"{'case':34s} {'python ms':>10s} {'c++ ms':>10s} {'python/c++':>10s}")
    for name, model, shape in (("W1", MLP(), (BATCH, 784)), ("W2", CNN(), (BATCH, 1, 28, 28))):
        x = torch.randn(*shape)
        npy = tmp / f"{name}_x.npy"
        np.save(npy, x.numpy())
        for samples in ("vectorized", "per-call"):
            path = tmp / f"{name}_{samples}.pt"
            illia_export.export(
                model, (x,), path, format="torchscript", samples=samples, task="classification"
            )
            predictor = load(path)
            for strategy in ("fresh", "bank"):
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    predictor.predict(x.numpy(), num_samples=SAMPLES, seed=0, strategy=strategy)
                    times.append((time.perf_counter() - t0) * 1000)
                proc = subprocess.run(
                    [
                        str(tool),
                        str(path),
                        "--input",
                        str(npy),
                        "--samples",
                        str(SAMPLES),
                        "--seed",
                        "0",
                        "--strategy",
                        strategy,
                        "--repeat",
                        str(args.repeat),
                        "--out",
                        str(tmp / "out"),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                cpp_ms = float(re.search(r", ([0-9.]+) ms \(best", proc.stdout).group(1))
                py_ms = min(times)
                case = f"{name} {samples} {strategy}"
                print(f"{case:34s} {py_ms:10.1f} {cpp_ms:10.1f} {py_ms / cpp_ms:10.2f}")


if __name__ == "__main__":
    main()
