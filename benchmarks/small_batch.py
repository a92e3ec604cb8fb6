"""Small-batch section of mc_throughput.py: W1 (Bayesian MLP 784-512-512-10) on ONNX at
B = 1, 64, 256 (S = 32) for each strategy, as ratios to one deterministic ONNX Runtime forward
of S x B rows measured in the same run, plus the per-call Python overhead at S = 1, B = 1
(``predict`` time minus the graph call it makes).

Run alone: ``python -m benchmarks.small_batch [--threads 1] [--repeats 7]``, or through
``python benchmarks/mc_throughput.py --small-batch``. Kept in its own module so the conv and
.pt2 parts of mc_throughput.py can change independently.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 64, 256)
STRATEGIES = ("auto", "fresh", "bank", "local")
S = 32


def _median(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(tmp: Path, threads: int, repeats: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    import illia_export
    from benchmarks.mc_throughput import MLP
    from illia_export.runtime import load

    torch.manual_seed(0)
    path = tmp / "w1.onnx"
    illia_export.export(MLP().eval(), torch.randn(2, 784), path, format="onnx", task="classification", validate=False)
    det_path = tmp / "w1_det.onnx"
    torch.onnx.export(
        MLP(bayesian=False).eval(), torch.randn(2, 784), str(det_path), input_names=["x"],
        dynamic_axes={"x": {0: "rows"}}, dynamo=False,
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    det = ort.InferenceSession(str(det_path), so, providers=["CPUExecutionProvider"])
    pred = load(path, threads=threads)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for batch in BATCHES:
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        xs = rng.standard_normal((S * batch, 784)).astype(np.float32)
        t_det = _median(lambda xs=xs: det.run(None, {"x": xs}), repeats)
        row: dict[str, Any] = {"batch": batch, "det_s": t_det}
        for strategy in STRATEGIES:
            def call(st=strategy, x=x):
                return pred.predict(x, num_samples=S, seed=0, strategy=st)

            n = max(3, repeats // 2) if strategy == "fresh" and batch == 1 else repeats
            t = _median(call, n)
            row[strategy] = t / t_det
            row[f"{strategy}_s"] = t
        row["auto_is"] = pred.resolve_strategy("auto", batch)
        rows.append(row)
    return {"rows": rows, "overhead_us": overhead(tmp, threads, repeats)}


def overhead(tmp: Path, threads: int, repeats: int) -> dict[str, float]:
    """Median per-call Python time at S = 1, B = 1 on a 6-8-3 MLP: ``predict`` minus its graph call."""
    import torch

    import illia_export
    from illia_export.nn.torch import Linear
    from illia_export.runtime import load

    net = torch.nn.Sequential(Linear(6, 8), torch.nn.ReLU(), Linear(8, 3))
    path = tmp / "tiny.onnx"
    illia_export.export(net, torch.zeros(2, 6), path, format="onnx", task="classification", validate=False)
    pred = load(path, threads=threads)
    x = np.ones((1, 6), np.float32)
    out = {}
    for strategy in ("fresh", "local"):
        backend = pred.backend if strategy == "fresh" else pred.local_backend()
        graph: list[float] = []
        for name in ("run", "run_weights", "run_precomputed"):
            real = getattr(backend, name)

            def timed(*a, _real=real, _graph=graph):
                t = time.perf_counter()
                r = _real(*a)
                _graph.append(time.perf_counter() - t)
                return r

            setattr(backend, name, timed)
        total = []
        for i in range(200 + 100 * repeats):
            t = time.perf_counter()
            pred.predict(x, num_samples=1, seed=0, strategy=strategy)
            if i >= 100:
                total.append(time.perf_counter() - t)
        graph = graph[100:]
        out[strategy] = float(np.median(np.array(total) - np.array(graph))) * 1e6
        for name in ("run", "run_weights", "run_precomputed"):
            delattr(backend, name)  # back to the class's methods
    return out


def table(res: dict[str, Any]) -> str:
    head = f"W1 ONNX, S = {S}: time / one deterministic ORT forward of S x B rows (same run)"
    lines = [head, f"{'B':>5} {'det ms':>8} " + " ".join(f"{s:>8}" for s in STRATEGIES) + "  auto is"]
    for r in res["rows"]:
        lines.append(
            f"{r['batch']:>5} {r['det_s'] * 1e3:>8.3f} " + " ".join(f"{r[s]:>8.2f}" for s in STRATEGIES) + f"  {r['auto_is']}"
        )
    o = res["overhead_us"]
    lines.append(f"per-call Python overhead at S = 1, B = 1 (6-8-3 MLP): fresh {o['fresh']:.0f} us, local {o['local']:.0f} us")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(table(run(Path(tmp), args.threads, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
