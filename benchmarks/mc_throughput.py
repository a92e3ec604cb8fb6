"""Monte Carlo throughput of the illia-export runtime on the reference workloads W1-W4.

For each workload, batch size (``--batches``, default 1, 64 and 256), backend (onnxruntime,
TorchScript, ``.pt2``) and strategy (fresh, bank, local where the artifact has a local variant),
times ``Predictor.predict(x, num_samples=S, seed=0)`` and compares it, in the same run and at
the same thread count, with:

* ``naive``: the eager loop a user writes today: S forwards of the stochastic torch model, each
  drawing all weights (or dropout masks) anew;
* ``vmap``: ``torch.func.vmap`` over S weight sets (``mu + softplus(rho) * randn``, the plain
  network through ``functional_call``), or over S dropout draws (``randomness="different"``);
* ``det``: the deterministic network (same architecture, plain ``torch.nn`` layers) run once on
  a batch of S*B inputs, eager, under ``torch.inference_mode``;
* ``det ORT``: the same deterministic network exported to ONNX, one onnxruntime call on S*B
  inputs: the floor a vectorized artifact is measured against;
* ``randn``: ``torch.randn(S, |W|)``, the cost of the weight noise alone;
* ``v2``: the compiled ``illia-noise-v2`` kernel writing the same S*|W| normals.

Workloads: W1 MLP 784-512-512-10 (S=32), W2 CNN (two convolutions, S=32), W3 LSTM (S=16), W4
MC-dropout CNN (W2's plain network with dropout after each convolution, exported with
``mc_dropout=True``, S=32). ``.pt2 pc`` rows run a per-call ``.pt2`` artifact (one graph call per
sample, the eager loop's structure).

Every strategy runs with the runtime's default generator for new exports
(``illia_export.runtime.noise.DEFAULT_GENERATOR``, ``illia-noise-v2``); ``fresh/v1`` is
``fresh`` with the old generator (``illia-noise-v1``), which artifacts whose manifest names it
still get.

Columns: ``ms`` (median of the repeats), ``best`` (fastest repeat), ``cpu ms`` (median CPU time
of the process, all threads), ``MC/s`` (S*B sample predictions per second, from the median),
``x naive`` (speed-up over the naive loop), ``/det`` (time over the deterministic S*B torch
forward), ``/ORT`` (over the deterministic S*B onnxruntime forward) and, for ``fresh``,
``/(r+d)`` (time over randn + det). The columns after ``|`` are the same ratios from CPU times,
steadier when other jobs compete for the cores. Strategy ``local`` runs with seed 0 (its
pre-activation noise is kept between calls, like a bank); ``local*`` with ``seed=None`` (noise
drawn on every call).

Usage::

    python benchmarks/mc_throughput.py --threads 1         # W1-W4 at B=1/64/256, ~10 min on 2 cores
    python benchmarks/mc_throughput.py --quick             # W1 only, B=64, fewer repeats
    python benchmarks/mc_throughput.py --workloads W2,W4 --batches 64 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import illia_export  # noqa: E402
from illia_export.nn.torch import LSTM, Conv2d, Linear  # noqa: E402
from illia_export.runtime import load  # noqa: E402
from illia_export.runtime import noise as noise_mod  # noqa: E402


# ----------------------------------------------------------------------------- workloads
class MLP(nn.Module):
    """W1: Linear 784-512-512-10, ReLU."""

    def __init__(self, bayesian: bool = True) -> None:
        super().__init__()
        lin = Linear if bayesian else nn.Linear
        self.fc1, self.fc2, self.fc3 = lin(784, 512), lin(512, 512), lin(512, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    """W2: Conv(1->16,3) ReLU MaxPool2, Conv(16->32,3) ReLU MaxPool2, Linear(800->10)."""

    def __init__(self, bayesian: bool = True) -> None:
        super().__init__()
        conv, lin = (Conv2d, Linear) if bayesian else (nn.Conv2d, nn.Linear)
        self.conv1, self.conv2, self.fc = conv(1, 16, 3), conv(16, 32, 3), lin(800, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class DropoutCNN(nn.Module):
    """W4: W2's plain network with dropout (p=0.2) after each convolution's ReLU (MC dropout)."""

    def __init__(self, bayesian: bool = True) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3), nn.Linear(800, 10)
        self.drop = nn.Dropout(0.2) if bayesian else nn.Identity()

    def forward(self, x):
        x = torch.max_pool2d(self.drop(torch.relu(self.conv1(x))), 2)
        x = torch.max_pool2d(self.drop(torch.relu(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


class SeqModel(nn.Module):
    """W3: illia LSTM(num_embeddings=1000, embeddings_dim=64, hidden 128, output 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = LSTM(1000, 64, 128, 5)

    def forward(self, x):
        return self.lstm(x)[0]


class PlainSeq(nn.Module):
    """W3's deterministic twin: nn.Embedding -> nn.LSTM -> nn.Linear on the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lstm, self.head = (
            nn.Embedding(1000, 64),
            nn.LSTM(64, 128, batch_first=True),
            nn.Linear(128, 5),
        )

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return self.head(out[:, -1])


def workloads(quick: bool) -> list[dict[str, Any]]:
    w = [
        dict(name="W1 MLP", model=MLP, det=lambda: MLP(False), x=lambda b: torch.randn(b, 784), S=32),
        dict(name="W2 CNN", model=CNN, det=lambda: CNN(False), x=lambda b: torch.randn(b, 1, 28, 28), S=32),
        dict(name="W3 LSTM", model=SeqModel, det=PlainSeq, x=lambda b: torch.randint(0, 1000, (b, 32)), S=16),
        dict(
            name="W4 MC-dropout CNN",
            model=DropoutCNN,
            det=lambda: DropoutCNN(False),
            x=lambda b: torch.randn(b, 1, 28, 28),
            S=32,
            mc_dropout=True,
        ),
    ]
    return w[:1] if quick else w


# -------------------------------------------------------------------------------- timing
def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Wall-clock median and best, and the median CPU time of this process (all threads).

    On a machine shared with other jobs, wall time includes waiting for a core; CPU time does
    not (but includes threads spinning while they wait for work).
    """
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "median_ms": 1e3 * statistics.median(times),
        "best_ms": 1e3 * min(times),
        "cpu_ms": 1e3 * statistics.median(cpu),
    }


