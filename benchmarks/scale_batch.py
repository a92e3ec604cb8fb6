"""Batch scoring throughput, one process against Ray Data, on a Parquet file (default 200 000
rows), for every strategy; checks that both engines give the same numbers per row.

    python benchmarks/scale_batch.py [--rows 200000] [--samples 32] [--out DIR]

Throughput is rows/s of the whole run (read, score, write). Ray is timed twice: "cold" as the
CLI runs it (starting and stopping a local Ray instance), "warm" inside a running instance
(actor start-up included). Compare the ratios to local within one run: the machines are shared
and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(root: Path, rows: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    import illia_export
    from illia_export.nn.torch import Linear

    torch.manual_seed(0)
    bnn = torch.nn.Sequential(Linear(16, 64), torch.nn.ReLU(), Linear(64, 64), torch.nn.ReLU(), Linear(64, 4))
    drop = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4))
    illia_export.export(bnn, torch.zeros(2, 16), root / "bnn.onnx", format="onnx", task="classification")
    illia_export.export(drop, torch.zeros(2, 16), root / "dropout.onnx", format="onnx", mc_dropout=True,
                        task="classification")
    x = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
    pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(16)}), root / "x.parquet", row_group_size=20_000)
    return {"bnn": root / "bnn.onnx", "dropout": root / "dropout.onnx", "x": root / "x.parquet"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", default=None, help="folder for the files (default: a temporary one)")
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from illia_export.scale import score_file

    root = Path(args.out or tempfile.mkdtemp(prefix="illia-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    files = build(root, args.rows)
    from illia_export.scale.ray_engine import ensure_ray

    cold = {}
    t = time.perf_counter()
    score_file(files["bnn"], files["x"], engine="ray", num_samples=args.samples, seed=0, batch_size=args.batch_size)
    cold["ray_cold_s"] = round(time.perf_counter() - t, 2)
    ensure_ray()
    results = []
    for model, strategy in (("bnn", "fresh"), ("bnn", "bank"), ("bnn", "local"), ("dropout", "fresh")):
        runs = {}
        for engine in ("local", "ray"):
            out = root / f"{model}-{strategy}-{engine}.parquet"
            if out.exists():
                out.unlink()
            t = time.perf_counter()
            run = score_file(files[model], files["x"], out, engine=engine, num_samples=args.samples, seed=0,
                             strategy=strategy, batch_size=args.batch_size)
            runs[engine] = (time.perf_counter() - t, out, run.rows)
        a, b = (pq.read_table(runs[e][1]) for e in ("local", "ray"))
        diff = max(
            float(np.max(np.abs(np.asarray(a.column(c).to_pylist(), float) - np.asarray(b.column(c).to_pylist(), float))))
            for c in a.column_names
        )
        rec = {
            "model": model, "strategy": strategy, "rows": runs["local"][2],
            "local_rows_per_s": round(runs["local"][2] / runs["local"][0]),
            "ray_warm_rows_per_s": round(runs["ray"][2] / runs["ray"][0]),
            "ray_warm_over_local": round(runs["local"][0] / runs["ray"][0], 2),
            "max_abs_diff": diff,
        }
        if not results:
            rec["ray_cold_over_local"] = round(runs["local"][0] / cold["ray_cold_s"], 2)
        results.append(rec)
        print(json.dumps(rec), flush=True)
    print(json.dumps({"cpus": len(os.sched_getaffinity(0)), "samples": args.samples, "results": results}))


if __name__ == "__main__":
    main()
