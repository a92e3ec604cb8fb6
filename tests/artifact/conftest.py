"""Artifacts of a bare illia layer (the model *is* one ``Linear``), exported once per session
through the public API in every torch format; the AOTInductor package is compiled once."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import illia_export  # noqa: E402
from illia_export.artifact import manifest as mf  # noqa: E402
from illia_export.artifact.digest import stamp_digest  # noqa: E402
from illia_export.nn.torch import Linear  # noqa: E402
from tests.session_cache import build_once  # noqa: E402

EXT = {"onnx": "onnx", "torchscript": "pt", "pt2": "pt2", "aoti": "pt2"}


def _export(root: Path, fmt: str) -> Path:
    torch.manual_seed(0)
    path = root / f"bare_{fmt}.{EXT[fmt]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        illia_export.export(Linear(4, 3), torch.zeros(2, 4), path, format=fmt)
    return path


class _Exports(dict):
    """Exports a format the first time a test asks for it (mutant runs stay fast)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, fmt: str) -> Path:
        self[fmt] = _export(self.root, fmt)
        return self[fmt]


@pytest.fixture(scope="session")
def bare(tmp_path_factory) -> dict[str, Path]:
    """``export(Linear(4, 3), x, ...)`` as ONNX, TorchScript and .pt2 (exported on first use)."""
    return _Exports(tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="session")
def bare_aoti(tmp_path_factory) -> Path:
    """The same layer as an AOTInductor package (one compile per session)."""
    return build_once(tmp_path_factory, "bare-aoti", lambda root: _export(root, "aoti"))


class Marker:
    """A pickle whose ``__reduce__`` creates the file `path` when unpickled (code from the file)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def rewrite_zip(path: Path, replace: dict[str, bytes]) -> None:
    """Rewrite members of the zip at `path` (matched by their name without the top folder)."""
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    tmp = path.with_name(path.name + ".rewrite")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for info, data in members:
            short = info.filename.partition("/")[2]
            dst.writestr(info, replace.get(short, data))
    tmp.replace(path)


def member(path: Path, short: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.partition("/")[2] == short:
                return zf.read(info)
    raise KeyError(short)


def restamp(path: Path) -> None:
    """Recompute and embed the digest, as an attacker who edits the file can."""
    manifest = mf.read_manifest(path)
    stamp_digest(path, manifest)
    fmt = manifest.format
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        mf.embed_in_onnx(model, manifest)
        onnx.save(model, str(path))
    else:
        rewrite_zip(path, {f"extra/{mf.EMBEDDED_NAME}": manifest.to_json().encode()})


def pickle_bytes(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)