def num_weights(model: nn.Module) -> int:
    """|W|: scalar weights sampled per forward (the size of every distribution's mu)."""
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith(".mu"))


#: Artifacts timed per workload: (label, format, samples mode, ``load`` options).
ARTIFACTS = {
    "onnx": [("onnxruntime", "onnx", "vectorized")],
    "torchscript": [("torchscript", "torchscript", "vectorized")],
    "pt2": [("pt2", "pt2", "vectorized"), ("pt2 pc", "pt2", "per-call")],
}
_SUFFIX = {"onnx": "onnx", "torchscript": "pt", "pt2": "pt2"}


def export_artifacts(
    spec: dict[str, Any], model: nn.Module, tmp: Path, backends: list[str]
) -> dict[str, Any]:
    """Export `model` once per timed artifact: ``{label: path or error text}``."""
    out: dict[str, Any] = {}
    stem = spec["name"].split()[0]
    for backend in backends:
        for label, fmt, samples in ARTIFACTS.get(backend, []):
            if spec.get("mc_dropout") and fmt == "torchscript":
                continue  # MC dropout needs the torch.export capture
            path = tmp / f"{stem}-{label.replace(' ', '_')}.{_SUFFIX[fmt]}"
            kwargs = {"mc_dropout": True} if spec.get("mc_dropout") else {}
            try:
                illia_export.export(
                    model,
                    spec["x"](2),
                    path,
                    format=fmt,
                    samples=samples,
                    task="classification",
                    validate=False,
                    **kwargs,
                )
                out[label] = path
            except Exception as exc:  # report and go on with the other formats/workloads
                out[label] = f"{label} export failed: {type(exc).__name__}: {exc}"
    return out


def det_ort_session(det: nn.Module, x: torch.Tensor, tmp: Path, threads: int | None):
    """The deterministic network as ONNX (legacy exporter, dynamic batch) in onnxruntime."""
    import warnings

    import onnxruntime as ort

    path = tmp / f"det-{id(det)}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(det, (x,), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def vmap_contender(model: nn.Module, det: nn.Module, x: torch.Tensor, S: int, mc_dropout: bool):
    """``torch.func.vmap`` over S samples, or None where the workload has no such form (W3)."""
    from torch.func import functional_call, vmap

    if mc_dropout:
        train = model.train()

        def run():
            out = vmap(lambda _: train(x), randomness="different")(torch.arange(S))
            return out

        return run
    dists = {n[: -len(".mu")]: m for n, m in model.named_parameters() if n.endswith(".mu")}
    names = {}
    for name, _ in det.named_parameters():
        layer, kind = name.rsplit(".", 1)
        key = f"{layer}.{'weights' if kind == 'weight' else 'bias'}_distribution"
        if key not in dists:
            return None
        names[name] = key
    params = dict(model.named_parameters())

    def run():
        sampled = {
            n: params[k + ".mu"]
            + torch.nn.functional.softplus(params[k + ".rho"]) * torch.randn(S, *params[k + ".mu"].shape)
            for n, k in names.items()
        }
        return vmap(lambda p: functional_call(det, p, (x,)))(sampled)

    return run


