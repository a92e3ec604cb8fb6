"""Hostile ``.pt2`` files: loading, inspecting or serving one never runs code from it.

Each hostile file carries a payload that creates a marker file when executed; the test first
shows that torch itself would run it (``trust_native_code=True`` skips our scan), so the test
fails if the guard is weakened, then that the default load refuses it and the marker never appears.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from illia_export.errors import ArtifactError
from illia_export.runtime import load
from tests.reliability.conftest import assert_one_line_error, cli

from .conftest import Marker, member, pickle_bytes, restamp, rewrite_zip

X = np.ones((3, 4), np.float32)


def _weights_pickle(path: Path, marker: Path) -> None:
    config = json.loads(member(path, "data/weights/model_weights_config.json"))
    fqn, meta = next(iter(config["config"].items()))
    meta["use_pickle"] = True
    rewrite_zip(path, {
        "data/weights/model_weights_config.json": json.dumps(config).encode(),
        f"data/weights/{meta['path_name']}": pickle_bytes(Marker(marker)),
    })  # fmt: skip


def _sample_inputs_pickle(path: Path, marker: Path) -> None:
    rewrite_zip(path, {"data/sample_inputs/model.pt": pickle_bytes(Marker(marker))})


def _shape_expression(path: Path, marker: Path) -> None:
    text = member(path, "models/model.json").decode()
    evil = f"__import__('builtins').open('{marker}', 'w') and Symbol('s0')"
    old = next(s for s in json.loads(text)["range_constraints"])
    text = text.replace(f'"{old}"', json.dumps(evil), 1)
    rewrite_zip(path, {"models/model.json": text.encode()})


def _guard_code(path: Path, marker: Path) -> None:
    program = json.loads(member(path, "models/model.json"))
    program["guards_code"] = [f"__import__('builtins').open('{marker}', 'w') is None"]
    rewrite_zip(path, {"models/model.json": json.dumps(program).encode()})


HOSTILE = {
    "weights_pickle": (_weights_pickle, "pickle"),
    "sample_inputs_pickle": (_sample_inputs_pickle, "sample inputs"),
    "shape_expression": (_shape_expression, "shape expression"),
    "guard_code": (_guard_code, "guard"),
}


def _hostile(bare, tmp_path, kind) -> tuple[Path, Path]:
    path = shutil.copy(bare["pt2"], tmp_path / "evil.pt2")
    marker = tmp_path / "marker"
    HOSTILE[kind][0](Path(path), marker)
    restamp(Path(path))  # the attacker writes a matching digest: the digest alone proves nothing
    return Path(path), marker


@pytest.mark.parametrize("kind", ["weights_pickle", "sample_inputs_pickle"])
def test_torch_itself_would_run_the_payload(bare, tmp_path, kind):
    """The payloads are real: torch.export.load runs them when our scan is skipped."""
    path, marker = _hostile(bare, tmp_path, kind)
    try:
        load(path, trust_native_code=True)
    except Exception:  # the program may not load after the payload ran; what matters is that it ran
        pass
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_pt2_is_refused_without_running_it(bare, tmp_path, kind):
    path, marker = _hostile(bare, tmp_path, kind)
    with pytest.raises(ArtifactError, match=HOSTILE[kind][1] + ".*trust_native_code=True"):
        load(path)
    assert not marker.exists()


def test_hostile_pt2_on_the_cli_runs_nothing(bare, tmp_path):
    path, marker = _hostile(bare, tmp_path, "weights_pickle")
    np.save(tmp_path / "x.npy", X)
    assert_one_line_error(cli("inspect", str(path)), "pickle")
    assert_one_line_error(cli("predict", str(path), "--input", str(tmp_path / "x.npy")), "pickle")
    assert not marker.exists()


def test_intact_pt2_loads_and_matches_trusted_load(bare):
    """The scan accepts what the exporter writes, and the scanned load is the same program."""
    a = load(bare["pt2"]).predict(X, num_samples=4, seed=1).samples
    b = load(bare["pt2"], trust_native_code=True).predict(X, num_samples=4, seed=1).samples
    np.testing.assert_array_equal(a, b)


def test_flipped_pt2_member_is_an_artifact_error_naming_the_file(bare, tmp_path):
    path = Path(shutil.copy(bare["pt2"], tmp_path / "flip.pt2"))
    data = bytearray(path.read_bytes())
    pos = data.find(member(path, "models/model.json")[:64])
    data[pos + 10] ^= 0x01  # inside a stored member: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="flip.pt2.*BadZipFile"):
        load(path)
    np.save(tmp_path / "x.npy", X)
    assert_one_line_error(cli("predict", str(path), "--input", str(tmp_path / "x.npy")), "flip.pt2", "BadZipFile")


def test_serve_start_up_runs_nothing(bare, tmp_path):
    """``illia-export serve`` builds its model through runtime.load: refused before it listens."""
    pytest.importorskip("httptools")  # the serve extra
    from illia_export.serve.server import ServeOptions, build_model

    path, marker = _hostile(bare, tmp_path, "weights_pickle")
    with pytest.raises(ArtifactError, match="pickle"):
        build_model(ServeOptions(artifact=str(path), name="evil"))
    assert not marker.exists()
    r = cli("serve", str(path), "--port", "65431", timeout=120)
    assert_one_line_error(r, "pickle")
    assert not marker.exists()
