"""Every user error of the CLI is one line and exit 2; the JAX factory convention."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ROOT, assert_one_line_error, cli


def test_bad_invocations_are_one_line(art, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 6), np.float32))
    onnx_path = str(art["mlp_onnx_vectorized"])
    cases = [
        ("predict", str(tmp_path / "missing.onnx"), "-i", str(x)),
        ("predict", onnx_path, "-i", str(tmp_path / "missing.npy")),
        ("predict", onnx_path, "-i", str(x), "-S", "0"),
        ("predict", onnx_path, "-i", str(x), "--seed", "-1"),
        ("predict", onnx_path, "-i", str(x), "--chunk-size", "0"),
        ("predict", onnx_path, "-i", str(x), "-o", str(tmp_path / "out.txt")),
        ("predict", onnx_path, "-i", str(x), "--strategy", "local", "-S", "2"),
        ("inspect", str(tmp_path / "nothing.tflite")),
        ("inspect", str(x)),
        (str(art["mlp_source"]), "--input-shape", "2,six"),
        (str(art["mlp_source"]), "--input-shape", "2,6", "--dtype", "complex64"),
        ("nomodule_xyz:make", "--weights", str(x), "--input-shape", "2,6", "-o", str(tmp_path / "a.onnx")),
    ]
    np.save(tmp_path / "wrong.npy", np.ones((2, 5), np.float32))
    cases.append(("predict", onnx_path, "-i", str(tmp_path / "wrong.npy")))
    for args in cases:
        r = cli(*args)
        if args[:2] == ("predict", onnx_path) and "local" in args:
            assert r.returncode in (0, 2)  # the MLP has a local variant; only a refusal must be one line
            if r.returncode == 0:
                continue
        assert_one_line_error(r)


@pytest.fixture(scope="module")
def jax_project(tmp_path_factory):
    pytest.importorskip("flax")
    pytest.importorskip("tensorflow")
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "exporters" / "jax"))
    from models import MLP

    from illia_export.exporters.jax.export import save_jax_weights

    proj = tmp_path_factory.mktemp("jaxproj")
    (proj / "mymodels.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests' / 'exporters' / 'jax')!r})\n"
        "from models import MLP\n\n"
        "def make():\n    return MLP()\n\n"
        "def needs(width):\n    return MLP()\n"
    )
    save_jax_weights(MLP(), proj / "w.npz")
    return proj


def test_jax_factory_in_the_current_folder_is_found(jax_project):
    out = jax_project / "m.tflite"
    r = cli(
        "mymodels:make",
        "--weights",
        "w.npz",
        "--format",
        "tflite",
        "--input-shape",
        "2,12",
        "-o",
        "m.tflite",
        cwd=jax_project,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.exists()
    r = cli("inspect", "m.tflite", cwd=jax_project)
    assert r.returncode == 0 and "verified" in r.stdout


def test_jax_factory_that_needs_arguments_is_one_line(jax_project):
    r = cli(
        "mymodels:needs",
        "--weights",
        "w.npz",
        "--format",
        "tflite",
        "--input-shape",
        "2,12",
        "-o",
        "n.tflite",
        cwd=jax_project,
    )
    assert_one_line_error(r, "no arguments")
    assert not (jax_project / "n.tflite").exists()


def test_jax_output_guards(jax_project):
    for out in (".", str(jax_project), "w.npz"):
        r = cli(
            "mymodels:make",
            "--weights",
            "w.npz",
            "--format",
            "onnx",
            "--input-shape",
            "2,12",
            "-o",
            out,
            cwd=jax_project,
        )
        assert_one_line_error(r)
    assert (jax_project / "mymodels.py").exists() and (jax_project / "w.npz").exists()
