"""illia-mc holds the Python runtime's input rules against hostile and faulty inputs (#22 item 6).

Each guard has a case that fails when the guard is weakened: NaN/inf inputs, the artifact
digest (a flipped weight byte, a manifest without digest), ``.npy`` headers that claim more
than the file holds, ``--samples`` beyond memory or 64-bit sizes, row ids, and files in
``--out`` that illia-mc did not write. User errors exit 2 with one line on stderr; an artifact
that cannot be used exits 1. All on the ONNX Runtime-only build (built once per session).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

pytestmark = pytest.mark.cpp


@pytest.fixture(scope="module")
def w1(artifacts):
    """The W1 MLP as ONNX (vectorized, classification), exported by illia-export with a digest."""
    return artifacts("w1", "vectorized", format="onnx")


def _mc(build, artifact, x, out, *extra, samples=4):
    return build.run(
        build.illia_mc, artifact, "--input", x, "--samples", samples, "--seed", 0, "--out", out, *extra
    )


def _one_line_error(proc, status: int, *needles: str) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("illia-mc: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --- NaN / inf -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "an infinite value"), (-np.inf, "an infinite value")])
def test_nonfinite_input_refused_unless_allowed(cpp_ort_build, w1, tmp_path, bad, word):
    x = np.load(w1.input).copy()
    x[3, 100] = bad
    path = tmp_path / "x.npy"
    np.save(path, x)
    proc = _mc(cpp_ort_build, w1.path, path, tmp_path / "o")
    _one_line_error(proc, 2, word, "at flat index 2452", "--allow-nonfinite")
    assert not (tmp_path / "o" / "mean.npy").exists()
    proc = _mc(cpp_ort_build, w1.path, path, tmp_path / "ok", "--allow-nonfinite")
    assert proc.returncode == 0, proc.stderr
    mean = np.load(tmp_path / "ok" / "mean.npy")
    assert np.isnan(mean[3]).all() and np.isfinite(np.delete(mean, 3, axis=0)).all()


# --- digest ----------------------------------------------------------------------------------------


def _manifest_digest(path) -> str:
    from illia_export.artifact.manifest import read_manifest

    return read_manifest(path).digest


def test_digest_matches_python(cpp_ort_build, w1, tmp_path):
    """The C++ digest of an untouched export equals the recorded one (same algorithm as
    illia_export/artifact/digest.py: scheme 2, graph + canonical manifest JSON), so the export
    runs with the check on."""
    from illia_export.artifact.digest import compute_digest
    from illia_export.artifact.manifest import read_manifest

    assert _manifest_digest(w1.path) == compute_digest(w1.path, "onnx", read_manifest(w1.path))
    proc = _mc(cpp_ort_build, w1.path, w1.input, tmp_path / "o")
    assert proc.returncode == 0, proc.stderr


def _weight_offset(data: bytes) -> int:
    """Offset of a byte inside the first large initializer's float data (a weight)."""
    import onnx

    model = onnx.load_from_string(data)
    raw = max((t.raw_data for t in model.graph.initializer), key=len)
    at = data.find(raw[:64])
    assert at > 0 and len(raw) > 4096
    return at + len(raw) // 2


def test_flipped_weight_byte_is_caught_by_the_digest(cpp_ort_build, w1, tmp_path):
    data = bytearray(w1.path.read_bytes())
    data[_weight_offset(bytes(data))] ^= 0x40
    flipped = tmp_path / "flipped.onnx"
    flipped.write_bytes(bytes(data))
    proc = _mc(cpp_ort_build, flipped, w1.input, tmp_path / "o")
    _one_line_error(proc, 1, "do not match the digest", "re-export")
    assert not (tmp_path / "o").exists()
    # the graph itself loads and runs: only the digest tells the corruption
    proc = _mc(cpp_ort_build, flipped, w1.input, tmp_path / "unchecked", "--no-digest-check")
    assert proc.returncode == 0, proc.stderr


def _without_digest(src, dst) -> None:
    import onnx

    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == "illia_export.manifest":
            m = json.loads(prop.value)
            m.pop("digest")
            prop.value = json.dumps(m)
    onnx.save(model, str(dst))


def _edit_manifest(src, dst, edit) -> None:
    import onnx

    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == "illia_export.manifest":
            m = json.loads(prop.value)
            edit(m)
            prop.value = json.dumps(m)
    onnx.save(model, str(dst))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["noise"].reverse(), "do not match the digest"),
        (lambda m: m.update(noise_generator="illia-noise-v1"), "do not match the digest"),
        (lambda m: m.pop("digest_scheme"), "digest scheme 1"),
    ],
    ids=["noise_reversed", "generator_swapped", "scheme_one"],
)
def test_manifest_edits_fail_the_scheme_two_digest(cpp_ort_build, w1, tmp_path, edit, message):
    """The digest covers the manifest's sampling fields: illia-mc recomputes their canonical JSON
    (docs/formats.md) and refuses an edit that would give other numbers for the same seed; the
    untouched artifact (scheme 2) runs, so the check can fail only for the edit."""
    edited = tmp_path / "edited.onnx"
    _edit_manifest(w1.path, edited, edit)
    proc = _mc(cpp_ort_build, edited, w1.input, tmp_path / "o")
    _one_line_error(proc, 1, message)
    assert not (tmp_path / "o").exists()
    same = tmp_path / "same.onnx"
    _edit_manifest(w1.path, same, lambda m: None)  # re-serialized by Python's json: still verifies
    assert _mc(cpp_ort_build, same, w1.input, tmp_path / "ok").returncode == 0


