"""Artifacts for the reliability tests, exported once per session through the public API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import illia_export  # noqa: E402
from illia_export.artifact import manifest as mf  # noqa: E402
from illia_export.artifact.digest import compute_digest, stamp_digest  # noqa: E402
from illia_export.nn.torch import Embedding, Linear  # noqa: E402
from tests.runtime.conftest import MLP  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 20
from tests.session_cache import build_once  # noqa: E402


class TokenModel(torch.nn.Module):
    """Bayesian embedding (VOCAB x 4), mean over the sequence, Bayesian linear to 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = Embedding(VOCAB, 4)
        self.fc = Linear(4, 3)

    def forward(self, tokens):
        return self.fc(self.emb(tokens).mean(dim=1))


# ------------------------------------------------------------------ manifest rewriting helpers
def read_raw_manifest(path: Path) -> dict:
    return json.loads(mf.read_manifest(path).to_json())


def write_raw_manifest(path: Path, fmt: str, obj: dict) -> None:
    """Replace the manifest of an artifact with `obj` (any JSON), leaving the graph as is."""
    text = json.dumps(obj)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        for prop in list(model.metadata_props):
            if prop.key == mf.ONNX_METADATA_KEY:
                model.metadata_props.remove(prop)
        prop = model.metadata_props.add()
        prop.key, prop.value = mf.ONNX_METADATA_KEY, text
        onnx.save(model, str(path))
    elif fmt == "torchscript":
        tmp = path.with_name(path.name + ".rewrite")
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename.endswith("extra/" + mf.EMBEDDED_NAME):
                    data = text.encode()
                dst.writestr(info, data)
        os.replace(tmp, path)
    elif fmt == "savedmodel":
        (path / "assets" / mf.EMBEDDED_NAME).write_text(text)
    else:
        mf.sidecar_path(path).write_text(text)


def stamp(path: Path, fmt: str, **changes) -> Path:
    """Apply manifest `changes` and record the artifact's (scheme-2) digest, as the exporters do."""
    obj = read_raw_manifest(path)
    obj.update(changes)
    manifest = mf.Manifest.from_dict(obj)
    stamp_digest(path, manifest)
    write_raw_manifest(path, fmt, manifest.to_dict())
    assert compute_digest(path, fmt, mf.read_manifest(path)) == manifest.digest
    return path


def copy_artifact(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
        side = mf.sidecar_path(src)
        if side.exists():
            shutil.copy(side, mf.sidecar_path(dst))
    return dst


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``illia-export ARGS`` with this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("ILLIA_EXPORT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "illia_export.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("illia-export")]
    assert len(lines) == 1 and lines[0].startswith("illia-export: error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="session")
def art(tmp_path_factory) -> dict[str, Path]:
    """Torch artifacts with digests stamped: an MLP (ONNX, TorchScript; vectorized and per-call)
    and a token model (ONNX, TorchScript) whose manifest records the vocabulary as the input range,
    plus one copy of the token ONNX without range. Also a TorchScript archive of the MLP (source)."""
    def build(root: Path):
        torch.manual_seed(0)
        out: dict[str, Path] = {}
        mlp, tok = MLP(), TokenModel()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt")):
                for samples in ("vectorized", "per-call"):
                    p = root / f"mlp_{samples}.{ext}"
                    illia_export.export(
                        mlp, torch.zeros(2, 6), p, format=fmt, samples=samples, task="classification"
                    )
                    out[f"mlp_{fmt}_{samples}"] = stamp(p, fmt)
                p = root / f"tok.{ext}"
                illia_export.export(tok, torch.randint(0, VOCAB, (2, 5)), p, format=fmt, task="classification")
                obj = read_raw_manifest(p)
                if fmt == "onnx":  # the capture records the vocabulary; the legacy TorchScript path does not
                    assert obj["inputs"][0]["range"] == [0, VOCAB]
                # an artifact without the range (older exports): negative ids must still be refused
                bare = copy_artifact(p, root / f"tok_norange.{ext}")
                stripped = [dict(obj["inputs"][0], range=None)] + obj["inputs"][1:]
                out[f"tok_{fmt}_norange"] = stamp(bare, fmt, inputs=stripped)
                obj["inputs"][0]["range"] = [0, VOCAB]
                out[f"tok_{fmt}"] = stamp(p, fmt, inputs=obj["inputs"])
            src = root / "mlp_source.pt"
            torch.jit.save(torch.jit.script(mlp), str(src))
            out["mlp_source"] = src
        return out

    return build_once(tmp_path_factory, "reliability-art", build)


@pytest.fixture(scope="session")
def tf_art(tmp_path_factory) -> dict[str, Path]:
    """A small JAX MLP exported to TFLite and SavedModel (the JAX exporter stamps the digest)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("flax")
    sys.path.insert(0, str(ROOT / "tests" / "exporters" / "jax"))
    from models import MLP as JaxMLP

    from illia_export.exporters.jax.export import export_jax

    def build(root: Path):
        model = JaxMLP()
        x = np.zeros((2, 12), np.float32)
        out = {}
        for fmt, name in (("tflite", "m.tflite"), ("savedmodel", "m_savedmodel")):
            manifest = export_jax(model, x, root / name, fmt, task="classification")
            assert manifest.digest is not None
            out[fmt] = root / name
        return out

    return build_once(tmp_path_factory, "reliability-tf-art", build)
