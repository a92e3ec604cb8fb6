"""Any JSON gives either a valid Manifest or a ManifestError naming the offending field -- never
another exception, and never a manifest that holds a value the contract does not allow."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illia_export.artifact.manifest import (
    DISTRIBUTION,
    FORMATS,
    NOISE_KINDS,
    NOISE_TRANSFORMS,
    READABLE_CONTRACTS,
    SOURCES,
    TASKS,
    Manifest,
)
from illia_export.errors import ManifestError

VALID = {
    "contract": 2,
    "format": "onnx",
    "source": "torch",
    "task": "classification",
    "sample_axis": 0,
    "inputs": [{"name": "input", "shape": ["batch", 6], "dtype": "float32"}],
    "noise": [
        {
            "name": "eps_fc_weights_distribution",
            "parameter": "fc.weights_distribution",
            "shape": ["samples", 3, 6],
        }
    ],
    "outputs": [{"name": "output", "shape": ["samples", "batch", 3], "dtype": "float32"}],
    "validation": {
        "max_abs_diff": 1e-7,
        "tolerance": 1e-4,
        "num_noise_draws": 3,
        "includes_zero_noise": True,
        "per_output": {"output": 1e-7},
        "batch_sizes": [2, 4],
    },
    "extra": {"exporter": "test"},
    "dropout": [{"path": "drop", "p": 0.1, "sampled": True}],
    "digest": "sha256:" + "0" * 64,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _check_valid(m: Manifest) -> None:
    """What a manifest that loaded must satisfy (the contract's closed sets), and it round-trips."""
    assert m.contract in READABLE_CONTRACTS and not isinstance(m.contract, bool)
    assert m.format in FORMATS and m.source in SOURCES and m.task in TASKS
    assert m.sample_axis in (0, None) and not isinstance(m.sample_axis, bool)
    for n in m.noise:
        assert n.distribution == DISTRIBUTION and n.kind in NOISE_KINDS and n.transform in NOISE_TRANSFORMS
    assert Manifest.from_json(m.to_json()).to_dict() == m.to_dict()


def _load(obj, field: str | None = None) -> None:
    """Either a valid manifest, or a ManifestError that names `field` (the top-level field changed)."""
    try:
        m = Manifest.from_dict(obj)
    except ManifestError as exc:
        text = str(exc)
        if field is not None:
            assert field in text or "both named" in text, (field, text)
        return
    _check_valid(m)


def test_the_valid_manifest_loads():
    m = Manifest.from_dict(copy.deepcopy(VALID))
    assert Manifest.from_json(m.to_json()).to_dict() == m.to_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_is_a_manifest_or_a_manifest_error(obj):
    _load(obj)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(VALID) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_values)
def test_any_field_replaced_by_any_json_is_a_manifest_or_a_manifest_error(path, value):
    obj = copy.deepcopy(VALID)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _load(obj, path[0])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PATHS))
def test_any_field_removed_is_a_manifest_or_a_manifest_error(path):
    obj = copy.deepcopy(VALID)
    target = obj
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    _load(obj, path[0])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_manifest_or_a_manifest_error(data):
    try:
        Manifest.from_json(data)
    except ManifestError:
        pass


@pytest.mark.parametrize(
    "path, value, words",
    [
        (("inputs", 0, "dtype"), "float99", "unsupported dtype"),
        (("inputs",), 7, "must be a list"),
        (("sample_axis",), False, "sample_axis"),
        (("contract",), 2.0, "contract"),
        (("validation", "max_abs_diff"), "small", "must be a number"),
        (("validation", "num_noise_draws"), -1, "integer >= 0"),
        (("noise", 0, "shape", 1), "seq", "no model input"),
        (("inputs", 0, "shape", 1), 2**40, "larger than"),
        (("digest",), "md5:abc", "digest"),
        (("extra",), [], "extra must be an object"),
        (("dropout", 0, "p"), 2, "[0, 1]"),
        (("sample_axis",), 1, "sample_axis must be 0 or null"),
        (("contract",), 3, "contract version 3 is not supported"),
        (("noise", 0, "distribution"), "normal", "unsupported noise distribution 'normal'"),
        (("surprise",), 1, "unknown fields ['surprise']"),
        (("digest_scheme",), 3, "digest_scheme must be one of"),
        (("local",), {"file": "m.local.onnx", "noise": [], "digest": "md5:x"}, "local.digest"),
    ],
)
def test_wrong_fields_are_named(path, value, words):
    obj = copy.deepcopy(VALID)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(obj)
    assert words in str(info.value)


def test_local_noise_may_name_the_model_itself():
    """A model that is one Linear layer: its local-variant noise feeds the root (parameter "")."""
    obj = copy.deepcopy(VALID)
    obj["local"] = {"file": "m.local.onnx", "noise": [dict(VALID["noise"][0], parameter="", name="eps_local_")]}
    assert Manifest.from_dict(obj).local.noise[0].parameter == ""
    obj["noise"][0]["parameter"] = ""
    with pytest.raises(ManifestError, match=r"noise\[0\]\.parameter must be a non-empty string"):
        Manifest.from_dict(obj)


def test_deeply_nested_json_is_a_manifest_error():
    with pytest.raises(ManifestError):
        Manifest.from_json("[" * 100_000 + "]" * 100_000)


def test_local_file_may_not_leave_the_artifact_folder():
    obj = copy.deepcopy(VALID)
    obj["local"] = {"file": "../../etc/passwd", "noise": VALID["noise"]}
    with pytest.raises(ManifestError, match="beside the artifact"):
        Manifest.from_dict(obj)
    json.dumps(obj)


@pytest.mark.parametrize("path", [("extra", "exporter"), ("validation", "max_abs_diff"), ("dropout", 0, "p")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused_by_name(path, value):
    """NaN and Infinity are not JSON: a manifest holding one would not round-trip through other
    readers, and a NaN max_abs_diff would compare as neither pass nor fail."""
    obj = copy.deepcopy(VALID)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError, match=str(path[-1])):
        Manifest.from_dict(obj)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_in_the_text_are_refused(constant):
    text = json.dumps(VALID).replace('"test"', constant)
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_json(text)
