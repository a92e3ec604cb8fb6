"""The C++ runtime's backends (illia-mc: ONNX Runtime, TorchScript, AOTInductor) against the
Python runtime, side by side.

For W1 (MLP 784-512-512-10) and W2 (CNN), batch 64, S = 32, vectorized and per-call artifacts,
strategies fresh and bank: the fastest of `--repeat` predict calls in one process, for
``illia_export.runtime.load(p).predict(...)`` on the ONNX and the TorchScript artifact and for
``illia-mc --repeat`` on the ONNX, TorchScript and AOTInductor artifacts of the same model.
Prints milliseconds and the ratios python/c++ (> 1: C++ faster): ORT with ORT, TorchScript with
TorchScript, AOTInductor with the Python runtime's AOTInductor backend. AOTInductor packages are
compiled for vectorized graphs only (a minute each).
Build first (docs/cpp.md)::

    bash scripts/build-cpp.sh build/cpp                # LibTorch + ONNX Runtime
    bash scripts/build-cpp.sh --ort-only build/cpp-ort # optional: ORT numbers from the small binary
    .venv/bin/python benchmarks/cpp_vs_python.py --build build/cpp [--ort-build build/cpp-ort] [--repeat 5]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def export_aoti(model, x, path: Path, samples: str) -> None:
    """The AOTInductor package of `model`, through the exporter (validated like every export)."""
    illia_export.export(model, (x,), path, format="aoti", samples=samples, task="classification")


def python_ms(path: Path, x: np.ndarray, strategy: str, repeat: int) -> float:
    predictor = load(path)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        predictor.predict(x, num_samples=SAMPLES, seed=0, strategy=strategy)
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def cpp_ms(tool: Path, path: Path, npy: Path, strategy: str, repeat: int, out: Path) -> float:
    cmd = [str(tool), str(path), "--input", str(npy), "--samples", str(SAMPLES), "--seed", "0"]
    cmd += ["--strategy", strategy, "--repeat", str(repeat), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return float(re.search(r", ([0-9.]+) ms \(best", proc.stdout).group(1))


def has_backend(tool: Path, probe: Path, npy: Path, out: Path) -> bool:
    proc = subprocess.run(
        [str(tool), str(probe), "--input", str(npy), "--samples", "1", "--seed", "0", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0


def fmt(v: float | None, width: int = 9, digits: int = 1) -> str:
    return f"{v:{width}.{digits}f}" if v is not None else f"{'-':>{width}s}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build/cpp", help="a default build (scripts/build-cpp.sh BUILD)")
    ap.add_argument("--ort-build", default=None, help="an ONNX Runtime-only build, for the ORT column")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--no-aoti", action="store_true", help="skip the AOTInductor packages (minutes to compile)"
    )
    args = ap.parse_args()
    tool = Path(args.build) / "illia-mc"
    if not tool.exists():
        sys.exit(f"{tool} not found: run bash scripts/build-cpp.sh {args.build} first (docs/cpp.md)")
    ort_tool = Path(args.ort_build) / "illia-mc" if args.ort_build else tool

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="illia-bench-cpp-"))
    out = tmp / "out"
    head = (
        f"{'case':26s} {'py onnx':>9s} {'py ts':>9s} {'py aoti':>9s} {'c++ ort':>9s} {'c++ ts':>9s} {'c++ aoti':>9s}"
    )
    print(f"S={SAMPLES}, batch {BATCH}, ms (fastest of {args.repeat}); ratios python/c++ (> 1: C++ faster)")
    print(head + f" {'ORT':>6s} {'TS':>6s} {'AOTI':>6s}")
    for name, model, shape in (("W1", MLP(), (BATCH, 784)), ("W2", CNN(), (BATCH, 1, 28, 28))):
        model.eval()
        x = torch.randn(*shape)
        npy = tmp / f"{name}_x.npy"
        np.save(npy, x.numpy())
        for samples in ("vectorized", "per-call"):
            paths = {}
            for fmt_name, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
                paths[fmt_name] = tmp / f"{name}_{samples}{suffix}"
                illia_export.export(
                    model, (x,), paths[fmt_name], format=fmt_name, samples=samples, task="classification"
                )
            ort_ok = has_backend(ort_tool, paths["onnx"], npy, out)
            aoti = None
            if samples == "vectorized" and not args.no_aoti:
                aoti = tmp / f"{name}_{samples}.pt2"
                t0 = time.perf_counter()
                try:
                    export_aoti(model, x, aoti, samples)
                    print(
                        f"  ({name} AOTInductor package compiled in {time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
                except Exception as exc:  # e.g. a layer torch.export cannot keep dynamic
                    aoti = None
                    why = [line for line in str(exc).splitlines() if line.strip()]
                    print(
                        f"  ({name}: no AOTInductor package: {type(exc).__name__}: {' / '.join(why[:2])})",
                        flush=True,
                    )
            for strategy in ("fresh", "bank"):
                py_onnx = python_ms(paths["onnx"], x.numpy(), strategy, args.repeat)
                py_ts = python_ms(paths["torchscript"], x.numpy(), strategy, args.repeat)
                c_ort = cpp_ms(ort_tool, paths["onnx"], npy, strategy, args.repeat, out) if ort_ok else None
                c_ts = cpp_ms(tool, paths["torchscript"], npy, strategy, args.repeat, out)
                py_aoti = python_ms(aoti, x.numpy(), strategy, args.repeat) if aoti else None
                c_aoti = cpp_ms(tool, aoti, npy, strategy, args.repeat, out) if aoti else None
                ratios = [
                    py_onnx / c_ort if c_ort else None,
                    py_ts / c_ts,
                    py_aoti / c_aoti if c_aoti and py_aoti else None,
                ]
                case = f"{name} {samples} {strategy}"
                print(
                    f"{case:26s} {fmt(py_onnx)} {fmt(py_ts)} {fmt(py_aoti)} {fmt(c_ort)} {fmt(c_ts)} {fmt(c_aoti)} "
                    + " ".join(fmt(r, 6, 2) for r in ratios),
                    flush=True,
                )


if __name__ == "__main__":
    main()
