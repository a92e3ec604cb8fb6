"""The C++ runtime's ONNX Runtime and AOTInductor backends against the Python runtime.

* ONNX Runtime-only build (no LibTorch): ``illia-mc`` on .onnx / .ort artifacts gives the
  numbers of ``illia_export.runtime.load(path).predict(x, num_samples=S, seed=...)`` to 1e-5;
  the binary links no LibTorch; the example program embeds that library.
* Default build: an AOTInductor package of a model gives the Python runtime's numbers on the
  ONNX export of the same model, same seed.
* Manifest contract v1 and v2 (per-example "batch" / "<k>*batch" noise dims, the noise
  generator check) and clear errors for what the runtime cannot run.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.runtime.conftest import save_stamped

from .test_cpp_runtime import assert_close, run_mc

pytestmark = pytest.mark.cpp

SAMPLES = 16
SEED = 7
TOL = 1e-5


def python_summary(
    path, x_npy, num_samples=SAMPLES, seed=SEED, strategy="fresh", task="classification"
) -> dict:
    """What illia-mc writes, computed by the Python runtime on `path` (per-example noise keyed
    by row index, the layout every runtime uses by default)."""
    from illia_export.runtime import load

    predictor = load(path, trust_native_code=True)  # the test's own exports (AOTI packages among them)
    x = np.load(x_npy)
    # row ids where the artifact's per-example noise can be keyed ('<k>*batch' cannot: stream-wide)
    keyable = not any(isinstance(d, str) and d.endswith("*batch") for n in predictor.manifest.noise for d in n.shape)
    row_ids = np.arange(len(x)) if keyable else None
    pred = predictor.predict(x, num_samples=num_samples, seed=seed, strategy=strategy, row_ids=row_ids)
    out = {"mean": pred.mean, "std": pred.std}
    if task == "classification":
        out.update(
            probabilities=pred.probabilities,
            entropy=pred.predictive_entropy,
            expected_entropy=pred.expected_entropy,
            mutual_information=pred.mutual_information,
        )
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


# --- ONNX Runtime-only build --------------------------------------------------------------------


def test_ort_only_binary_links_no_libtorch(cpp_ort_build):
    for binary in (cpp_ort_build.illia_mc, cpp_ort_build.example):
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
        libs = proc.stdout
        assert "libonnxruntime.so.1 =>" in libs and "not found" not in libs, libs
        for torch_lib in ("libtorch", "libc10", "libgomp"):
            assert torch_lib not in libs, f"{binary.name} links {torch_lib}:\n{libs}"


@pytest.mark.parametrize("samples", ["vectorized", "per-call"])
@pytest.mark.parametrize("workload", ["w1", "w2"])
def test_ort_matches_python_runtime(cpp_ort_build, artifacts, tmp_path, workload, samples):
    art = artifacts(workload, samples, format="onnx")
    got = run_mc(cpp_ort_build, art, tmp_path / "fresh")
    assert_close(got, python_summary(art.path, art.input), TOL)
    assert np.all(got["std"] > 0), "weight noise must make the samples differ"


def test_ort_bank_and_chunks_match_python_runtime(cpp_ort_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized", format="onnx")
    got = run_mc(cpp_ort_build, art, tmp_path / "bank", "--strategy", "bank", "--chunk-size", "5")
    assert_close(got, python_summary(art.path, art.input, strategy="bank"), TOL)


def test_ort_format_matches_python_runtime(cpp_ort_build, artifacts, tmp_path):
    art = artifacts("w2", "vectorized", format="ort")
    got = run_mc(cpp_ort_build, art, tmp_path)
    assert_close(got, python_summary(art.path, art.input), TOL)


def test_example_program_ort_only(cpp_ort_build, artifacts):
    art = artifacts("w1", "vectorized", format="onnx")
    proc = cpp_ort_build.run(cpp_ort_build.example, art.path, art.input)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    want = python_summary(art.path, art.input, num_samples=32, seed=0, strategy="bank")
    assert len(lines) == 8
    for row, line in enumerate(lines):
        fields = dict(f.split("=") for f in line.split()[4:])
        assert line.startswith(f"row {row}: class {int(want['probabilities'][row].argmax())} ")
        assert abs(float(fields["mutual_information"]) - want["mutual_information"][row]) < 1e-4


def test_ort_only_refuses_torchscript(cpp_ort_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized")
    proc = cpp_ort_build.run(
        cpp_ort_build.illia_mc, art.path, "--input", art.input, "--samples", 2, "--seed", 0, "--out", tmp_path
    )
    assert proc.returncode == 1
    assert "built without LibTorch" in proc.stderr and "load the ONNX artifact" in proc.stderr


# --- manifests: contract v1 / v2, per-example noise, noise generator ---------------------------


def _per_example_onnx(path, contract=2, noise_dim="2*batch", generator="illia-noise-v1"):
    """A hand-made vectorized ONNX artifact with per-example noise ["samples", "2*batch", 4]:
    out[s, b] = x[b] + eps[s, b] + 2 * eps[s, B + b]."""
    import torch

    from illia_export.artifact.manifest import Manifest, NoiseSpec, TensorSpec

    class PerExample(torch.nn.Module):
        def forward(self, x, eps):
            b = x.shape[0]
            return x.unsqueeze(0) + eps[:, :b] + 2.0 * eps[:, b:]

    x = torch.randn(3, 4)
    torch.onnx.export(
        PerExample(),
        (x, torch.randn(2, 6, 4)),
        str(path),
        input_names=["x", "eps_drop"],
        output_names=["y"],
        dynamic_axes={
            "x": {0: "batch"},
            "eps_drop": {0: "samples", 1: "noise_rows"},
            "y": {0: "samples", 1: "batch"},
        },
        dynamo=False,
    )
    import onnx

    model = onnx.load(str(path))
    manifest = Manifest(
        format="onnx",
        source="torch",
        inputs=[TensorSpec("x", ["batch", 4])],
        noise=[NoiseSpec("eps_drop", "drop", ["samples", noise_dim, 4], kind="draw")],
        outputs=[TensorSpec("y", ["samples", "batch", 4])],
        sample_axis=0,
        task="regression",
        contract=contract,
        noise_generator=generator,
    )
    save_stamped(model, path, manifest.to_dict())  # the scheme-2 digest both runtimes check
    return x


def test_per_example_noise_dims(cpp_ort_build, tmp_path):
    """'<k>*batch' noise dims are sized k * batch at predict time, as in the Python runtime."""
    path = tmp_path / "per_example.onnx"
    _per_example_onnx(path)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    for strategy in ("fresh", "bank"):
        got = run_mc(cpp_ort_build, _Art(path, x), tmp_path / strategy, "--strategy", strategy)
        want = python_summary(path, x, strategy=strategy, task="regression")
        assert_close(got, want, TOL)
    assert got["std"].shape == (5, 4) and np.all(got["std"] > 1.0)  # eps + 2 eps': std ~ sqrt(5)


class _Art:
    def __init__(self, path, x, task="regression"):
        self.path, self.input, self.task = path, x, task


def _mc(build, path, x, out):
    """illia-mc on a hand-made artifact (no digest: run unchecked, on request)."""
    return build.run(
        build.illia_mc, path, "--input", x, "--samples", 3, "--seed", 0, "--out", out, "--no-digest-check"
    )


def test_manifest_versions_and_generator(cpp_ort_build, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 4), np.float32))
    v1 = tmp_path / "v1.onnx"  # contract 1: integer noise dims only
    _per_example_onnx(v1, contract=1, noise_dim=6)
    xv1 = tmp_path / "x3.npy"
    np.save(xv1, np.zeros((3, 4), np.float32))
    proc = _mc(cpp_ort_build, v1, xv1, tmp_path / "o1")
    assert proc.returncode == 0, proc.stderr

    v9 = tmp_path / "v9gen.onnx"
    _per_example_onnx(v9, generator="illia-noise-v9")
    proc = _mc(cpp_ort_build, v9, x, tmp_path / "o2")
    assert proc.returncode == 1
    assert "manifest.noise_generator 'illia-noise-v9' is not supported" in proc.stderr
    assert "illia-noise-v1, illia-noise-v2" in proc.stderr  # the generators this runtime has
    assert "illia-noise-v1" in proc.stderr

    v3 = tmp_path / "v3.onnx"
    _per_example_onnx(v3)
    _rewrite_manifest(v3, contract=3)
    proc = _mc(cpp_ort_build, v3, x, tmp_path / "o3")
    assert proc.returncode == 1 and "manifest contract version 3 is not supported" in proc.stderr

    bad_dim = tmp_path / "bad_dim.onnx"
    _per_example_onnx(bad_dim)
    _rewrite_manifest(bad_dim, noise_shape=["samples", "seq", 4])
    proc = _mc(cpp_ort_build, bad_dim, x, tmp_path / "o4")
    assert proc.returncode == 1 and "noise dim 'seq'" in proc.stderr and "'<k>*<name>'" in proc.stderr
    assert "a symbolic dim of an input ('batch')" in proc.stderr  # names the dims it may follow

    wrong_format = tmp_path / "wrong_format.onnx"
    _per_example_onnx(wrong_format)
    _rewrite_manifest(wrong_format, format="aoti")
    proc = _mc(cpp_ort_build, wrong_format, x, tmp_path / "o5")
    assert proc.returncode == 1 and "is an onnx artifact but its manifest says format='aoti'" in proc.stderr


def _rewrite_manifest(path, contract=None, noise_shape=None, format=None):
    """Edit the embedded manifest JSON directly (to write what the Python side would refuse)."""
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "illia_export.manifest":
            m = json.loads(prop.value)
            if contract is not None:
                m["contract"] = contract
            if noise_shape is not None:
                m["noise"][0]["shape"] = noise_shape
            if format is not None:
                m["format"] = format
            prop.value = json.dumps(m)
    onnx.save(model, str(path))


def test_plain_exported_program_is_refused(cpp_ort_build, tmp_path):
    import torch

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(Tiny(), (torch.zeros(2, 3),)), str(path))
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3), np.float32))
    proc = _mc(cpp_ort_build, path, x, tmp_path / "o")
    assert proc.returncode == 1
    assert "plain torch.export ExportedProgram" in proc.stderr and "AOTInductor package" in proc.stderr
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    proc = _mc(cpp_ort_build, junk, x, tmp_path / "o")
    assert proc.returncode == 1 and "not a .pt2 package (not a zip file)" in proc.stderr


# --- AOTInductor (default build) ----------------------------------------------------------------


def _aoti(cpp_build, artifacts, workload: str):
    if "aoti" not in cpp_build.backends:
        pytest.skip("this build has no AOTInductor backend")
    try:
        return artifacts(workload, "vectorized", format="aoti")
    except Exception as exc:  # inductor needs a working C++ toolchain at export time
        if "AOTInductor could not compile" in str(exc):
            pytest.skip(f"AOTInductor cannot compile here: {str(exc).splitlines()[0]}")
        raise


@pytest.fixture(scope="session")
def aoti_w2(cpp_build, artifacts):
    """W2 (CNN, a 4-D image input) as an AOTInductor package: the one package these tests
    compile (1-2 min on two cores); the C++ backend is the same for every model."""
    return _aoti(cpp_build, artifacts, "w2")


def test_aoti_cnn_in_cpp_and_python_matches_onnx(cpp_build, aoti_w2, artifacts, tmp_path):
    """Same model, same seed: the AOTInductor package in illia-mc and in the Python runtime's AOTI
    backend == the ONNX export in Python."""
    onnx_art = artifacts("w2", "vectorized", format="onnx")
    want = python_summary(onnx_art.path, onnx_art.input)
    got = run_mc(cpp_build, aoti_w2, tmp_path / "cpp")
    assert_close(got, want, TOL)
    assert np.all(got["std"] > 0)
    assert_close(python_summary(aoti_w2.path, aoti_w2.input), want, TOL)
    # Dynamic samples and batch: chunks of 5 (the last one a single sample), a batch of one row.
    one = tmp_path / "one.npy"
    np.save(one, np.load(aoti_w2.input)[:1])
    got = run_mc(cpp_build, _Art(aoti_w2.path, one, "classification"), tmp_path / "one", "--chunk-size", "5")
    assert_close(got, python_summary(onnx_art.path, one), TOL)


def test_aoti_wrong_input_shape(cpp_build, aoti_w2, tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 1, 28, 27), np.float32))
    proc = _mc(cpp_build, aoti_w2.path, wrong, tmp_path / "o")
    assert proc.returncode == 2 and "dim 3 is 27, the artifact needs 28" in proc.stderr


def test_ort_only_refuses_aoti_package(cpp_ort_build, aoti_w2, tmp_path):
    proc = _mc(cpp_ort_build, aoti_w2.path, aoti_w2.input, tmp_path / "o")
    assert proc.returncode == 1
    assert "is an AOTInductor package, and this illia runtime was built without its backend" in proc.stderr


def _seq_noise_onnx(path):
    """A hand-made vectorized artifact whose noise follows 'batch' and 'seq_len' in both orders:
    out[s, b, t] = x[b, t] + a[s, b, t] + c[s, t, b]   (x: [batch, seq_len, 4])."""
    import onnx
    import torch

    from illia_export.artifact.manifest import Manifest, NoiseSpec, TensorSpec

    class SeqNoise(torch.nn.Module):
        def forward(self, x, a, c):
            return x.unsqueeze(0) + a + c.transpose(1, 2)

    torch.onnx.export(
        SeqNoise(),
        (torch.randn(3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 5, 3, 4)),
        str(path),
        input_names=["x", "eps_a", "eps_c"],
        output_names=["y"],
        dynamic_axes={
            "x": {0: "batch", 1: "seq_len"},
            "eps_a": {0: "samples", 1: "batch", 2: "seq_len"},
            "eps_c": {0: "samples", 1: "seq_len", 2: "batch"},
            "y": {0: "samples", 1: "batch", 2: "seq_len"},
        },
        dynamo=False,
    )
    model = onnx.load(str(path))
    manifest = Manifest(
        format="onnx",
        source="torch",
        inputs=[TensorSpec("x", ["batch", "seq_len", 4])],
        noise=[
            NoiseSpec("eps_a", "a", ["samples", "batch", "seq_len", 4], kind="draw"),
            NoiseSpec("eps_c", "c", ["samples", "seq_len", "batch", 4], kind="draw"),
        ],
        outputs=[TensorSpec("y", ["samples", "batch", "seq_len", 4])],
        sample_axis=0,
        task="regression",
        noise_generator="illia-noise-v2",
    )
    save_stamped(model, path, manifest.to_dict())  # the scheme-2 digest both runtimes check


def test_noise_dims_follow_seq_len_and_rows_are_keyed(cpp_ort_build, tmp_path):
    """Noise sized from any input dim ('seq_len' too), per-example noise row-keyed with the
    row's block in C order over the other dims, the batch dim first or not (docs/noise.md),
    computed here from the numpy reference of the row-keyed draw."""
    from illia_export.runtime.noise import row_words, standard_normal_rows

    path = tmp_path / "seq.onnx"
    _seq_noise_onnx(path)
    x = np.random.default_rng(0).standard_normal((6, 7, 4)).astype(np.float32)  # batch 6, seq_len 7
    np.save(tmp_path / "x.npy", x)
    S, words = 5, row_words(np.arange(6))
    a = standard_normal_rows("illia-noise-v2", SEED, 0, words, (7, 4), 0, S, use_kernel=False)  # [S, B, T, 4]
    c = standard_normal_rows("illia-noise-v2", SEED, 1, words, (7, 4), 0, S, use_kernel=False)  # [S, B, T, 4]
    values = (x[None] + a + c).astype(np.float64)  # c's rows, moved to [S, T, B, 4] and back by the graph
    want = {"mean": values.mean(0), "std": values.std(0)}
    for strategy in ("fresh", "bank"):
        got = run_mc(
            cpp_ort_build, _Art(path, tmp_path / "x.npy"), tmp_path / strategy, "--strategy", strategy,
            "--chunk-size", 2, samples=S,
        )
        assert_close(got, want, 1e-5)
