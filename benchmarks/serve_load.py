"""Bounded load test of `illia-export serve` on 127.0.0.1 (not a test): p50/p99 latency and
requests/s at 1, 8 and 32 concurrent clients, S=32, against the in-process `predict` time of
the same request (the server overhead ratio).

    PYTHONPATH=$PWD python benchmarks/serve_load.py [--requests 300] [--rows 1] [--artifact mlp.onnx]

Without --artifact it exports an MLP of illia Linear layers to a temporary ONNX file: `small`
(6-8-3, where the server's own overhead dominates; default) or `w1` (784-512-512-10). Each client sends its requests back to back with its own seed (fresh, seeds differ
per client so nothing is merged), then a second pass at 32 clients with one shared seed shows
the batcher merging requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def export_mlp(path: Path, sizes: tuple[int, ...]) -> None:
    """A Bayesian MLP of illia Linear layers with these layer sizes, to ONNX."""
    import torch

    import illia_export
    from illia_export.nn.torch import Linear

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    torch.manual_seed(0)
    net = torch.nn.Sequential(*layers)
    illia_export.export(net, torch.zeros(2, sizes[0]), path, format="onnx", task="classification", validate=False)


MODELS = {"small": (6, 8, 3), "w1": (784, 512, 512, 10)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(artifact: Path, port: int, extra: list[str]):
    cmd = [sys.executable, "-m", "illia_export.cli", "serve", str(artifact), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited with {proc.returncode}") from None
                time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_clients(url: str, payloads: list[bytes], clients: int, total: int) -> tuple[list[float], float, list[int]]:
    """`total` requests spread over `clients` threads, each sending back to back (one
    keep-alive connection per thread). Returns latencies (s), wall time, batch_requests seen."""
    import http.client

    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    lat: list[float] = []
    merged: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    host, port_path = url.split("//", 1)[1].split(":", 1)
    port, path = port_path.split("/", 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        mine, seen = [], []
        barrier.wait()
        for _ in range(per_client[i]):
            t0 = time.perf_counter()
            conn.request("POST", "/" + path, body=payloads[i], headers={"content-type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise SystemExit(f"HTTP {resp.status}: {data[:200]!r}")
            seen.append(json.loads(data)["parameters"]["batch_requests"])
        conn.close()
        with lock:
            lat.extend(mine)
            merged.extend(seen)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0, merged


def pct(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, default=None)
    ap.add_argument("--model", choices=sorted(MODELS), default="small",
                    help="MLP exported when no --artifact: small 6-8-3 (server overhead dominates) or W1 784-512-512-10")
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--samples", type=int, default=32)
    args = ap.parse_args()

    from illia_export.runtime import load

    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact
        if artifact is None:
            artifact = Path(tmp) / f"{args.model}.onnx"
            export_mlp(artifact, MODELS[args.model])
        predictor = load(artifact, warmup=True)
        spec = predictor.manifest.inputs[0]
        shape = [args.rows] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        times = []
        for i in range(50):
            t0 = time.perf_counter()
            predictor.predict(x, num_samples=args.samples, seed=i).summary_arrays()
            times.append(time.perf_counter() - t0)
        base = statistics.median(times) * 1000
        del predictor

        def payload(seed: int) -> bytes:
            return json.dumps({
                "inputs": [{"name": spec.name, "shape": shape, "datatype": "FP32", "data": x.reshape(-1).tolist()}],
                "parameters": {"num_samples": args.samples, "seed": seed},
            }).encode()

        port = free_port()
        url = f"http://127.0.0.1:{port}/v2/models/{artifact.stem}/infer"
        print(f"machine: {os.cpu_count()} CPUs; artifact {artifact.name}; S={args.samples}, {args.rows} row(s) "
              f"per request; in-process predict + summaries: {base:.2f} ms (median of 50)")
        print(f"{'clients':>7} {'seed':>8} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
              f"{'p50/predict':>11} {'merged':>8}")
        with server(artifact, port, ["--samples", str(args.samples)]):
            run_clients(url, [payload(0)], 1, 20)  # warm the server
            for clients, shared in ((1, False), (8, False), (32, False), (32, True)):
                payloads = [payload(0 if shared else c) for c in range(clients)]
                lat, wall, merged = run_clients(url, payloads, clients, args.requests)
                p50 = pct(lat, 0.5)
                print(f"{clients:>7} {'shared' if shared else 'own':>8} {len(lat):>8} {p50:>8.2f} {pct(lat, 0.99):>8.2f} "
                      f"{len(lat) / wall:>8.1f} {p50 / base:>11.2f} {statistics.mean(merged):>8.2f}")
        print("merged: mean number of requests that shared each request's predict call")


if __name__ == "__main__":
    main()
