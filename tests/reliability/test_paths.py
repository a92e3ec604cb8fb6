"""Hostile output paths: nothing the tool did not create is ever deleted or overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import illia_export  # noqa: E402
from illia_export.artifact.atomic import atomic_output, check_output_path  # noqa: E402
from illia_export.errors import ArtifactError, ExportError  # noqa: E402

from .conftest import MLP, assert_one_line_error, cli  # noqa: E402


def _user_folder(root: Path) -> Path:
    folder = root / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("1,2,3")
    return folder


def _intact(folder: Path) -> None:
    assert (folder / "notes.txt").read_text() == "precious"
    assert (folder / "sub" / "data.csv").read_text() == "1,2,3"


def _no_temp_left(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def test_api_refuses_an_existing_folder_as_output(tmp_path):
    folder = _user_folder(tmp_path)
    # a folder path means SavedModel: format="onnx" contradicts it before anything runs
    with pytest.raises(ExportError, match="contradicts the path"):
        illia_export.export(MLP(), torch.zeros(2, 6), folder, format="onnx")
    _intact(folder)
    # a user folder that happens to carry the artifact's suffix: the atomic-write guard refuses it
    named = tmp_path / "results.onnx"
    folder.rename(named)
    with pytest.raises(ArtifactError, match="existing folder"):
        illia_export.export(MLP(), torch.zeros(2, 6), named)
    _intact(named)
    _no_temp_left(tmp_path)


@pytest.mark.parametrize("directory", [False, True])
def test_atomic_output_refuses_a_user_folder(tmp_path, directory):
    folder = _user_folder(tmp_path)
    with pytest.raises(ArtifactError):
        with atomic_output(folder, directory=directory) as tmp:
            (tmp / "x").write_text("new") if directory else tmp.write_text("new")
    _intact(folder)
    _no_temp_left(tmp_path)


def test_atomic_output_replaces_an_earlier_savedmodel_only_on_success(tmp_path):
    sm = tmp_path / "model_savedmodel"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(sm, directory=True) as tmp:
            (tmp / "saved_model.pb").write_bytes(b"new")
            raise RuntimeError("validation failed")
    assert (sm / "saved_model.pb").read_bytes() == b"old"
    with atomic_output(sm, directory=True) as tmp:
        (tmp / "saved_model.pb").write_bytes(b"new")
    assert (sm / "saved_model.pb").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_savedmodel"]


def test_output_equal_to_a_source_is_refused_even_through_a_symlink(tmp_path):
    src = tmp_path / "model.pt"
    src.write_bytes(b"model")
    link = tmp_path / "link.pt"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "model.pt"):
        with pytest.raises(ArtifactError, match="overwrite the input"):
            check_output_path(out, sources=[src])
    with pytest.raises(ArtifactError, match="holding the input"):
        check_output_path(tmp_path, directory=True, sources=[src])
    assert src.read_bytes() == b"model"


def test_umask_is_honoured(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_output(tmp_path / "sm", directory=True) as tmp:
            (tmp / "saved_model.pb").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "sm").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "sm" / "saved_model.pb").stat().st_mode) == 0o640


def test_torch_export_artifact_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        illia_export.export(MLP(), torch.zeros(2, 6), tmp_path / "m.onnx", format="onnx", validate=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o644


# ------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def project(tmp_path, art):
    proj = tmp_path / "proj"
    proj.mkdir()
    model = proj / "model.pt"
    model.write_bytes(art["mlp_source"].read_bytes())
    (proj / "train.py").write_text("print('hi')")
    return proj


@pytest.mark.parametrize("out", ["results", "proj", ".", "$PWD", "proj/model.pt", "results/"])
def test_cli_export_refuses_destructive_outputs(project, out):
    root = project.parent
    results = _user_folder(root)
    target = str(root) if out == "$PWD" else out
    before = (project / "model.pt").read_bytes()
    r = cli("proj/model.pt", "--format", "onnx", "--input-shape", "2,6", "-o", target, cwd=root)
    assert_one_line_error(r)
    _intact(results)
    assert (project / "model.pt").read_bytes() == before
    assert (project / "train.py").read_text() == "print('hi')"
    _no_temp_left(root)
    _no_temp_left(project)


def test_cli_export_bad_tolerance_is_refused_before_work(project):
    for tol in ("-1", "nan", "inf"):
        r = cli("proj/model.pt", "--input-shape", "2,6", "--tolerance", tol, cwd=project.parent)
        assert r.returncode == 2 and "tolerance" in r.stderr
        assert not (project / "model.onnx").exists()


def test_cli_predict_refuses_to_overwrite_its_input_or_a_folder(art, tmp_path):
    x = tmp_path / "in.npz"
    np.savez(x, input=np.ones((2, 6), np.float32))
    before = x.read_bytes()
    onnx_path = str(art["mlp_onnx_vectorized"])
    assert_one_line_error(
        cli("predict", onnx_path, "--input", str(x), "--output", str(x)), "overwrite the input"
    )
    assert x.read_bytes() == before
    folder = _user_folder(tmp_path)
    os.rename(str(folder), str(folder) + ".json")
    assert_one_line_error(cli("predict", onnx_path, "--input", str(x), "-o", str(folder) + ".json"), "folder")
    _intact(Path(str(folder) + ".json"))


def test_cli_predict_missing_output_folder_fails_before_the_run(art, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 6), np.float32))
    r = cli(
        "predict",
        str(art["mlp_onnx_vectorized"]),
        "-i",
        str(x),
        "-S",
        "4",
        "-o",
        str(tmp_path / "no" / "p.npz"),
    )
    assert_one_line_error(r, "does not exist")
    assert "samples" not in r.stdout  # no summary was printed: nothing ran


def test_cli_predict_writes_atomically(art, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 6), np.float32))
    out = tmp_path / "p.json"
    r = cli(
        "predict", str(art["mlp_onnx_vectorized"]), "-i", str(x), "-S", "4", "--seed", "1", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert out.exists()
    _no_temp_left(tmp_path)
