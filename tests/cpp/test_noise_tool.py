"""The C++ `illia-noise` tool (runtimes/cpp/tools/illia_noise.cpp with src/noise.cpp) against the
Python references, for both generators. Built here with the C++ compiler alone (noise, npy and
array sources need no LibTorch), in a few seconds, so it runs wherever g++/clang++ exists.

Both runtimes compile one noise core, runtimes/cpp/include/illia/noise_core.h (the Python
extension illia_export/runtime/_noisekernel.cpp includes it too): the tool and the Python kernel
give the same bits, and no other C++ file carries the generator arithmetic."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from illia_export.runtime.noise import standard_normal, standard_normal_v2

CPP = Path(__file__).resolve().parents[2] / "runtimes" / "cpp"


@pytest.fixture(scope="module")
def noise_tool(tmp_path_factory) -> Path:
    cxx = next((shutil.which(c) for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if cxx is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++): the C++ noise tool cannot be built here")
    exe = tmp_path_factory.mktemp("illia-noise") / "illia-noise"
    sources = [CPP / "src" / f for f in ("noise.cpp", "npy.cpp", "array.cpp")] + [
        CPP / "tools" / "illia_noise.cpp"
    ]
    # the kernel's flags (setup.py, CMakeLists.txt): no errno/trapping math, no FMA contraction
    flags = ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-pthread"]
    cmd = [cxx, *flags, f"-I{CPP / 'include'}", *map(str, sources), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exe


def _run(exe: Path, out: Path, *args) -> np.ndarray:
    proc = subprocess.run(
        [str(exe), *map(str, args[:5]), str(out), *map(str, args[5:])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


CASES = [
    (0, 0, 5, 0, 2),
    (42, 3, 4, 7, 1),
    (7, 2, 784 * 128, 0, 2),
    (2**40 + 3, 1, 1, 5, 9),
    (1, 4, 1000, 4_294_966, 3),
]


@pytest.mark.parametrize("seed,stream,n,start,count", CASES)
def test_cpp_v2_matches_python(noise_tool, tmp_path, seed, stream, n, start, count):
    got = _run(noise_tool, tmp_path / "v2.npy", seed, stream, n, start, count, "illia-noise-v2")
    want = standard_normal_v2(seed, stream, (n,), start, count)
    assert got.dtype == np.float32 and got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))
    assert err.max() < 6e-7


@pytest.mark.parametrize("seed,stream,n,start,count", CASES[:4])
def test_cpp_v1_is_still_the_default(noise_tool, tmp_path, seed, stream, n, start, count):
    got = _run(noise_tool, tmp_path / "v1.npy", seed, stream, n, start, count)
    np.testing.assert_array_max_ulp(got, standard_normal(seed, stream, (n,), start, count), maxulp=1)


def test_cpp_refuses_unknown_generators(noise_tool, tmp_path):
    proc = subprocess.run(
        [str(noise_tool), "0", "0", "3", "0", "1", str(tmp_path / "x.npy"), "illia-noise-v9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "unknown noise generator 'illia-noise-v9'" in proc.stderr


@pytest.mark.parametrize("generator", ["illia-noise-v1", "illia-noise-v2"])
@pytest.mark.parametrize("seed,stream,n,start,count", CASES)
def test_cpp_and_python_kernel_give_the_same_bits(noise_tool, tmp_path, generator, seed, stream, n, start, count):
    """One core, two builds: illia-noise and the Python extension write identical floats."""
    from illia_export.runtime import noise

    if not noise.kernel_available():
        pytest.skip(f"the Python noise kernel is not built here ({noise.kernel_status()})")
    kernel = noise._kernel
    got = _run(noise_tool, tmp_path / "c.npy", seed, stream, n, start, count, generator)
    want = np.empty((count, n), np.float32)
    fill = kernel.fill_v2 if generator == "illia-noise-v2" else kernel.fill_v1
    fill(noise.stream_key(seed, stream), n, start, count, want.ctypes.data, 0, 0, 2)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_one_noise_core():
    """The generator arithmetic lives in noise_core.h only; both runtimes include it."""
    import re

    repo = CPP.parents[1]
    core = CPP / "include" / "illia" / "noise_core.h"
    users = [CPP / "src" / "noise.cpp", repo / "illia_export" / "runtime" / "_noisekernel.cpp"]
    for user in users:
        assert '#include "illia/noise_core.h"' in user.read_text(), user
    definition = re.compile(r"\b(uint32_t|float|double|uint64_t)\s+(lowbias32|v2_transform|log_pos|log_pos64|v1_pair)\s*\(")
    sources = [p for p in repo.glob("runtimes/cpp/**/*") if p.suffix in (".h", ".cpp")]
    sources += [repo / "illia_export" / "runtime" / "_noisekernel.cpp"]
    defining = sorted({str(p.relative_to(repo)) for p in sources if definition.search(p.read_text())})
    assert defining == [str(core.relative_to(repo))], defining
    assert "illia/noise_core.h" in (repo / "setup.py").read_text()  # the extension's include path
