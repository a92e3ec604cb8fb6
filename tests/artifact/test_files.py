"""Writers never replace a file that belongs to another artifact, and killed writes are cleaned up;
a factory's failure is the user's error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from illia_export.artifact import atomic  # noqa: E402
from illia_export.artifact import manifest as mf  # noqa: E402
from illia_export.artifact.atomic import atomic_output, remove_stale_temporaries  # noqa: E402
from illia_export.errors import ArtifactError, ExportError  # noqa: E402
from illia_export.exporters.torch.source import load_torch_source  # noqa: E402
from illia_export.nn.torch import Linear  # noqa: E402
from illia_export.runtime import freeze_bank  # noqa: E402
from tests.reliability.conftest import assert_one_line_error, cli  # noqa: E402


def _copy_with_local(bare, tmp_path) -> tuple[Path, Path]:
    path = Path(shutil.copy(bare["onnx"], tmp_path / "mlp.onnx"))
    local_name = mf.read_manifest(path).local.file
    local = tmp_path / "mlp.local.onnx"
    shutil.copy(bare["onnx"].with_name(local_name), local)
    from .conftest import restamp

    obj = mf.read_manifest(path)
    obj.local.file = local.name
    import onnx

    model = onnx.load(str(path))
    mf.embed_in_onnx(model, obj)
    onnx.save(model, str(path))
    restamp(path)
    return path, local


def test_freeze_refuses_to_overwrite_the_sources_local_variant(bare, tmp_path):
    path, local = _copy_with_local(bare, tmp_path)
    before = local.read_bytes()
    with pytest.raises(ArtifactError, match="local-reparameterization variant of the artifact"):
        freeze_bank(path, local, num_samples=4, seed=0)
    assert local.read_bytes() == before
    r = cli("freeze", str(path), "-o", str(local), "--samples", "4", "--seed", "0")
    assert_one_line_error(r, "local-reparameterization variant")
    assert local.read_bytes() == before
    freeze_bank(path, tmp_path / "mlp.frozen.onnx", num_samples=4, seed=0)  # any other name is fine


def test_no_writer_replaces_a_sidecar_or_a_local_variant(bare, tmp_path):
    path, local = _copy_with_local(bare, tmp_path)
    side = mf.sidecar_path(path)
    side.write_text("{}")
    for target in (local, side):
        with pytest.raises(ArtifactError, match="refusing to replace it"):
            with atomic_output(target) as tmp:
                tmp.write_text("x")
    with atomic_output(local, part_of=path) as tmp:  # the artifact's own writer may
        tmp.write_bytes(local.read_bytes())
    with atomic_output(tmp_path / "other.local.onnx") as tmp:  # no artifact claims this one
        tmp.write_text("x")


def test_export_refuses_an_artifacts_local_variant_as_output(bare, tmp_path):
    import illia_export

    path, local = _copy_with_local(bare, tmp_path)
    before = local.read_bytes()
    with pytest.raises(ArtifactError, match="local-reparameterization variant"):
        illia_export.export(Linear(4, 3), torch.zeros(2, 4), local)
    assert local.read_bytes() == before


def test_a_killed_writes_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "out.npz"
    child = subprocess.run(
        [sys.executable, "-c", (
            "import os, sys; from illia_export.artifact.atomic import atomic_output\n"
            f"with atomic_output({str(target)!r}) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000); os.kill(os.getpid(), 9)"
        )],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )  # fmt: skip
    assert child.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.npz.illia-")]
    assert len(left) == 1
    alive = tmp_path / f".out.npz.illia-{os.getppid()}-x.tmp.npz"  # a live process's write: kept
    alive.write_text("busy")
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert not left[0].exists() and alive.exists()
    assert remove_stale_temporaries(target) == []


# ------------------------------------------------------------------------------ atomic guards
def test_the_target_is_checked_again_after_the_body(tmp_path):
    """A folder that appears at the target while the artifact is written is not replaced."""
    target = tmp_path / "model.onnx"
    with pytest.raises(ArtifactError, match="existing folder"):
        with atomic_output(target) as tmp:
            tmp.write_text("new")
            target.mkdir()
            (target / "notes.txt").write_text("precious")
    assert (target / "notes.txt").read_text() == "precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.onnx.")]


def test_a_failed_savedmodel_swap_restores_the_previous_one(tmp_path, monkeypatch):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"old")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # moving the new folder in fails after the old one was moved aside
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        with atomic_output(sm, directory=True) as tmp:
            (tmp / "saved_model.pb").write_bytes(b"new")
    assert (sm / "saved_model.pb").read_bytes() == b"old"
    assert len(calls) == 3


# ------------------------------------------------------------------------------ factories
FACTORIES = {
    "raises": ("def make():\n    raise ValueError('the config file is missing')\n", "the config file is missing"),
    "needs_argument": ("def make(width):\n    return width\n", "missing 1 required positional argument"),
    "import_fails": ("raise RuntimeError('no GPU here')\ndef make():\n    pass\n", "no GPU here"),
}


@pytest.fixture
def state_dict(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(Linear(4, 3).state_dict(), path)
    return path


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_a_failing_factory_is_the_users_error(tmp_path, state_dict, monkeypatch, case):
    code, words = FACTORIES[case]
    (tmp_path / f"factory_{case}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ExportError, match=words):
        load_torch_source(state_dict, factory=f"factory_{case}:make")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    r = cli(str(state_dict), "--factory", f"factory_{case}:make", "--input-shape", "2,4", "-o", str(tmp_path / "o.onnx"))
    assert_one_line_error(r, words)
    assert "internal error" not in r.stderr
