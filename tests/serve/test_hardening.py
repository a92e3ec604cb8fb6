"""Adversarial clients against a real `illia-export serve` (issue #22 item 3): raw sockets for
slow or lying bodies and idle connections, urllib for the rest. Timeouts are set small on the
server; the tests assert statuses and closed connections, never how fast anything was."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

pytest.importorskip("httptools")

from tests.serve.conftest import http, running_server  # noqa: E402
from tests.serve.test_server import body, rows_x  # noqa: E402

GOOD = body(rows_x(2, 3), seed=5)


@pytest.fixture(scope="module")
def strict_server(serve_artifacts, tmp_path_factory):
    """Small limits: 1 MiB bodies, 0.5 s for headers and bodies, 0.5 s idle."""
    tmp = tmp_path_factory.mktemp("strict")
    args = ["--max-body-mb", "1", "--header-timeout", "0.5", "--body-timeout", "0.5", "--idle-timeout", "0.5",
            "--log-requests", "one-line"]
    with running_server(serve_artifacts["mlp"], tmp, *args) as server:
        yield server


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout, 15 s,
    30x the server's, fails the test: the server never closed it)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _status_and_error(data: bytes) -> tuple[int, dict]:
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def _infer_head(server, length: int | str, extra: str = "") -> bytes:
    return (f"POST /v2/models/{server.name}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def test_a_body_over_the_limit_is_413_without_being_read(strict_server):
    """A 100 MB Content-Length: 413 from the head alone; the server closes the connection
    (it never waits for, or buffers, the 100 MB)."""
    sock = _connect(strict_server)
    sock.sendall(_infer_head(strict_server, 100_000_000) + b'{"inputs": [' + b"0.0, " * 1000)
    status, resp = _status_and_error(_read_all(sock))
    assert status == 413 and "exceeds the limit of 1048576 bytes" in resp["error"], resp
    assert http("POST", strict_server.url(f"/v2/models/{strict_server.name}/infer"), body=GOOD)[0] == 200


def test_a_chunked_body_growing_over_the_limit_is_413(strict_server):
    sock = _connect(strict_server)
    head = (f"POST /v2/models/{strict_server.name}/infer HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"0" * 65536
    sock.sendall(head)
    try:
        for _ in range(40):  # 2.5 MiB in 64 KiB chunks, over the 1 MiB limit
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and stopped reading
    status, resp = _status_and_error(_read_all(sock))
    assert status == 413 and "exceeds the limit" in resp["error"], resp


def test_content_length_larger_than_the_body_times_out_with_408(strict_server):
    sock = _connect(strict_server)
    sock.sendall(_infer_head(strict_server, 5000) + json.dumps(GOOD).encode()[:100])
    status, resp = _status_and_error(_read_all(sock))
    assert status == 408 and "request body not complete" in resp["error"], resp


def test_a_body_trickling_at_one_byte_per_step_is_cut_off_with_408(strict_server):
    """The body never completes (10 000 bytes announced, one sent per step): the body deadline
    closes the connection, however slowly or quickly the bytes come."""
    import select

    sock = _connect(strict_server)
    sock.sendall(_infer_head(strict_server, 10_000))
    answered = b""
    for _ in range(10_000):
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            answered = _read_all(sock)
            break
        try:
            sock.sendall(b" ")
        except (BrokenPipeError, ConnectionResetError):
            break
    status, resp = _status_and_error(answered)
    assert status == 408, resp


def test_partial_headers_time_out_with_408_and_idle_connections_are_closed(strict_server):
    partial = _connect(strict_server)
    partial.sendall(f"POST /v2/models/{strict_server.name}/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
    status, resp = _status_and_error(_read_all(partial))
    assert status == 408 and "headers not complete" in resp["error"], resp
    idle = _connect(strict_server)
    assert _read_all(idle) == b""  # closed without a word: nothing was asked


def test_invalid_content_length_and_garbage_are_400_with_the_error_body(strict_server):
    sock = _connect(strict_server)
    sock.sendall(_infer_head(strict_server, "12abc"))
    status, resp = _status_and_error(_read_all(sock))
    assert status == 400 and set(resp) == {"error"}, resp
    sock = _connect(strict_server)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")  # a TLS hello
    status, resp = _status_and_error(_read_all(sock))
    assert status == 400 and "malformed HTTP request" in resp["error"], resp


@pytest.mark.parametrize("method, path, status, message", [
    ("POST", "/v2/repository/models/{m}/unload", 404, "repository API (load/unload) is not served"),
    ("POST", "/v2/repository/models/{m}/load", 404, "not served"),
    ("POST", "/v2/repository/index", 404, "not served"),
    ("POST", "/v1/models/{m}:predict", 404, "the v1 protocol is not served"),
    ("GET", "/metrics", 404, "no such route"),
    ("GET", "/docs", 404, "no such route"),
    ("POST", "/v2/models/{m}/versions/1/infer", 404, "no model versions"),
    ("GET", "/v2/models/{m}/infer", 405, "GET is not allowed"),
    ("DELETE", "/v2/models/{m}", 405, "not allowed"),
])
def test_only_documented_routes_answer_and_the_model_stays_up(strict_server, method, path, status, message):
    url = strict_server.url(path.format(m=strict_server.name))
    got, resp = http(method, url, body=GOOD)
    assert got == status and message in resp["error"] and set(resp) == {"error"}, resp
    assert http("GET", strict_server.url("/v2/health/ready")) == (200, {"ready": True})
    assert http("POST", strict_server.url(f"/v2/models/{strict_server.name}/infer"), body=GOOD)[0] == 200


def _binary_request(server, header: str | None, json_part: dict, raw: bytes) -> tuple[int, dict]:
    payload = json.dumps(json_part).encode()
    headers = {"content-type": "application/octet-stream"}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    return http("POST", server.url(f"/v2/models/{server.name}/infer"), raw=payload + raw, headers=headers)


def _binary_input(size: int, **extra) -> dict:
    item = {"name": "input", "shape": [2, 6], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    item.update(extra)
    return {"inputs": [item], "parameters": {"seed": 1}}


X_RAW = rows_x(2, 4).astype("<f4").tobytes()  # 48 bytes


@pytest.mark.parametrize("case, header, doc, raw, message", [
    ("header not a number", "abc", _binary_input(48), X_RAW, "must be a non-negative integer"),
    ("header past the body", "999999", _binary_input(48), X_RAW, "larger than the body"),
    ("size off by one", None, _binary_input(47), X_RAW, "needs 48 bytes, binary_data_size is 47"),
    ("size past the data", None, _binary_input(96), X_RAW, "runs past the binary data"),
    ("trailing bytes", None, _binary_input(48), X_RAW + b"\0" * 8, "56 bytes of binary data"),
    ("data and size", None, _binary_input(48, data=[0.0] * 12), X_RAW, "both `data` and binary_data_size"),
    ("negative size", None, _binary_input(-4), X_RAW, "must be a non-negative integer"),
    ("unknown input parameter", None, {"inputs": [{"name": "input", "shape": [2, 6], "datatype": "FP32",
                                                   "parameters": {"shm_region": "x"}}]}, b"", "unknown input parameters"),
    ("BYTES datatype", None, {"inputs": [{"name": "input", "shape": [2, 6], "datatype": "BYTES",
                                          "parameters": {"binary_data_size": 48}}]}, X_RAW, "numeric v2 datatype"),
])
def test_malformed_binary_data_requests_are_400(strict_server, case, header, doc, raw, message):
    if header is None:
        header = str(len(json.dumps(doc).encode()))
    status, resp = _binary_request(strict_server, header, doc, raw)
    assert status == 400 and message in resp["error"], (case, resp)


def test_binary_size_without_the_header_is_400(strict_server):
    status, resp = http("POST", strict_server.url(f"/v2/models/{strict_server.name}/infer"), body=_binary_input(48))
    assert status == 400 and "no Inference-Header-Content-Length" in resp["error"], resp


def test_a_binary_request_gives_the_json_request_s_answer(strict_server):
    doc = _binary_input(48)
    status, resp = _binary_request(strict_server, str(len(json.dumps(doc).encode())), doc, X_RAW)
    assert status == 200, resp
    want = http("POST", strict_server.url(f"/v2/models/{strict_server.name}/infer"),
                body=body(rows_x(2, 4), seed=1))[1]
    assert resp["outputs"] == want["outputs"]


def test_one_log_line_per_request(strict_server):
    before = strict_server.log_text().count(f"POST /v2/models/{strict_server.name}/infer 200")
    for _ in range(3):
        assert http("POST", strict_server.url(f"/v2/models/{strict_server.name}/infer"), body=GOOD)[0] == 200
    after = strict_server.log_text()
    assert after.count(f"POST /v2/models/{strict_server.name}/infer 200") == before + 3


def test_log_requests_off_writes_no_request_lines(serve_artifacts, tmp_path):
    with running_server(serve_artifacts["mlp"], tmp_path, "--log-requests", "off") as server:
        for _ in range(2):
            assert server.infer(GOOD)[0] == 200
        assert server.infer({"inputs": []})[0] == 400
        text = server.log_text()
    assert "/infer" not in text.split("serving", 1)[1].split("\n", 1)[1]


def test_idle_sockets_over_the_connection_limit_do_not_block_a_valid_request(serve_artifacts, tmp_path):
    """40 idle sockets against --max-connections 20 (timeouts long, so only the eviction of the
    longest-idle connections can make room): the valid request is answered."""
    args = ["--max-connections", "20", "--idle-timeout", "300", "--header-timeout", "300"]
    with running_server(serve_artifacts["mlp"], tmp_path, *args) as server:
        idle = [_connect(server) for _ in range(40)]
        try:
            status, resp = server.infer(GOOD)
            assert status == 200, resp
            for s in idle[:21]:  # the oldest 20 made room for the last 20, the oldest next for the request
                assert s.recv(1) == b""
        finally:
            for s in idle:
                s.close()


def test_readiness_is_false_when_the_model_cannot_answer(serve_artifacts):
    """In process: a model that is not ready (or a stopping server) reads not ready, and an
    inference gets 503, not a crash."""
    import asyncio

    from illia_export.serve.app import V2App
    from illia_export.serve.http import Request
    from illia_export.serve.server import ServeOptions, build_model

    model = build_model(ServeOptions(str(serve_artifacts["mlp"]), "mlp", threads=1))
    stopping = {"now": False}
    app = V2App(model, stopping=lambda: stopping["now"])

    def call(method: str, path: str, payload: bytes = b""):
        resp = asyncio.run(app(Request(method, path, {}, payload)))
        return resp.status, json.loads(resp.body)

    assert call("GET", "/v2/health/ready") == (200, {"ready": True})
    stopping["now"] = True
    assert call("GET", "/v2/health/ready") == (503, {"ready": False})
    stopping["now"] = False
    model.ready = False
    assert call("GET", "/v2/health/ready") == (503, {"ready": False})
    assert call("GET", "/v2/models/mlp/ready")[0] == 503
    status, resp = call("POST", "/v2/models/mlp/infer", json.dumps(GOOD).encode())
    assert status == 503 and "not ready" in resp["error"]
    model.ready = True
    status, resp = call("POST", "/v2/models/mlp/infer", json.dumps(GOOD).encode())
    assert status == 200 and np.asarray(resp["outputs"][0]["data"]).size == 6
