"""`illia-export serve` against `illia-export predict` for the same seed, and graceful
shutdown: SIGTERM/SIGINT stop accepting, finish in-flight requests, exit 0."""

from __future__ import annotations

import json
import signal
import socket
import time

import numpy as np
import pytest

pytest.importorskip("httptools")

from illia_export.cli import main  # noqa: E402
from illia_export.runtime import load  # noqa: E402
from tests.serve.conftest import running_server  # noqa: E402
from tests.serve.test_server import assert_same_as_predict, body, outputs, rows_x  # noqa: E402


def _cli_predict(artifact, x_path, out, *extra) -> dict:
    assert main(["predict", str(artifact), "--input", str(x_path), "--output", str(out), "--no-progress", *extra]) == 0
    return json.loads(out.read_text())


def _assert_same_as_cli(resp, cli, names=("mean", "std", "probabilities", "predicted_class", "mutual_information")):
    got = outputs(resp)
    for name in names:
        np.testing.assert_allclose(got[name], np.asarray(cli[name]), rtol=1e-5, atol=1e-6, err_msg=name)


def test_server_answer_equals_illia_export_predict_with_the_returned_seed(serve_artifacts, tmp_path, capsys):
    """`illia-export predict --seed <the response's seed>` on the request's rows reproduces the
    server's answer: for weight noise (fresh, with the server's --seed default), for `local` and
    for MC-dropout masks, whose per-example noise both key by the row index."""
    x = rows_x(5, 3)
    np.save(tmp_path / "x.npy", x)
    with running_server(serve_artifacts["mlp"], tmp_path, "--seed", "77", "--samples", "24") as server:
        status, resp = server.infer(body(x))
        assert status == 200 and resp["parameters"]["seed"] == 77 and resp["parameters"]["num_samples"] == 24
        status_local, resp_local = server.infer(body(x, strategy="local", seed=5))
        assert status_local == 200 and resp_local["parameters"]["row_keyed"] is True
    with running_server(serve_artifacts["drop"], tmp_path, "--samples", "24") as server:
        status_drop, resp_drop = server.infer(body(x, seed=9))
        assert status_drop == 200 and resp_drop["parameters"]["row_keyed"] is True
    _assert_same_as_cli(resp, _cli_predict(serve_artifacts["mlp"], tmp_path / "x.npy", tmp_path / "a.json",
                                           "--samples", "24", "--seed", "77"))
    _assert_same_as_cli(resp_local, _cli_predict(serve_artifacts["mlp"], tmp_path / "x.npy", tmp_path / "b.json",
                                                 "--samples", "24", "--seed", "5", "--strategy", "local"))
    _assert_same_as_cli(resp_drop, _cli_predict(serve_artifacts["drop"], tmp_path / "x.npy", tmp_path / "c.json",
                                                "--samples", "24", "--seed", "9", "--batch-size", "2"))
    capsys.readouterr()
    predictor = load(serve_artifacts["mlp"], threads=1)
    assert_same_as_predict(
        resp_local, predictor.predict(x, num_samples=24, seed=5, strategy="local", row_ids=np.arange(5))
    )


def _wait_until_refused(port: int) -> None:
    """Poll until the listening socket is closed (a connection is refused)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError("the server still accepts connections 60 s after SIGTERM")


def test_sigterm_finishes_the_in_flight_request_refuses_new_ones_and_exits_0(serve_artifacts, tmp_path):
    """Event-driven: the request is in flight because its body is half sent (the server holds
    it, whatever the timing); SIGTERM closes the listening socket; the rest of the body then
    arrives and the request is answered in full before the server exits 0."""
    x = rows_x(2, 8)
    with running_server(serve_artifacts["drop"], tmp_path, "--samples", "8") as server:
        payload = json.dumps(body(x, seed=21)).encode()
        head = (f"POST /v2/models/{server.name}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall(head + payload[:10])
        # A request on a later connection is answered: the server accepted connections in order
        # and read our head (already in its socket) on the way, so ours is in flight.
        assert server.infer(body(x, seed=22))[0] == 200
        server.proc.send_signal(signal.SIGTERM)
        _wait_until_refused(server.port)
        sock.sendall(payload[10:])
        answer = _read_response(sock)
        sock.close()
        assert server.proc.wait(timeout=60) == 0, server.log_text()[-2000:]
    status, resp = answer
    assert status == 200, resp
    predictor = load(serve_artifacts["drop"], threads=1)
    assert_same_as_predict(resp, predictor.predict(x, num_samples=8, seed=21, row_ids=np.arange(2)))
    assert "stopped after 2 requests" in server.log_text()


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 response read from a raw socket (to EOF)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_sigint_on_an_idle_server_exits_0(serve_artifacts, tmp_path):
    with running_server(serve_artifacts["mlp"], tmp_path) as server:
        assert server.infer(body(rows_x(1, 0), seed=1))[0] == 200
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=60) == 0, server.log_text()[-2000:]