def test_artifact_without_digest_needs_the_explicit_flag(cpp_ort_build, w1, tmp_path):
    bare = tmp_path / "bare.onnx"
    _without_digest(w1.path, bare)
    proc = _mc(cpp_ort_build, bare, w1.input, tmp_path / "o")
    _one_line_error(proc, 1, "records no digest", "--no-digest-check")
    proc = _mc(cpp_ort_build, bare, w1.input, tmp_path / "o", "--no-digest-check")
    assert proc.returncode == 0, proc.stderr


def test_malformed_digest_is_a_manifest_error(cpp_ort_build, w1, tmp_path):
    import onnx

    model = onnx.load(str(w1.path))
    for prop in model.metadata_props:
        if prop.key == "illia_export.manifest":
            m = json.loads(prop.value)
            m["digest"] = "sha256:" + "0" * 63
            prop.value = json.dumps(m)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    _one_line_error(_mc(cpp_ort_build, bad, w1.input, tmp_path / "o"), 1, "manifest.digest must look like")


# --- .npy headers -----------------------------------------------------------------------------------


def _npy(path, shape_text: str, data: bytes = b"\0" * 64, version: int = 1, header_len: int | None = None):
    header = ("{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }").encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    n = len(header) if header_len is None else header_len
    size = struct.pack("<H", n) if version == 1 else struct.pack("<I", n)
    path.write_bytes(b"\x93NUMPY" + bytes([version, 0]) + size + header + data)
    return path


@pytest.mark.parametrize(
    "shape_text,kwargs,needle",
    [
        ("(1000000000000, 6)", {}, "claims shape (1000000000000, 6)"),  # 24 TB claimed, 64 bytes held
        ("(8, 784)", {"version": 2, "header_len": 0xFFFFFFFF}, "header length 4294967295 exceeds"),  # 4 GB header
        ("(3074457345618258603, 6)", {}, "more elements than fit in 64 bits"),  # wraps to 2 elements
        ("(99999999999999999999, 6)", {}, "bad dim"),  # beyond int64
        ("(8, 784)", {"version": 2, "header_len": 5000}, "truncated .npy header"),  # past the end
    ],
)
def test_npy_header_bounded_before_allocating(cpp_ort_build, w1, tmp_path, shape_text, kwargs, needle):
    path = _npy(tmp_path / "hostile.npy", shape_text, **kwargs)
    proc = _mc(cpp_ort_build, w1.path, path, tmp_path / "o")
    _one_line_error(proc, 2, "hostile.npy", needle)
    assert "bad_alloc" not in proc.stderr


# --- --samples and sizes -------------------------------------------------------------------------


def test_samples_bounded_by_a_memory_estimate(cpp_ort_build, w1, tmp_path):
    proc = _mc(cpp_ort_build, w1.path, w1.input, tmp_path / "o", "--strategy", "bank", samples=10**12)
    _one_line_error(proc, 2, "needs about", "GiB", "lower --samples", "--strategy fresh")
    proc = _mc(cpp_ort_build, w1.path, w1.input, tmp_path / "o", "--chunk-size", 10**12, samples=10**12)
    _one_line_error(proc, 2, "needs about", "chunk of 1000000000000 samples", "--chunk-size")
    proc = _mc(cpp_ort_build, w1.path, w1.input, tmp_path / "o", samples=2**62)
    _one_line_error(proc, 2, "overflows a 64-bit size")


def test_row_ids_must_match_the_batch(cpp_ort_build, w1, tmp_path):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(3))
    _one_line_error(
        _mc(cpp_ort_build, w1.path, w1.input, tmp_path / "o", "--row-ids", ids), 2, "3 row ids for a batch of 8"
    )
    np.save(ids, np.zeros((8, 1), np.int64))
    _one_line_error(_mc(cpp_ort_build, w1.path, w1.input, tmp_path / "o", "--row-ids", ids), 2, "1-D integer")


# --- --out -------------------------------------------------------------------------------------------


def test_out_never_replaces_a_file_it_did_not_write(cpp_ort_build, w1, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mean.npy").write_bytes(b"the user's own file")
    proc = _mc(cpp_ort_build, w1.path, w1.input, out)
    _one_line_error(proc, 2, "mean.npy exists and was not written by illia-mc", "another --out")
    assert (out / "mean.npy").read_bytes() == b"the user's own file"
    assert not (out / "std.npy").exists()

    mine = tmp_path / "mine"
    assert _mc(cpp_ort_build, w1.path, w1.input, mine).returncode == 0
    first = np.load(mine / "probabilities.npy")
    # its own files may be replaced by a later run (same folder, other seed)
    proc = cpp_ort_build.run(
        cpp_ort_build.illia_mc, w1.path, "--input", w1.input, "--samples", 4, "--seed", 1, "--out", mine
    )
    assert proc.returncode == 0, proc.stderr
    assert not np.array_equal(first, np.load(mine / "probabilities.npy"))
    assert not [p.name for p in mine.iterdir() if "illia-mc-tmp" in p.name]  # no temporary left behind
    # ... unless the user changed one since: then it is theirs
    (mine / "entropy.npy").write_bytes(b"edited by the user")
    _one_line_error(_mc(cpp_ort_build, w1.path, w1.input, mine), 2, "entropy.npy exists")
    assert (mine / "entropy.npy").read_bytes() == b"edited by the user"


def test_out_that_is_a_file_is_refused(cpp_ort_build, w1, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    _one_line_error(_mc(cpp_ort_build, w1.path, w1.input, f), 2, "is not a folder")
    assert f.read_text() == "keep me"
