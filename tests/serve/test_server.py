"""A real `illia-export serve` (v2 REST) on 127.0.0.1: same numbers as `Predictor.predict`
for the same seed and row ids, with concurrent requests merged; every 4xx; metadata."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("httptools")
pytest.importorskip("orjson")

from illia_export.runtime import load  # noqa: E402
from tests.serve.conftest import http, running_server  # noqa: E402

SEED = 1234
S = 16
#: Rows of the concurrent requests: their sum is --max-batch-size, so the merged call starts as
#: soon as they are all queued (the latency window only bounds the wait).
ROWS = [1, 2, 3, 1, 4, 2, 3, 2]
MAX_SAMPLES = 64


@pytest.fixture(scope="module")
def drop_server(serve_artifacts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drop_server")
    args = ["--max-samples", str(MAX_SAMPLES), "--samples", str(S), "--max-batch-size", str(sum(ROWS)),
            "--max-latency-ms", "300"]
    with running_server(serve_artifacts["drop"], tmp, *args) as server:
        yield server


@pytest.fixture(scope="module")
def drop_predictor(serve_artifacts):
    return load(serve_artifacts["drop"], threads=1)


def rows_x(n: int, salt: int) -> np.ndarray:
    return np.random.default_rng(salt).normal(size=(n, 6)).astype(np.float32)


def body(x: np.ndarray, **parameters):
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}],
        "parameters": parameters,
    }


def outputs(resp: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp["outputs"]}


def assert_same_as_predict(resp: dict, pred) -> None:
    got = outputs(resp)
    want = pred.summary_arrays()
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_concurrent_requests_are_merged_and_match_predict_with_row_ids(drop_server, drop_predictor):
    xs = [rows_x(n, salt) for salt, n in enumerate(ROWS)]
    results: list = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def client(i: int) -> None:
        barrier.wait()
        results[i] = drop_server.infer(body(xs[i], seed=SEED, num_samples=S))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    merged = 0
    for x, (status, resp) in zip(xs, results):
        assert status == 200, resp
        params = resp["parameters"]
        assert params["seed"] == SEED and params["num_samples"] == S and params["row_keyed"] is True
        merged = max(merged, params["batch_requests"])
        # A row's answer is that of its request alone, with row ids 0..n-1, whatever its neighbours.
        alone = drop_predictor.predict(x, num_samples=S, seed=SEED, row_ids=np.arange(len(x)))
        assert_same_as_predict(resp, alone)
    assert merged > 1, "no two concurrent requests were merged into one predict call"


def test_seed_is_drawn_and_returned_and_reproduces(drop_server, drop_predictor):
    x = rows_x(3, 99)
    status, resp = drop_server.infer(body(x))
    assert status == 200
    seed = resp["parameters"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**64 and resp["parameters"]["num_samples"] == S
    assert resp["parameters"]["strategy"] == "fresh" and resp["parameters"]["task"] == "classification"
    assert resp["parameters"]["noise_generator"] == drop_predictor.generator
    assert_same_as_predict(resp, drop_predictor.predict(x, num_samples=S, seed=seed, row_ids=np.arange(3)))
    status2, resp2 = drop_server.infer(body(x))
    assert status2 == 200 and resp2["parameters"]["seed"] != seed  # a new seed per fresh request


def test_bank_requests_share_the_server_bank_seed(drop_server, drop_predictor):
    x = rows_x(2, 5)
    (s1, r1), (s2, r2) = drop_server.infer(body(x, strategy="bank")), drop_server.infer(body(x, strategy="bank"))
    assert s1 == s2 == 200 and r1["parameters"]["seed"] == r2["parameters"]["seed"]
    assert outputs(r1)["mean"].tolist() == outputs(r2)["mean"].tolist()
    bank_seed = r1["parameters"]["seed"]
    alone = drop_predictor.predict(x, num_samples=S, seed=bank_seed, strategy="bank", row_ids=np.arange(2))
    assert_same_as_predict(r1, alone)


def test_id_is_echoed_and_outputs_can_be_selected(drop_server):
    b = body(rows_x(2, 1), seed=3)
    b.update(id="req-42", outputs=[{"name": "predicted_class"}, {"name": "mutual_information"}])
    status, resp = drop_server.infer(b)
    assert status == 200 and resp["id"] == "req-42" and resp["model_name"] == drop_server.name
    assert "model_version" not in resp  # the spec: omitted, not null
    assert [(o["name"], o["datatype"], o["shape"]) for o in resp["outputs"]] == [
        ("predicted_class", "INT64", [2]),
        ("mutual_information", "FP64", [2]),
    ]


def test_non_finite_outputs_are_null_in_strict_json(drop_server):
    # finite float32 inputs whose activations overflow: the summaries hold NaN/inf
    x = np.full((1, 6), 3e38, dtype=np.float32)
    status, resp = drop_server.infer(body(x, seed=0))  # `http` parses strictly: no NaN/Infinity tokens
    assert status == 200, resp
    values = [v for o in resp["outputs"] if o["datatype"].startswith("FP") for v in o["data"]]
    assert None in values


GOOD = body(rows_x(2, 7), seed=11)


def _with(data=None, **changes):
    b = json.loads(json.dumps(GOOD))
    b["inputs"][0].update(changes)
    if data is not None:
        b["inputs"][0]["data"] = data
    return b


BAD_REQUESTS = [
    ("wrong shape", _with(shape=[2, 5], data=[0.0] * 10), 400, r"must have shape [batch, 6] FP32, got [2, 5] (axis 1)"),
    ("shape vs data", _with(shape=[2, 6], data=[0.0] * 11), 400, "shape [2, 6] needs 12 values"),
    ("wrong dtype", _with(datatype="INT64", data=[1] * 12), 400, "got datatype INT64"),
    ("unknown input", _with(name="pixels"), 400, "missing ['input'], unknown ['pixels']"),
    ("no inputs", {"inputs": []}, 400, "non-empty list"),
    ("too many samples", dict(GOOD, parameters={"num_samples": MAX_SAMPLES + 1}), 400, "--max-samples"),
    ("zero samples", dict(GOOD, parameters={"num_samples": 0}), 400, "num_samples (=0) must lie in [1, 64]"),
    ("negative seed", dict(GOOD, parameters={"seed": -1}), 400, "seed (=-1) must lie in [0, 2**64)"),
    ("huge seed", dict(GOOD, parameters={"seed": 2**64}), 400, "[0, 2**64)"),
    ("huge decimal seed", dict(GOOD, parameters={"seed": str(2**64)}), 400, "must lie in [0, 2**64)"),
    ("5000-digit seed", dict(GOOD, parameters={"seed": "7" * 5000}), 400, "(5000 characters)"),
    ("non-ASCII digit seed", dict(GOOD, parameters={"seed": "\u00b2"}), 400, "must be an integer in [0, 2**64)"),
    ("Arabic-Indic digit seed", dict(GOOD, parameters={"seed": "\u0661\u0662"}), 400, "must be an integer"),
    ("binary flag not bool", dict(GOOD, parameters={"binary_data_output": "yes"}), 400, "binary_data_output"),
    ("unknown field", dict(GOOD, model_version="1"), 400, "unknown request fields ['model_version']"),
    ("inputs not a list", {"inputs": {"name": "input"}}, 400, "non-empty list"),
    ("outputs without names", dict(GOOD, outputs=["mean"]), 400, "`outputs` must be a list of objects"),
    ("ragged data", _with(shape=[2, 6], data=[[0.0] * 6, [0.0] * 5]), 400, "not a rectangular array"),
    ("text seed", dict(GOOD, parameters={"seed": "abc"}), 400, "must be an integer in [0, 2**64)"),
    ("no local variant", dict(GOOD, parameters={"strategy": "local"}), 400, "no local-reparameterization variant"),
    ("unknown parameter", dict(GOOD, parameters={"num_sample": 4}), 400, "unknown request parameters ['num_sample']"),
    ("unknown output", dict(GOOD, outputs=[{"name": "median"}]), 400, "requested outputs ['median'] do not exist"),
    ("missing inputs field", {"parameters": {}}, 400, "the request has no `inputs`"),
    ("overflow", _with(datatype="FP64", data=[1e39] + [0.0] * 11), 400, "non-finite values"),
]


@pytest.mark.parametrize("case, request_body, status, message", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_is_a_4xx_naming_the_problem_and_the_next_one_succeeds(drop_server, case, request_body, status, message):
    got, resp = drop_server.infer(request_body)
    assert got == status, resp
    assert message in resp["error"], resp["error"]
    ok, good = drop_server.infer(GOOD)
    assert ok == 200 and good["parameters"]["seed"] == 11


def test_malformed_json_is_400(drop_server):
    status, resp = drop_server.infer(raw=b'{"inputs": [{"name": "input", "shape": [2, 6')
    assert status == 400 and "malformed JSON" in resp["error"] and set(resp) == {"error"}, resp
    status, resp = drop_server.infer(raw=b"[1, 2]")
    assert status == 400 and "must be a JSON object" in resp["error"], resp
    assert drop_server.infer(GOOD)[0] == 200


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}])
def test_json_without_a_json_content_type_is_read_as_json(drop_server, headers):
    """`curl -d '{...}'` sends a form content type: still a v2 JSON request (only the
    binary-data extension's header makes a body binary)."""
    url = drop_server.url(f"/v2/models/{drop_server.name}/infer")
    status, resp = http("POST", url, raw=json.dumps(GOOD).encode(), headers=headers or {"x-no": "type"})
    assert status == 200, resp
    status, resp = http("POST", url, raw=b'{"inputs": [', headers=headers or {"x-no": "type"})
    assert status == 400 and "malformed JSON" in resp["error"], resp


def test_nan_literal_in_the_data_is_400(drop_server):
    # Python-style JSON with a NaN token is not JSON: the strict parser refuses it
    text = json.dumps(_with(shape=[2, 6], data=[0.0] * 12)).replace('"data": [0.0', '"data": [NaN', 1)
    status, resp = drop_server.infer(raw=text.encode())
    assert status == 400 and "malformed JSON" in resp["error"], resp
    assert drop_server.infer(GOOD)[0] == 200


def test_unknown_model_is_404(drop_server):
    status, resp = drop_server.infer(GOOD, name="nope")
    assert status == 404 and "nope" in resp["error"]
    status, resp = http("GET", drop_server.url("/v2/models/nope"))
    assert status == 404 and "nope" in resp["error"]
    assert drop_server.infer(GOOD)[0] == 200


def test_health_and_metadata(drop_server, drop_predictor):
    assert http("GET", drop_server.url("/v2/health/live")) == (200, {"live": True})
    assert http("GET", drop_server.url("/v2/health/ready")) == (200, {"ready": True})
    assert http("GET", drop_server.url(f"/v2/models/{drop_server.name}/ready")) == (
        200, {"name": drop_server.name, "ready": True})
    status, server_meta = http("GET", drop_server.url("/v2"))
    assert status == 200 and server_meta["name"] == "illia-export"
    assert server_meta["extensions"] == ["binary_tensor_data"]  # implemented: see test_triton_client.py
    status, meta = http("GET", drop_server.url(f"/v2/models/{drop_server.name}"))
    assert status == 200 and meta["name"] == drop_server.name and meta["platform"] == "illia-export_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 6]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("mean", "FP32", [-1, 3]), ("std", "FP32", [-1, 3]), ("probabilities", "FP64", [-1, 3]),
        ("predicted_class", "INT64", [-1]), ("predictive_entropy", "FP64", [-1]),
        ("expected_entropy", "FP64", [-1]), ("mutual_information", "FP64", [-1]),
    ]
    meaning = {o["name"]: o["parameters"] for o in meta["outputs"]}
    assert meaning["mean"]["units"] == meaning["std"]["units"] == "logits"
    assert "not probabilities" in meaning["mean"]["description"]
    assert meaning["probabilities"]["units"] == "probability"
    assert {meaning[n]["units"] for n in ("predictive_entropy", "expected_entropy", "mutual_information")} == {"nats"}
    params = meta["parameters"]
    assert params["max_num_samples"] == MAX_SAMPLES and params["default_num_samples"] == S
    assert json.loads(params["manifest"]) == json.loads(json.dumps(drop_predictor.manifest.to_dict()))


def test_the_replica_survived_every_bad_request(drop_server):
    assert drop_server.proc.poll() is None
    assert http("GET", drop_server.url("/v2/health/ready"))[0] == 200
