"""Bounded load test of `illia-export serve` on 127.0.0.1 (not a test), side by side with the
user's own app: a 30-line FastAPI app (uvicorn, defaults) with one POST route calling
`runtime.load(...).predict`, as a user would write it (FASTAPI_APP below). p50/p99 latency and
requests/s at 1, 8 and 32 concurrent clients, S=32, and the ratio of our requests/s to the
FastAPI app's in the same run.

    PYTHONPATH=$PWD python benchmarks/serve_load.py [--requests 300] [--rounds 2] [--rows 1] [--artifact mlp.onnx]

Without --artifact it exports an MLP of illia Linear layers to a temporary ONNX file: `small`
(6-8-3, where the server's own overhead dominates; default) or `w1` (784-512-512-10). Each
client sends its requests back to back with its own seed (fresh, seeds differ per client so
nothing is merged). Both servers run at the same time (idle while the other is measured) and
the measurements alternate, `--rounds` times per setting; the best round of each counts (the
machine is shared, so the best round is the least disturbed one). A last pass at 32 clients
with one shared seed shows our batcher merging requests (the FastAPI app cannot).
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


#: The user's own app: what the issue measured against (S from the request, fresh, a seed per request).
FASTAPI_APP = """
import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from illia_export import runtime

predictor = runtime.load(os.environ["ARTIFACT"], warmup=True)
app = FastAPI()


class Request(BaseModel):
    inputs: list[list[float]]
    num_samples: int = 32
    seed: int | None = None


@app.post("/predict")
def predict(req: Request):
    x = np.asarray(req.inputs, dtype=np.float32)
    pred = predictor.predict(x, num_samples=req.num_samples, seed=req.seed)
    out = {name: value.tolist() for name, value in pred.summary_arrays().items()}
    return {"seed": pred.seed, "outputs": out}


@app.get("/health")
def health():
    return {"ok": True}
"""


procs: list[subprocess.Popen] = []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(cmd: list[str], port: int, ready_path: str, env: dict[str, str] | None = None, cwd: str | None = None):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    try:
        procs.append(proc)
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1):
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
            params = json.loads(data).get("parameters")
            seen.append(params["batch_requests"] if params else 1)
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
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency level and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurements per setting (best counts)")
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--clients", default="1,8,32", help="concurrency levels")
    args = ap.parse_args()

    from illia_export.runtime import load

    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact
        if artifact is None:
            artifact = Path(tmp) / f"{args.model}.onnx"
            export_mlp(artifact, MODELS[args.model])
        artifact = artifact.resolve()
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

        def ours_payload(seed: int) -> bytes:
            return json.dumps({
                "inputs": [{"name": spec.name, "shape": shape, "datatype": "FP32", "data": x.reshape(-1).tolist()}],
                "parameters": {"num_samples": args.samples, "seed": seed},
            }).encode()

        def fastapi_payload(seed: int) -> bytes:
            return json.dumps({"inputs": x.reshape(len(x), -1).tolist(), "num_samples": args.samples, "seed": seed}).encode()

        (Path(tmp) / "user_app.py").write_text(FASTAPI_APP)
        port, fport = free_port(), free_port()
        url = f"http://127.0.0.1:{port}/v2/models/{artifact.stem}/infer"
        furl = f"http://127.0.0.1:{fport}/predict"
        ours_cmd = [sys.executable, "-m", "illia_export.cli", "serve", str(artifact), "--port", str(port),
                    "--samples", str(args.samples)]
        fastapi_cmd = [sys.executable, "-m", "uvicorn", "user_app:app", "--port", str(fport)]
        print(f"machine: {os.cpu_count()} CPUs; artifact {artifact.name}; S={args.samples}, {args.rows} row(s) "
              f"per request; in-process predict + summaries: {base:.2f} ms (median of 50); both servers with their "
              "default logging (ours: one line per request; uvicorn: its access log), stderr to /dev/null")
        print(f"{'server':>8} {'clients':>7} {'seed':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
              f"{'p50/predict':>11} {'merged':>7} {'CPU ms/req':>9}")
        levels = [int(c) for c in args.clients.split(",")]
        ratios = {}
        with server(ours_cmd, port, "/v2/health/ready"), \
                server(fastapi_cmd, fport, "/health", env={"ARTIFACT": str(artifact)}, cwd=tmp):
            run_clients(url, [ours_payload(0)], 1, 30)  # warm both servers
            run_clients(furl, [fastapi_payload(0)], 1, 30)
            for clients in levels:
                best: dict[str, tuple] = {}
                for _ in range(args.rounds):
                    for label, target, make, proc in (("ours", url, ours_payload, procs[0]),
                                                      ("fastapi", furl, fastapi_payload, procs[1])):
                        cpu0 = cpu_seconds(proc.pid)
                        lat, wall, merged = run_clients(target, [make(c) for c in range(clients)], clients, args.requests)
                        cpu = (cpu_seconds(proc.pid) - cpu0) / len(lat) * 1000
                        rate = len(lat) / wall
                        if label not in best or rate > best[label][0]:
                            best[label] = (rate, lat, merged, min(cpu, best.get(label, (0, 0, 0, cpu))[3]))
                for label in ("ours", "fastapi"):
                    rate, lat, merged, cpu = best[label]
                    p50 = pct(lat, 0.5)
                    print(f"{label:>8} {clients:>7} {'own':>7} {len(lat):>8} {p50:>8.2f} {pct(lat, 0.99):>8.2f} "
                          f"{rate:>8.1f} {p50 / base:>11.2f} {statistics.mean(merged):>7.2f} {cpu:>9.2f}")
                ratios[clients] = (best["ours"][0] / best["fastapi"][0], best["fastapi"][3] / best["ours"][3])
            lat, wall, merged = run_clients(url, [ours_payload(0)] * 32, 32, args.requests)
            print(f"{'ours':>8} {32:>7} {'shared':>7} {len(lat):>8} {pct(lat, 0.5):>8.2f} {pct(lat, 0.99):>8.2f} "
                  f"{len(lat) / wall:>8.1f} {pct(lat, 0.5) / base:>11.2f} {statistics.mean(merged):>7.2f}")
        print("merged: mean number of requests that shared each request's predict call")
        print("CPU ms/req: server process CPU time per request (best round), less disturbed by other load than req/s")
        print("ours / FastAPI app, requests/s: " + ", ".join(f"{c} clients {r[0]:.2f}x" for c, r in ratios.items()))
        print("ours / FastAPI app, requests per server CPU second: "
              + ", ".join(f"{c} clients {r[1]:.2f}x" for c, r in ratios.items()))


if __name__ == "__main__":
    main()