def bench_workload(
    spec: dict[str, Any],
    batch: int,
    repeats: int,
    model: nn.Module,
    det: nn.Module,
    artifacts: dict[str, Any],
    tmp: Path,
    threads: int | None,
) -> dict[str, Any]:
    torch.manual_seed(0)
    B, S = batch, spec["S"]
    x = spec["x"](B)
    xs = spec["x"](S * B)
    W = num_weights(model)
    res: dict[str, Any] = {"workload": spec["name"], "batch": B, "samples": S, "num_weights": W, "rows": []}
    mc_dropout = bool(spec.get("mc_dropout"))

    with torch.inference_mode():
        if mc_dropout:
            model.train()
        res["naive"] = timeit(lambda: torch.stack([model(x) for _ in range(S)]), repeats)
        model.eval()
        res["det"] = timeit(lambda: det(xs), repeats)
        res["randn"] = timeit(lambda: torch.randn(S, max(W, 1)), repeats)
        vm = vmap_contender(model, det, x, S, mc_dropout)
        if vm is not None:
            res["vmap"] = timeit(vm, repeats)
        model.eval()
    if noise_mod.kernel_available() and W:
        buf = torch.empty(S, W)
        res["v2"] = timeit(lambda: noise_mod.fill_v2(0, 0, (W,), 0, S, buf), repeats)
    session = det_ort_session(det, spec["x"](2), tmp, threads)
    xs_np = xs.numpy()
    res["det_ort"] = timeit(lambda: session.run(None, {"x": xs_np}), repeats)

    x_np = x.numpy()
    v1, v2 = noise_mod.GENERATOR_V1, noise_mod.DEFAULT_GENERATOR
    for label, path in artifacts.items():
        if not isinstance(path, Path):
            res.setdefault("errors", []).append(path)
            continue
        opts: dict[str, Any] = {"threads": threads} if threads else {}
        predictor = load(path, **opts)
        # (strategy, seed): "local" with a fixed seed reuses its pre-activation noise between
        # calls; "local*" (seed=None) draws it on every call.
        runs = [("fresh", 0, v2), ("bank", 0, v2)]
        if label == "onnxruntime":
            runs.insert(1, ("fresh/v1", 0, v1))
        if predictor.manifest.local and label in ("onnxruntime", "torchscript"):
            runs += [("local", 0, v2), ("local*", None, v2)]
        for strat, seed, gen in runs:
            strategy = strat.split("/")[0].rstrip("*")

            # TorchScript's profiling executor specializes the graph over the first calls.
            def call(p=predictor, sd=seed, st=strategy, g=gen):
                return p.predict(x_np, num_samples=S, seed=sd, strategy=st, generator=g)

            t = timeit(call, repeats, warmup=3)
            res["rows"].append({"backend": label, "strategy": strat, **t})
    return res


def add_ratios(res: dict[str, Any]) -> None:
    """Ratios from wall-clock medians, and the same from CPU-time medians (``*_cpu``), which are
    steadier on a machine shared with other jobs."""
    S, B = res["samples"], res["batch"]
    for row in res["rows"]:
        row["mc_per_s"] = S * B / (row["median_ms"] / 1e3)
        for suffix, key in (("", "median_ms"), ("_cpu", "cpu_ms")):
            ms, naive, det, randn = row[key], res["naive"][key], res["det"][key], res["randn"][key]
            row["speedup_vs_naive" + suffix] = naive / ms
            row["over_det" + suffix] = ms / det
            row["over_det_ort" + suffix] = ms / res["det_ort"][key]
            fresh = row["strategy"].startswith("fresh")
            row["over_randn_plus_det" + suffix] = ms / (randn + det) if fresh else None


