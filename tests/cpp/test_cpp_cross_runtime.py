"""One seed, one answer in every runtime (#20 item 1): an MC-dropout MLP and a bayesian-torch
Flipout CNN, both with per-example noise (dropout masks, Flipout signs) that every runtime keys
by row (ids 0..B-1 by default; docs/noise.md, "Row-keyed noise").

The same seed gives the same probabilities in the Python API (``row_ids=range(B)``), the CLI
``illia-export predict`` and the C++ ``illia-mc``; the Java port draws the same per-example
noise element by element as Python's numpy reference. The C++ answer of a row does not depend on
the batch it comes in (``--row-ids``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cpp.test_cpp_runtime import assert_close

pytestmark = pytest.mark.cpp

SAMPLES = 12
SEED = 5
BATCH = 8
TOL = 1e-5
MOBILE = Path(__file__).resolve().parents[2] / "examples" / "mobile"


def _dropout_mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return model, torch.randn(BATCH, 6, generator=torch.Generator().manual_seed(1)), {"mc_dropout": True}


def _flipout_cnn():
    pytest.importorskip("bayesian_torch", reason="bayesian-torch is not installed (pip install bayesian-torch)")
    import torch
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    prior = {
        "prior_mu": 0.0,
        "prior_sigma": 1.0,
        "posterior_mu_init": 0.0,
        "posterior_rho_init": -2.0,
        "type": "Flipout",
        "moped_enable": False,
    }
    dnn_to_bnn(model, prior)
    return model, torch.randn(BATCH, 1, 6, 6, generator=torch.Generator().manual_seed(1)), {}


MODELS = {"dropout_mlp": _dropout_mlp, "flipout_cnn": _flipout_cnn}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    """(ONNX path, x.npy) of each model, exported once per session (vectorized, classifier)."""
    import illia_export

    root = tmp_path_factory.mktemp(f"cross-{request.param}")
    model, x, kwargs = MODELS[request.param]()
    path = root / f"{request.param}.onnx"
    illia_export.export(model, (x,), path, format="onnx", samples="vectorized", task="classification", **kwargs)
    npy = root / "x.npy"
    np.save(npy, x.numpy())
    return path, npy


def _per_example_specs(path):
    """(stream, spec, pre, post) of the noise inputs with a "batch" dim, pre/post the element
    counts of the dims before and after it (batch size BATCH)."""
    from illia_export.artifact.manifest import read_manifest

    manifest = read_manifest(path)
    out = []
    for k, spec in enumerate(manifest.noise):
        dims = [d for d in spec.shape if d != "samples"]
        if "batch" in dims:
            pos = dims.index("batch")
            out.append((k, spec, int(np.prod(dims[:pos], dtype=np.int64)), int(np.prod(dims[pos + 1 :], dtype=np.int64))))
    return manifest, out


def _python(path, x, row_ids=None) -> dict:
    from illia_export.runtime import load

    p = load(path).predict(x, num_samples=SAMPLES, seed=SEED, row_ids=row_ids)
    return {
        "mean": p.mean,
        "std": p.std,
        "probabilities": p.probabilities,
        "entropy": p.predictive_entropy,
        "expected_entropy": p.expected_entropy,
        "mutual_information": p.mutual_information,
    }


def _illia_mc(build, path, x_npy, out, *extra) -> dict:
    proc = build.run(
        build.illia_mc, path, "--input", x_npy, "--samples", SAMPLES, "--seed", SEED, "--out", out, *extra
    )
    assert proc.returncode == 0, proc.stderr
    names = ["mean", "std", "probabilities", "entropy", "expected_entropy", "mutual_information"]
    return {n: np.load(out / f"{n}.npy").astype(np.float64) for n in names}


def test_same_seed_same_probabilities_everywhere(cpp_ort_build, exported, tmp_path):
    path, x_npy = exported
    manifest, keyed = _per_example_specs(path)
    assert keyed, f"{path.name}: no per-example noise, the test would not test row keys ({manifest.noise})"
    x = np.load(x_npy)

    api = _python(path, x, row_ids=np.arange(BATCH))
    # the layout matters: per-example noise keyed by row differs from one drawn over the batch
    # (so agreeing below is not an accident of the model ignoring its noise)
    assert np.all(api["std"].max(-1) > 1e-3)

    cli_out = tmp_path / "cli.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "illia_export.cli", "predict", str(path), "--input", str(x_npy), "--samples",
         str(SAMPLES), "--seed", str(SEED), "--output", str(cli_out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    cli = np.load(cli_out)
    np.testing.assert_allclose(cli["probabilities"], api["probabilities"], atol=TOL, rtol=0)

    cpp = _illia_mc(cpp_ort_build, path, x_npy, tmp_path / "cpp")
    assert_close(cpp, {k: np.asarray(v, np.float64) for k, v in api.items()}, TOL)
    assert np.array_equal(cpp["probabilities"].argmax(-1), api["probabilities"].argmax(-1))


def test_cpp_row_answer_does_not_depend_on_its_batch(cpp_ort_build, exported, tmp_path):
    """Rows 3..7 alone, with --row-ids 3..7, give the answers they get inside the full batch
    (also drawn in chunks of 5 samples: a row's noise continues at the chunk's first sample)."""
    path, x_npy = exported
    full = _illia_mc(cpp_ort_build, path, x_npy, tmp_path / "full")
    part_x, ids = tmp_path / "part.npy", tmp_path / "ids.npy"
    np.save(part_x, np.load(x_npy)[3:])
    np.save(ids, np.arange(3, BATCH))
    part = _illia_mc(cpp_ort_build, path, part_x, tmp_path / "part", "--row-ids", ids, "--chunk-size", 5)
    assert_close(part, {k: v[3:] for k, v in full.items()}, TOL)
    # without the ids the rows are keyed 0..4: other noise, other answers
    plain = _illia_mc(cpp_ort_build, path, part_x, tmp_path / "plain")
    assert not np.allclose(plain["probabilities"], full["probabilities"][3:], atol=1e-4)


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory):
    import shutil

    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac/java) installed: the Java port cannot be run here")
    out = tmp_path_factory.mktemp("java-cross")
    subprocess.run(["javac", "-d", str(out), str(MOBILE / "IlliaNoise.java")], check=True, timeout=120)
    return out


def test_java_draws_the_same_per_example_noise(java_classes, exported):
    """The Java port's row-keyed draws of each per-example noise input of the artifact equal
    Python's numpy reference (the noise the Python runtime feeds), element by element."""
    from illia_export.runtime.noise import row_words, standard_normal_rows

    path, _ = exported
    manifest, keyed = _per_example_specs(path)
    assert keyed
    ids = np.arange(BATCH)
    for k, spec, pre, post in keyed:
        proc = subprocess.run(
            ["java", "-cp", str(java_classes), "IlliaNoise", "rows", str(SEED), str(k), ",".join(map(str, ids)),
             str(pre), str(post), "0", str(SAMPLES), manifest.noise_generator],
            capture_output=True, text=True, timeout=120, check=True,
        )
        got = np.array([int(v) for v in proc.stdout.split()], dtype=np.int64).astype(np.uint32).view(np.float32)
        ref = standard_normal_rows(manifest.noise_generator, SEED, k, row_words(ids), (pre, post), 0, SAMPLES,
                                   use_kernel=False)
        want = np.moveaxis(ref, 1, 2).reshape(-1)  # [S, pre, B, post]: the batch dim at its axis
        assert got.shape == want.shape, spec.name
        np.testing.assert_array_max_ulp(got, want, maxulp=1)
