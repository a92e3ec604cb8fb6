"""The export/inspect CLI: the W2 CNN end to end, and every user error (message, exit code, no file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from illia_export.artifact.manifest import read_manifest
from illia_export.cli import main
from illia_export.nn.torch import Conv2d, Linear


class W2(nn.Module):
    """DESIGN.md's reference CNN: Conv(1->16,3) ReLU Pool2, Conv(16->32,3) ReLU Pool2, Linear(800->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2d(1, 16, 3)
        self.conv2 = Conv2d(16, 32, 3)
        self.fc = Linear(800, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def w2_archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w2") / "cnn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(W2()), str(path))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("illia-export")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "illia_export.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600)


def test_w2_archive_to_onnx(w2_archive, tmp_path):
    out = tmp_path / "cnn.onnx"
    res = _cli(str(w2_archive), "--format", "onnx", "--input-shape", "2,1,28,28", "--task", "classification", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "max diff" in res.stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    info = _cli("inspect", str(out), "--json")
    assert info.returncode == 0
    manifest = json.loads(info.stdout)  # exactly one JSON object
    assert [n["parameter"] for n in manifest["noise"]] == [
        "conv1.weights_distribution",
        "conv1.bias_distribution",
        "conv2.weights_distribution",
        "conv2.bias_distribution",
        "fc.weights_distribution",
        "fc.bias_distribution",
    ]
    v = manifest["validation"]  # within tolerance + rtol |b|: max_abs_diff itself may exceed tolerance
    assert v["within_tolerance"] is True and v["max_abs_diff"] == max(v["per_output"].values())
    assert manifest["source"] == "torchscript" and manifest["task"] == "classification"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {"input": np.zeros((3, 1, 28, 28), np.float32)}
    feeds.update({n["name"]: np.zeros([4] + n["shape"][1:], np.float32) for n in manifest["noise"]})
    (logits,) = sess.run(None, feeds)
    assert logits.shape == (4, 3, 10)
    human = _cli("inspect", str(out))
    assert "eps_conv1_weights_distribution" in human.stdout and "validation: passed" in human.stdout


def test_default_output_path_and_torchscript(w2_archive, tmp_path):
    src = tmp_path / "net.pt"
    src.write_bytes(w2_archive.read_bytes())
    assert main([str(src), "--format", "torchscript", "--input-shape", "2,1,28,28", "--samples", "per-call"]) == 0
    assert (tmp_path / "net.illia.pt").exists()
    assert main([str(src), "--input-shape", "1,1,28,28", "--no-validate"]) == 0
    assert (tmp_path / "net.onnx").exists()


def _no_leftovers(folder: Path, allowed: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} <= allowed


def _error_case(capsys, args, expect: str):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("illia-export: error:"), err
    assert expect in err
    assert "Traceback" not in err


def test_missing_file(capsys, tmp_path):
    _error_case(capsys, [str(tmp_path / "nope.pt"), "--input-shape", "1,4"], "not found")
    _no_leftovers(tmp_path, set())


def test_not_a_torchscript_archive(capsys, tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"\x00not a model" + os.urandom(256))
    _error_case(capsys, [str(bad), "--input-shape", "1,4"], "not a TorchScript archive")
    _no_leftovers(tmp_path, {"junk.pt"})


def test_pickled_module_needs_flag(capsys, tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(nn.Sequential(Linear(4, 2)), str(path))
    _error_case(capsys, [str(path), "--input-shape", "2,4"], "--trust-pickle")
    _no_leftovers(tmp_path, {"pickled.pt"})
    assert main([str(path), "--input-shape", "2,4", "--trust-pickle"]) == 0
    assert (tmp_path / "pickled.onnx").exists()


def test_no_bayesian_layers(capsys, tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 2))), str(path))
    _error_case(capsys, [str(path), "--input-shape", "2,4"], "no Bayesian layers found")
    _no_leftovers(tmp_path, {"plain.pt"})


