"""`illia-mc` draws the noise with the generator the manifest names (illia-noise-v2 here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cpp.conftest import Artifact
from tests.cpp.test_cpp_runtime import SAMPLES, SEED, assert_close, run_mc

pytestmark = pytest.mark.cpp


def _with_generator(art: Artifact, dst, generator: str) -> Artifact:
    """A copy of a TorchScript artifact whose embedded manifest names `generator`."""
    import torch

    files = {"illia_manifest.json": ""}
    module = torch.jit.load(str(art.path), _extra_files=files)
    manifest = json.loads(files["illia_manifest.json"])
    manifest["noise_generator"] = generator
    torch.jit.save(module, str(dst), _extra_files={"illia_manifest.json": json.dumps(manifest)})
    return Artifact(dst, art.input, art.task)


@pytest.mark.parametrize("samples", ["vectorized", "per-call"])
def test_illia_mc_uses_the_manifest_generator(cpp_build, artifacts, tmp_path, samples):
    import torch

    from illia_export.artifact.manifest import read_manifest
    from illia_export.runtime.noise import standard_normal_v2

    art = _with_generator(artifacts("w1", samples), tmp_path / "w1_v2.pt", "illia-noise-v2")
    manifest = read_manifest(art.path)
    assert manifest.noise_generator == "illia-noise-v2"
    module = torch.jit.load(str(art.path))
    x = torch.from_numpy(np.load(art.input))
    noise = [standard_normal_v2(SEED, k, n.event_shape, 0, SAMPLES) for k, n in enumerate(manifest.noise)]
    with torch.no_grad():
        if manifest.vectorized:
            out = module(x, *[torch.from_numpy(a) for a in noise]).numpy()
        else:
            out = np.stack(
                [module(x, *[torch.from_numpy(a[s]) for a in noise]).numpy() for s in range(SAMPLES)]
            )
    values = out.astype(np.float64)
    z = values - values.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    mean = probs.mean(0)
    entropy = -(mean * np.log(mean)).sum(-1)
    expected = (-(probs * np.log(probs)).sum(-1)).mean(0)
    want = {
        "mean": values.mean(0),
        "std": values.std(0),
        "probabilities": mean,
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": np.maximum(entropy - expected, 0.0),
    }
    assert_close(run_mc(cpp_build, art, tmp_path / "v2"), want)


def test_illia_mc_refuses_an_unknown_generator(cpp_build, artifacts, tmp_path):
    art = _with_generator(artifacts("w1"), tmp_path / "w1_v9.pt", "illia-noise-v9")
    args = [cpp_build.illia_mc, art.path, "--input", art.input, "--samples", 2, "--seed", 0, "--out", tmp_path / "o"]
    # the edited generator is a sampling field: the scheme-2 digest refuses the file first
    proc = cpp_build.run(*args)
    assert proc.returncode == 1 and "do not match the digest" in proc.stderr
    # unchecked, on request: then the generator itself is refused by name
    proc = cpp_build.run(*args, "--no-digest-check")
    assert proc.returncode == 1 and "noise_generator 'illia-noise-v9' is not supported" in proc.stderr
