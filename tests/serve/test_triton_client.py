"""The real v2 client, tritonclient, against `illia-export serve`: its default call
`client.infer(model, inputs)` (binary inputs, `binary_data_output`), JSON outputs on request,
and the server and model metadata it reads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("httptools")
httpclient = pytest.importorskip("tritonclient.http")

from illia_export.runtime import load  # noqa: E402
from tests.serve.conftest import running_server  # noqa: E402
from tests.serve.test_server import rows_x  # noqa: E402


@pytest.fixture(scope="module")
def triton(serve_artifacts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton")
    with running_server(serve_artifacts["drop"], tmp, "--samples", "16", "--seed", "3") as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        yield server, client
        client.close()


def _input(x: np.ndarray, binary: bool = True):
    item = httpclient.InferInput("input", list(x.shape), "FP32")
    item.set_data_from_numpy(x, binary_data=binary)
    return item


def test_the_default_infer_call_gets_binary_outputs_equal_to_predict(triton, serve_artifacts):
    server, client = triton
    x = rows_x(4, 11)
    result = client.infer(server.name, [_input(x)])  # as in tritonclient's examples: no outputs=
    want = load(serve_artifacts["drop"], threads=1).predict(x, num_samples=16, seed=3, row_ids=np.arange(4))
    for name, value in want.summary_arrays().items():
        got = result.as_numpy(name)
        assert got is not None and got.dtype == value.dtype and got.shape == value.shape, name
        np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=name)
    response = result.get_response()
    assert "model_version" not in response and response["parameters"]["seed"] == 3
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])


def test_json_inputs_and_selected_json_outputs(triton):
    server, client = triton
    x = rows_x(2, 12)
    outputs = [httpclient.InferRequestedOutput("predicted_class", binary_data=False),
               httpclient.InferRequestedOutput("mutual_information", binary_data=True)]
    result = client.infer(server.name, [_input(x, binary=False)], outputs=outputs, request_id="r7")
    response = result.get_response()
    assert response["id"] == "r7" and [o["name"] for o in response["outputs"]] == ["predicted_class", "mutual_information"]
    assert "data" in response["outputs"][0] and "binary_data_size" in response["outputs"][1]["parameters"]
    assert result.as_numpy("predicted_class").shape == (2,) and result.as_numpy("mutual_information").shape == (2,)
    again = client.infer(server.name, [_input(x)])
    np.testing.assert_array_equal(again.as_numpy("predicted_class"), result.as_numpy("predicted_class"))


def test_server_and_model_metadata_through_the_client(triton):
    server, client = triton
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(server.name)
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(server.name)
    units = {o["name"]: o["parameters"]["units"] for o in model["outputs"]}
    assert units["mean"] == "logits" and units["predictive_entropy"] == "nats"


def test_a_client_error_reaches_the_client_as_its_message(triton):
    from tritonclient.utils import InferenceServerException

    server, client = triton
    bad = httpclient.InferInput("input", [2, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"must have shape \[batch, 6\]"):
        client.infer(server.name, [bad])