def test_bad_shape(capsys, w2_archive, tmp_path):
    out = tmp_path / "x.onnx"
    _error_case(capsys, [str(w2_archive), "--input-shape", "2,3,28,28", "-o", str(out)], "rejects the example inputs")
    _error_case(capsys, [str(w2_archive), "--input-shape", "2,a,28", "-o", str(out)], "bad --input-shape")
    _error_case(capsys, [str(w2_archive), "-o", str(out)], "pass --input-shape")
    _no_leftovers(tmp_path, set())


def test_state_dict_needs_factory(capsys, tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(W2().state_dict(), str(path))
    _error_case(capsys, [str(path), "--input-shape", "1,1,28,28"], "--factory")


def test_failed_validation_leaves_nothing(capsys, w2_archive, tmp_path):
    out = tmp_path / "cnn.onnx"
    code = main([str(w2_archive), "--input-shape", "2,1,28,28", "-o", str(out), "--tolerance", "0", "--rtol", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "validation failed" in err
    _no_leftovers(tmp_path, set())


def test_help_is_fast_and_lazy():
    code = (
        "import sys, illia_export.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch','tensorflow','jax','onnxruntime','kserve') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


FACTORY = '''
import torch
from torch import nn


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))
'''


@pytest.fixture()
def dropout_state(tmp_path, monkeypatch):
    """A plain torch model (no Bayesian layer) saved as a state dict, with its factory module."""
    (tmp_path / "user_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("user_models")
    state = tmp_path / "net.pt"
    torch.save(module.make_net().state_dict(), state)
    yield state
    sys.modules.pop("user_models", None)


def test_state_dict_with_mc_dropout_to_pt2_and_inspect(capsys, dropout_state, tmp_path):
    out = tmp_path / "net.pt2"
    args = [str(dropout_state), "--factory", "user_models:make_net", "--input-shape", "4,6", "-f", "pt2", "-o", str(out)]
    assert main(args + ["--mc-dropout"]) == 0
    text = capsys.readouterr().out
    assert "dropout '2' (p=0.3): sampled" in text and "1 dropout" in text and "MC std ratio" in text
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dropout mask, dropout, per example" in text and "2 p=0.3: sampled" in text


def test_state_dict_without_mc_dropout_says_why_nothing_is_sampled(capsys, dropout_state, tmp_path):
    args = [str(dropout_state), "--factory", "user_models:make_net", "--input-shape", "4,6", "-o", str(tmp_path / "n.onnx")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mc_dropout" in err
    assert not (tmp_path / "n.onnx").exists()


def test_mc_dropout_with_unknown_module_name_is_one_line(capsys, dropout_state, tmp_path):
    args = [str(dropout_state), "--factory", "user_models:make_net", "--input-shape", "4,6", "--mc-dropout", "0,9"]
    assert main(args + ["-o", str(tmp_path / "n.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not dropout modules" in err


def test_frozen_bank_export_option(capsys, tmp_path):
    """--frozen-bank S writes model.frozen.onnx beside the artifact: the bank of --frozen-seed."""
    import onnxruntime as ort

    from illia_export.runtime import load

    torch.manual_seed(0)
    path = tmp_path / "mlp.pt"
    torch.save(nn.Sequential(Linear(4, 8), nn.ReLU(), Linear(8, 3)), str(path))
    assert main([str(path), "--input-shape", "2,4", "--trust-pickle", "--task", "classification",
                 "--frozen-bank", "5", "--frozen-seed", "11"]) == 0
    assert "frozen bank: 5 samples of seed 11" in capsys.readouterr().out
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "mlp.frozen.onnx"), providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], {sess.get_inputs()[0].name: x})[0]
    ref = load(tmp_path / "mlp.onnx").predict(x, num_samples=5, seed=11, strategy="bank")
    np.testing.assert_allclose(probs, ref.probabilities, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "extra,expect",
    [(["--frozen-bank", "0"], "positive number"), (["--frozen-bank", "4", "--format", "torchscript"], "--format onnx"),
     (["--frozen-bank", "4", "--frozen-seed", "-2"], "--frozen-seed")],
)
def test_frozen_bank_bad_options_fail_before_export(capsys, tmp_path, extra, expect):
    path = tmp_path / "mlp.pt"
    torch.save(nn.Sequential(Linear(4, 2)), str(path))
    _error_case(capsys, [str(path), "--input-shape", "2,4", "--trust-pickle", *extra], expect)
    _no_leftovers(tmp_path, {"mlp.pt"})


def test_frozen_bank_of_mc_dropout_takes_row_ids(capsys, dropout_state, tmp_path):
    """Dropout masks are per-example noise: the frozen graph generates them from a row_id input."""
    out = tmp_path / "drop.onnx"
    args = [str(dropout_state), "--factory", "user_models:make_net", "--input-shape", "2,6", "--mc-dropout",
            "-o", str(out), "--frozen-bank", "4"]
    assert main(args) == 0
    frozen = read_manifest(tmp_path / "drop.frozen.onnx")
    assert [t.name for t in frozen.inputs] == ["input", "row_id"]


def test_frozen_bank_refused_after_export_leaves_nothing(capsys, dropout_state, tmp_path):
    """Generating dropout masks in the graph needs opset 18: the refusal comes after the export,
    and the export that preceded it is removed too (all or nothing)."""
    out = tmp_path / "drop.onnx"
    _error_case(capsys, [str(dropout_state), "--factory", "user_models:make_net", "--input-shape", "2,6",
                         "--mc-dropout", "--opset", "17", "-o", str(out), "--frozen-bank", "4"], "opset >= 18")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx") == []


TOKEN_FACTORY = '''
import torch
from torch import nn


class TokenPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.drop(self.emb(ids)).mean(1))


def make_tokens():
    torch.manual_seed(0)
    return TokenPool()
'''


@pytest.fixture()
def token_state(tmp_path, monkeypatch):
    """A token classifier (int64 ids [B, T], embedding dropout) saved as a state dict."""
    (tmp_path / "user_tokens.py").write_text(TOKEN_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("user_tokens")
    state = tmp_path / "tok.pt"
    torch.save(module.make_tokens().state_dict(), state)
    yield state
    sys.modules.pop("user_tokens", None)


def test_format_comes_from_the_output_suffix(capsys, token_state, tmp_path):
    out = tmp_path / "tok.pt2"
    args = [str(token_state), "--factory", "user_tokens:make_tokens", "--input-shape", "2,6", "--dtype", "int64",
            "--mc-dropout", "--samples", "per-call", "-o", str(out), "--json"]
    assert main(args) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["format"] == "pt2"
    assert manifest["inputs"][0]["shape"] == ["batch", "seq_len"] and manifest["inputs"][0]["range"] == [0, 50]
    assert manifest["noise"][0]["shape"] == ["batch", "seq_len", 8]
    assert manifest["validation"]["batch_sizes"] == [5, 9]


def test_input_shape_fixes_the_sequence_length(capsys, token_state, tmp_path):
    out = tmp_path / "tok.onnx"
    args = [str(token_state), "--factory", "user_tokens:make_tokens", "--input-shape", "2,=6", "--dtype", "int64",
            "--mc-dropout", "--samples", "per-call", "-o", str(out), "--json"]
    assert main(args) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["inputs"][0]["shape"] == ["batch", 6]
    assert manifest["noise"][0]["shape"] == ["batch", 6, 8]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["-f", "onnx", "-o", "x.pt2"], "format='onnx' contradicts the path"),
        (["-o", "x.bin"], "cannot tell the format of"),
        (["-o", "x.aoti"], ".aoti.pt2"),
        (["--opset", "-1"], "opset=-1 is not a valid ONNX opset"),
        (["--input-shape", "rows=2,6"], "axis 0 is the batch"),
        (["--input-shape", "2,6=6"], "must be an identifier"),
    ],
)
def test_format_opset_and_axis_errors_fail_before_export(capsys, token_state, tmp_path, extra, expect):
    args = [str(token_state), "--factory", "user_tokens:make_tokens", "--dtype", "int64"]
    if "--input-shape" not in extra:
        args += ["--input-shape", "2,6"]
    args += [str(tmp_path / a) if a.startswith("x.") else a for a in extra]
    _error_case(capsys, args, expect)
    _no_leftovers(tmp_path, {"tok.pt", "user_tokens.py", "__pycache__"})
