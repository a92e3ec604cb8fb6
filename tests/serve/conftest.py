"""Small artifacts and a real `illia-export serve` subprocess for the serving tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import illia_export  # noqa: E402
from tests.runtime.conftest import MLP, DropoutNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
from tests.session_cache import build_once  # noqa: E402


@pytest.fixture(scope="session")
def serve_artifacts(tmp_path_factory) -> dict[str, Path]:
    """A Bayesian MLP (weight noise only; has a local variant) and an MC-dropout net (per-example
    noise), both 6 -> 3 classifiers exported to ONNX."""
    def build(root: Path):
        torch.manual_seed(0)
        out = {"mlp": root / "mlp.onnx", "drop": root / "drop.onnx"}
        illia_export.export(MLP(), torch.zeros(2, 6), out["mlp"], format="onnx", task="classification")
        illia_export.export(
            DropoutNet(), torch.zeros(2, 6), out["drop"], format="onnx", mc_dropout=True, task="classification"
        )
        return out

    return build_once(tmp_path_factory, "serve-artifacts", build)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, raw: bytes | None = None, timeout: float = 60.0,
         headers: dict[str, str] | None = None):
    """(status, parsed JSON) of one request; JSON is parsed strictly (no NaN/Infinity)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    return status, json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str):
    raise AssertionError(f"response is not strict JSON: it holds {name}")


class Server:
    """A running `illia-export serve` subprocess."""

    def __init__(self, proc: subprocess.Popen, port: int, name: str, log: Path) -> None:
        self.proc, self.port, self.name, self.log = proc, port, name, log
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def infer(self, body=None, raw: bytes | None = None, name: str | None = None):
        return http("POST", self.url(f"/v2/models/{name or self.name}/infer"), body=body, raw=raw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_server(artifact: Path, tmp_dir: Path, *args: str, name: str | None = None):
    """Start `illia-export serve` on a free port, wait until /v2/health/ready answers, and
    always stop it (SIGTERM, then SIGKILL) on the way out."""
    port = free_port()
    log = tmp_dir / f"serve_{port}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "illia_export.cli", "serve", str(artifact), "--port", str(port), "--threads", "1", *args]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    server = Server(proc, port, name or artifact.stem, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode} before ready:\n{server.log_text()[-3000:]}")
            try:
                if http("GET", server.url("/v2/health/ready"), timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after 90 s:\n{server.log_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
