"""``illia_export.export``: the format from the path's suffix (#19 item 6), the opset range and
one set of defaults (#21 item 4, #22)."""

from __future__ import annotations

import inspect
import zipfile

import pytest
import torch

import illia_export
from illia_export import runtime
from illia_export.api import SUFFIX_FORMATS, format_from_path
from illia_export.errors import ExportError
from illia_export.exporters.torch.export import export_torch_formats
from illia_export.exporters.verify.same_noise import DEFAULT_RTOL, DEFAULT_TOLERANCE
from illia_export.nn.torch import Linear


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(Linear(4, 6), torch.nn.ReLU(), Linear(6, 3))


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("m.onnx", "onnx"),
        ("m.pt2", "pt2"),
        ("m.aoti.pt2", "aoti"),
        ("m.pt", "torchscript"),
        ("m.ts", "torchscript"),
        ("m.tflite", "tflite"),
        ("saved_model", "savedmodel"),
        ("runs/v1.model.ONNX", "onnx"),
    ],
)
def test_suffix_gives_the_format(path, fmt):
    assert format_from_path(path) == fmt
    assert format_from_path(path, fmt) == fmt


def test_a_pt2_file_may_hold_an_aoti_package():
    assert format_from_path("m.pt2", "aoti") == "aoti"


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("m.pt2", "onnx"), ("m.onnx", "pt2"), ("m.aoti.pt2", "pt2"), ("m.pt", "onnx"), ("m.tflite", "onnx"),
     ("folder", "onnx"), ("m.onnx", "savedmodel")],
)
def test_suffix_that_contradicts_format_is_refused_naming_both(path, fmt):
    with pytest.raises(ExportError, match=rf"format={fmt!r} contradicts the path {path!r}"):
        format_from_path(path, fmt)


def test_unknown_suffix_needs_format_and_lists_the_known_ones():
    with pytest.raises(ExportError, match=r"suffix .\.bin.: pass format=.*\.aoti\.pt2.*\.onnx.*\.tflite"):
        format_from_path("m.bin")
    assert format_from_path("m.bin", "onnx") == "onnx"


def test_bare_aoti_suffix_is_refused_with_the_name_to_use():
    with pytest.raises(ExportError, match=r"'\.aoti'.*\.aoti\.pt2"):
        format_from_path("m.aoti", "aoti")


def test_every_format_has_a_suffix():
    formats = {f for fs in SUFFIX_FORMATS.values() for f in fs}
    assert formats == set(illia_export.artifact.manifest.FORMATS)


@pytest.fixture(scope="module")
def pt2_by_suffix(tmp_path_factory):
    path = tmp_path_factory.mktemp("suffix") / "m.pt2"
    manifest = illia_export.export(_mlp(), torch.randn(2, 4), path, samples="per-call")
    return path, manifest


def test_pt2_suffix_writes_an_exported_program(pt2_by_suffix):
    # before: "m.pt2" silently held ONNX bytes and runtime.load failed on it
    path, manifest = pt2_by_suffix
    assert manifest.format == "pt2"
    assert zipfile.is_zipfile(path)
    pred = runtime.load(path).predict(torch.randn(3, 4).numpy(), num_samples=4, seed=0)
    assert pred.outputs["output"].shape == (4, 3, 3)


def test_pt_suffix_writes_torchscript(tmp_path):
    path = tmp_path / "m.pt"
    manifest = illia_export.export(_mlp(), torch.randn(2, 4), path, samples="per-call", validate=False)
    assert manifest.format == "torchscript"
    assert runtime.load(path).manifest.format == "torchscript"


def test_contradiction_is_refused_before_writing(tmp_path):
    with pytest.raises(ExportError, match=r"format='onnx' contradicts the path .*m\.pt2"):
        illia_export.export(_mlp(), torch.randn(2, 4), tmp_path / "m.pt2", format="onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [-1, 0, 6, 24, True, 17.0, "17"])
def test_opset_out_of_range_is_refused(tmp_path, opset):
    with pytest.raises(ExportError, match=r"opset=.* integer in \[7, 23\]"):
        illia_export.export(_mlp(), torch.randn(2, 4), tmp_path / "m.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_one_set_of_defaults():
    from illia_export.api import export

    api = inspect.signature(export).parameters
    torch_side = inspect.signature(export_torch_formats).parameters
    for name, value in (("tolerance", DEFAULT_TOLERANCE), ("rtol", DEFAULT_RTOL)):
        assert api[name].default == value == torch_side[name].default
    assert api["format"].default is None  # from the suffix
    from illia_export.cli import build_parser

    args = build_parser().parse_args(["export", "m.pt", "--input-shape", "1,4"])
    assert (args.tolerance, args.rtol, args.format) == (DEFAULT_TOLERANCE, DEFAULT_RTOL, None)


def test_an_option_the_torch_exporter_does_not_take_is_named(tmp_path):
    """`deterministic` is a JAX option: on a torch model it is refused by name, not a raw TypeError."""
    with pytest.raises(ExportError, match="takes no option 'deterministic'.*mc_dropout"):
        illia_export.export(Linear(4, 2), torch.zeros(2, 4), tmp_path / "m.onnx", deterministic=True)
    assert not list(tmp_path.iterdir())