def _t(t: dict[str, float]) -> str:
    return f"{t['median_ms']:.1f} / {t['best_ms']:.1f} / {t['cpu_ms']:.1f}"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _contenders(res: dict[str, Any]) -> str:
    """The contenders as ratios to the deterministic ORT forward (CPU time), one line."""
    ref = res["det_ort"]["cpu_ms"]
    parts = [f"det ORT S*B {_t(res['det_ort'])} ms"]
    for key, label in (("naive", "eager loop"), ("vmap", "vmap"), ("det", "det torch")):
        if key in res:
            parts.append(f"{label} {res[key]['cpu_ms'] / ref:.2f}x")
    return "contenders (cpu time / det ORT): " + ", ".join(parts)


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        S, B = res["samples"], res["batch"]
        lines.append(
            f"\n{res['workload']}  (B={B}, S={S}, |W|={res['num_weights']:,})   naive {_t(res['naive'])}, "
            f"det S*B {_t(res['det'])}, randn S*|W| {_t(res['randn'])}"
            + (f", v2 S*|W| {_t(res['v2'])}" if "v2" in res else "")
            + "   [median / best / cpu ms]"
        )
        lines.append("  " + _contenders(res))
        lines.append(
            f"  {'backend':<12} {'strategy':<8} {'ms':>8} {'best':>8} {'cpu ms':>8} {'MC/s':>10} "
            f"{'x naive':>8} {'/det':>6} {'/ORT':>6} {'/(r+d)':>7} | {'cpu: x naive':>12} {'/det':>6} {'/ORT':>6} "
            f"{'/(r+d)':>7}"
        )
        for err in res.get("errors", []):
            lines.append(f"  ! {err.splitlines()[0][:200]}")
        for r in res["rows"]:
            lines.append(
                f"  {r['backend']:<12} {r['strategy']:<8} {r['median_ms']:>8.1f} {r['best_ms']:>8.1f} "
                f"{r['cpu_ms']:>8.1f} {r['mc_per_s']:>10,.0f} {r['speedup_vs_naive']:>8.2f} {r['over_det']:>6.2f} "
                f"{r['over_det_ort']:>6.2f} {_r(r['over_randn_plus_det']):>7} | {r['speedup_vs_naive_cpu']:>12.2f} "
                f"{r['over_det_cpu']:>6.2f} {r['over_det_ort_cpu']:>6.2f} {_r(r['over_randn_plus_det_cpu']):>7}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="W1 only, 3 repeats")
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per measurement (default 7, quick 3)"
    )
    ap.add_argument("--backends", default="onnx,torchscript,pt2", help="comma list: onnx, torchscript, pt2")
    ap.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,64,256; quick 64)")
    ap.add_argument("--workloads", default=None, help="comma list of workload tags, e.g. W1,W4 (default all)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and onnxruntime intra-op threads (default: all cores)",
    )
    ap.add_argument(
        "--no-keep-memory",
        action="store_true",
        help="leave glibc malloc alone (default: keep_process_memory() at start, for every row and "
        "baseline alike: what TorchScript's keep_memory=True option does)",
    )
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument(
        "--small-batch", action="store_true",
        help="also run the small-batch section (benchmarks/small_batch.py: W1 at B=1/64/256 per strategy)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_keep_memory:
        from illia_export.runtime.backends.torchscript import keep_process_memory

        keep_process_memory()
    repeats = args.repeats or (3 if args.quick else 7)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    batches = [int(b) for b in (args.batches or ("64" if args.quick else "1,64,256")).split(",") if b.strip()]
    chosen = workloads(args.quick)
    if args.workloads:
        tags = {w.strip().upper() for w in args.workloads.split(",")}
        chosen = [w for w in workloads(False) if w["name"].split()[0] in tags]
    threads = args.threads
    print(
        f"threads: {threads or 'all cores'} (torch {torch.get_num_threads()}, onnxruntime {threads or 'default'})"
    )
    results = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for spec in chosen:
            torch.manual_seed(0)
            model, det = spec["model"]().eval(), spec["det"]().eval()
            artifacts = export_artifacts(spec, model, Path(tmp), backends)
            for batch in batches:
                res = bench_workload(spec, batch, repeats, model, det, artifacts, Path(tmp), threads)
                add_ratios(res)
                results.append(res)
                print(table([res]), flush=True)
        if args.small_batch:
            from benchmarks import small_batch

            small = small_batch.run(Path(tmp), threads or 1, repeats)
            print("\n" + small_batch.table(small), flush=True)
            results.append({"workload": "small-batch W1", **small})
    meta = {
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_end": os.getloadavg(),
        "repeats": repeats,
        "threads": threads,
        "batches": batches,
        "keep_process_memory": not args.no_keep_memory,
        "total_s": time.perf_counter() - t_start,
    }
    print(
        f"\n(repeats={repeats}, torch threads={meta['torch_threads']}, load average at end {meta['loadavg_end'][0]:.1f}, "
        f"total {meta['total_s']:.0f} s)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
