"""The binary tensor data extension of the v2 protocol (Triton's ``binary_tensor_data``).

Why: tritonclient, the common v2 client, sends its inputs as binary by default
(``InferInput.set_data_from_numpy``) and asks for binary outputs whenever the call names no
``outputs`` (``binary_data_output``). Supporting the extension is what makes
``client.infer(model, inputs)`` work as written; it is also cheaper than JSON both ways.

Wire format: the header ``Inference-Header-Content-Length: N`` says the body's first N bytes
are the JSON request; the bytes after it are the binary inputs, one after another in the
order of the ``inputs`` entries that carry ``parameters.binary_data_size`` (little-endian,
row-major; ``BOOL`` one byte per value). A response with binary outputs has the same layout,
its JSON outputs carrying ``parameters.binary_data_size`` instead of ``data``.

This module only moves bytes: it turns a binary input into a flat numpy array in the
``data`` field, and every check of names, shapes, datatypes and values stays with
``protocol`` (so a binary and a JSON request are checked alike). Every malformed layout is an
:class:`~illia_export.errors.ShapeError` naming the problem (a 400).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from illia_export.errors import ShapeError
from illia_export.serve.protocol import V2_DTYPES

HEADER = "inference-header-content-length"


def split_body(body: bytes, header_value: str | None) -> tuple[bytes, memoryview | None]:
    """(JSON part, binary part or None) of a request body, from the header's value."""
    if header_value is None:
        return body, None
    text = header_value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ShapeError(f"Inference-Header-Content-Length (={header_value[:40]!r}) must be a non-negative integer")
    n = int(text)
    if n > len(body):
        raise ShapeError(f"Inference-Header-Content-Length (={n}) is larger than the body ({len(body)} bytes)")
    return body[:n], memoryview(body)[n:]


def attach_inputs(inputs: Any, binary: memoryview | None) -> None:
    """Replace each input's ``parameters.binary_data_size`` by its bytes as a flat array in
    ``data`` (in place). With no binary part, an input that claims binary data is refused."""
    if not isinstance(inputs, list):
        return  # protocol names the problem
    offset = 0
    for item in inputs:
        if not isinstance(item, dict):
            continue
        params = item.get("parameters")
        if params is None:
            continue
        name = item.get("name")
        if not isinstance(params, Mapping):
            raise ShapeError(f"input {name!r}: `parameters` must be an object, got {type(params).__name__}")
        unknown = sorted(str(k) for k in params if k != "binary_data_size")
        if unknown:
            raise ShapeError(f"input {name!r}: unknown input parameters {unknown} (only binary_data_size)")
        if "binary_data_size" not in params:
            continue
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ShapeError(f"input {name!r}: binary_data_size (={size!r}) must be a non-negative integer")
        if "data" in item:
            raise ShapeError(f"input {name!r} has both `data` and binary_data_size; send one")
        if binary is None:
            raise ShapeError(
                f"input {name!r} has binary_data_size but the request has no Inference-Header-Content-Length "
                "header (the binary tensor data extension needs it)"
            )
        if offset + size > len(binary):
            raise ShapeError(
                f"input {name!r}: binary_data_size {size} at offset {offset} runs past the binary data "
                f"({len(binary)} bytes)"
            )
        item["data"] = _array(name, item.get("datatype"), item.get("shape"), binary[offset : offset + size])
        offset += size
        item.pop("parameters")
    if binary is not None and offset != len(binary):
        raise ShapeError(
            f"the request carries {len(binary)} bytes of binary data but its inputs' binary_data_size add up to {offset}"
        )


def _array(name: Any, datatype: Any, shape: Any, raw: memoryview) -> np.ndarray:
    if not isinstance(datatype, str) or datatype.upper() not in V2_DTYPES:
        raise ShapeError(f"input {name!r}: binary data needs a numeric v2 datatype, got {datatype!r}")
    dtype = V2_DTYPES[datatype.upper()].newbyteorder("<")
    if (
        not isinstance(shape, list)
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
    ):
        raise ShapeError(f"input {name!r}: `shape` must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise ShapeError(
            f"input {name!r}: shape {shape} {datatype.upper()} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(raw)}"
        )
    arr = np.frombuffer(raw, dtype=dtype)
    if dtype.kind == "b":
        as_bytes = np.frombuffer(raw, dtype=np.uint8)
        if as_bytes.size and as_bytes.max() > 1:
            raise ShapeError(f"input {name!r}: BOOL binary data must hold bytes 0 or 1")
    return arr.astype(dtype.newbyteorder("="), copy=False)


def wants_binary(request_parameters: Mapping[str, Any], outputs: Any) -> dict[str, bool] | bool:
    """Which outputs go binary: the request's ``binary_data_output`` (all), or each requested
    output's ``parameters.binary_data``. Returns True/False for all, or a dict by name."""
    flag = request_parameters.get("binary_data_output", False)
    if not isinstance(flag, bool):
        raise ShapeError(f"parameter binary_data_output (={flag!r}) must be true or false")
    if not outputs:
        return flag
    per: dict[str, bool] = {}
    for out in outputs:
        params = out.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise ShapeError(f"output {out.get('name')!r}: `parameters` must be an object")
        unknown = sorted(str(k) for k in params if k != "binary_data")
        if unknown:
            raise ShapeError(f"output {out.get('name')!r}: unknown output parameters {unknown} (only binary_data)")
        value = params.get("binary_data", flag)
        if not isinstance(value, bool):
            raise ShapeError(f"output {out.get('name')!r}: binary_data (={value!r}) must be true or false")
        per[out.get("name")] = value
    return per


def encode(tensors: Sequence[dict[str, Any]], arrays: Sequence[np.ndarray], binary: Sequence[bool]) -> tuple[list, bytes]:
    """Move the arrays of the outputs marked binary out of their JSON entries: returns the
    JSON outputs (``data`` or ``parameters.binary_data_size``) and the concatenated bytes."""
    chunks: list[bytes] = []
    for tensor, arr, as_binary in zip(tensors, arrays, binary):
        if as_binary:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = arr.reshape(-1)
    return list(tensors), b"".join(chunks)
