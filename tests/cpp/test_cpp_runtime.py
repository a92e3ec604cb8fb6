"""The C++ runtime (runtimes/cpp) against Python on the same artifacts and seeds."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cpp

SAMPLES = 16
SEED = 7
TOL = 1e-4


def run_mc(cpp_build, artifact, out_dir, *extra, samples=SAMPLES, seed=SEED):
    proc = cpp_build.run(
        cpp_build.illia_mc,
        artifact.path,
        "--input",
        artifact.input,
        "--samples",
        samples,
        "--seed",
        seed,
        "--out",
        out_dir,
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    names = ["mean", "std"]
    if artifact.task == "classification":
        names += ["probabilities", "entropy", "expected_entropy", "mutual_information"]
    result = {name: np.load(out_dir / f"{name}.npy") for name in names}
    for name, arr in result.items():
        assert arr.dtype == np.float32, name
    return result


def assert_close(got: dict, want: dict, tol: float = TOL) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        diff = float(np.abs(got[name].astype(np.float64) - want[name]).max())
        assert diff <= tol, f"{name}: max abs diff {diff:.3g} > {tol}"


@pytest.mark.parametrize("samples", ["vectorized", "per-call"])
@pytest.mark.parametrize("workload", ["w1", "w2"])
def test_matches_python_reference(cpp_build, artifacts, reference, tmp_path, workload, samples):
    art = artifacts(workload, samples)
    got = run_mc(cpp_build, art, tmp_path / "fresh")
    assert_close(got, reference(art, SAMPLES, SEED))
    assert np.all(got["std"] > 0), "weight noise must make the samples differ"
    # bank: the same S draws, cached once -> the same noise for one call. (Outputs may still
    # differ in the last bit: BLAS may pick another thread split between two processes.)
    bank = run_mc(cpp_build, art, tmp_path / "bank", "--strategy", "bank")
    for name in got:
        np.testing.assert_allclose(bank[name], got[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", ["fresh", "bank"])
@pytest.mark.parametrize("samples", ["vectorized", "per-call"])
def test_matches_python_runtime(cpp_build, artifacts, tmp_path, samples, strategy):
    """Same artifact, seed and strategy: the C++ tool and illia_export.runtime agree."""
    from illia_export.runtime import load

    art = artifacts("w2", samples)
    got = run_mc(cpp_build, art, tmp_path, "--strategy", strategy)
    pred = load(art.path).predict(np.load(art.input), num_samples=SAMPLES, seed=SEED, strategy=strategy)
    want = {
        "mean": pred.mean,
        "std": pred.std,
        "probabilities": pred.probabilities,
        "entropy": pred.predictive_entropy,
        "expected_entropy": pred.expected_entropy,
        "mutual_information": pred.mutual_information,
    }
    assert_close(got, {k: np.asarray(v, np.float64) for k, v in want.items()})


@pytest.mark.parametrize("samples", ["vectorized", "per-call"])
def test_lstm_int64_tokens_and_several_outputs(cpp_build, artifacts, tmp_path, samples):
    """W3 (LSTM): int64 inputs, a tuple of outputs (each summarized), any sequence length."""
    from illia_export.runtime import load

    art = artifacts("w3", samples)
    got = run_mc(cpp_build, art, tmp_path / "a")
    pred = load(art.path).predict(np.load(art.input), num_samples=SAMPLES, seed=SEED)
    assert_close(
        {k: got[k] for k in ("mean", "std", "mutual_information")},
        {"mean": pred.mean, "std": pred.std, "mutual_information": pred.mutual_information},
    )
    for name in ("output_1", "output_2"):  # h and c: mean_<name>.npy / std_<name>.npy
        raw = pred.outputs[name].astype(np.float64)
        np.testing.assert_allclose(
            np.load(tmp_path / "a" / f"mean_{name}.npy"), raw.mean(0), rtol=0, atol=TOL
        )
        np.testing.assert_allclose(np.load(tmp_path / "a" / f"std_{name}.npy"), raw.std(0), rtol=0, atol=TOL)

    longer = tmp_path / "tokens.npy"
    np.save(longer, np.random.default_rng(0).integers(0, 100, (3, 20)))
    proc = cpp_build.run(
        cpp_build.illia_mc, art.path, "--input", longer, "--samples", 2, "--seed", 0, "--out", tmp_path / "b"
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "b" / "mean.npy").shape == (3, 5)

    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((3, 20), np.float32))
    proc = cpp_build.run(
        cpp_build.illia_mc, art.path, "--input", floats, "--samples", 2, "--seed", 0, "--out", tmp_path / "c"
    )
    assert proc.returncode == 2 and "dtype float32, the artifact needs int64" in proc.stderr


def test_regression_task_summarizes_raw_outputs(cpp_build, artifacts, reference, tmp_path):
    art = artifacts("w1", "vectorized", task="regression")
    got = run_mc(cpp_build, art, tmp_path)
    assert not (tmp_path / "entropy.npy").exists()
    assert_close(got, reference(art, SAMPLES, SEED))


def test_chunking_and_seed(cpp_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized")
    whole = run_mc(cpp_build, art, tmp_path / "whole")
    chunked = run_mc(cpp_build, art, tmp_path / "chunked", "--chunk-size", "5")
    for name in whole:  # sample s always gets counter block s: chunking changes nothing but summation order
        np.testing.assert_allclose(chunked[name], whole[name], rtol=0, atol=1e-6)
    other = run_mc(cpp_build, art, tmp_path / "other", seed=SEED + 1)
    assert np.abs(other["mean"] - whole["mean"]).max() > 1e-6


@pytest.mark.parametrize(
    "seed,stream,n,start,count",
    [(0, 0, 7, 0, 3), (7, 2, 784 * 128, 0, 2), (123456789, 5, 10, 13, 4), (2**40 + 3, 1, 1, 5, 9)],
)
def test_noise_matches_numpy_generator(cpp_build, tmp_path, seed, stream, n, start, count):
    from illia_export.runtime.noise import standard_normal

    out = tmp_path / "noise.npy"
    proc = cpp_build.run(cpp_build.illia_noise, seed, stream, n, start, count, out)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    want = standard_normal(seed, stream, (n,), start, count)
    assert got.dtype == np.float32 and got.shape == want.shape
    # Same integer stream; float64 libm vs numpy's cos/sin/log may differ by an ulp before the
    # float32 rounding, so allow 1 float32 ulp.
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_example_program(cpp_build, artifacts):
    art = artifacts("w2", "vectorized")
    proc = cpp_build.run(cpp_build.example, art.path, art.input)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 8 and all("mutual_information=" in line for line in lines)


# --- errors: stderr message, non-zero exit -----------------------------------------------------


def test_error_bad_artifact(cpp_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a TorchScript archive")
    proc = cpp_build.run(
        cpp_build.illia_mc, bad, "--input", art.input, "--samples", 2, "--seed", 0, "--out", tmp_path
    )
    assert proc.returncode == 1
    assert "not a loadable TorchScript archive" in proc.stderr
    missing = cpp_build.run(
        cpp_build.illia_mc,
        tmp_path / "missing.pt",
        "--input",
        art.input,
        "--samples",
        2,
        "--seed",
        0,
        "--out",
        tmp_path,
    )
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_error_missing_manifest(cpp_build, artifacts, tmp_path):
    import torch

    art = artifacts("w1", "per-call")
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.load(str(art.path)), str(plain))  # drops the extra files
    proc = cpp_build.run(
        cpp_build.illia_mc, plain, "--input", art.input, "--samples", 2, "--seed", 0, "--out", tmp_path
    )
    assert proc.returncode == 1
    assert "carries no illia-export manifest" in proc.stderr


def test_error_wrong_input_shape(cpp_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 783), np.float32))
    proc = cpp_build.run(
        cpp_build.illia_mc, art.path, "--input", wrong, "--samples", 2, "--seed", 0, "--out", tmp_path / "o"
    )
    assert proc.returncode == 2  # the user's input is refused
    assert "dim 1 is 783, the artifact needs 784" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_error_unreadable_npy(cpp_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    proc = cpp_build.run(
        cpp_build.illia_mc, art.path, "--input", junk, "--samples", 2, "--seed", 0, "--out", tmp_path
    )
    assert proc.returncode == 2 and "junk.npy" in proc.stderr
    texts = tmp_path / "s.npy"
    np.save(texts, np.array(["a", "b"]))
    proc = cpp_build.run(
        cpp_build.illia_mc, art.path, "--input", texts, "--samples", 2, "--seed", 0, "--out", tmp_path
    )
    assert proc.returncode == 2 and "unsupported dtype" in proc.stderr


def test_usage_errors(cpp_build, artifacts, tmp_path):
    art = artifacts("w1", "vectorized")
    proc = cpp_build.run(cpp_build.illia_mc, art.path, "--input", art.input, "--seed", 0, "--out", tmp_path)
    assert proc.returncode == 2 and "missing --samples" in proc.stderr
    proc = cpp_build.run(
        cpp_build.illia_mc, art.path, "--input", art.input, "--samples", "0", "--seed", 0, "--out", tmp_path
    )
    assert proc.returncode == 2 and "--samples needs an integer >= 1" in proc.stderr


def test_ort_option_needs_onnxruntime_root(cpp_build, tmp_path):
    import shutil
    from pathlib import Path

    runtime_dir = Path(__file__).resolve().parents[2] / "runtimes" / "cpp"
    proc = cpp_build.run(
        shutil.which("cmake"), "-S", runtime_dir, "-B", tmp_path / "b", "-DILLIA_WITH_ORT=ON"
    )
    assert proc.returncode != 0
    assert "ILLIA_WITH_ORT=ON needs -DONNXRUNTIME_ROOT" in proc.stderr
    assert "-DONNXRUNTIME_INCLUDE_DIR" in proc.stderr
    proc = cpp_build.run(
        shutil.which("cmake"),
        "-S",
        runtime_dir,
        "-B",
        tmp_path / "c",
        "-DILLIA_WITH_TORCH=OFF",
        "-DILLIA_WITH_ORT=ON",
    )
    assert proc.returncode != 0 and "ILLIA_WITH_AOTI=ON needs ILLIA_WITH_TORCH=ON" in proc.stderr
