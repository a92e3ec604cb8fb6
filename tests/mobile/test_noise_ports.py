"""The illia-noise-v1 and -v2 ports in examples/mobile/IlliaNoise.java (what docs/mobile.md gives
Android developers, line for line the Kotlin listing's arithmetic) against the numpy references."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from illia_export.runtime.noise import standard_normal, standard_normal_v2

MOBILE = Path(__file__).resolve().parents[2] / "examples" / "mobile"


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory):
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac/java) installed: the Java port of illia-noise-v1 cannot be run here")
    out = tmp_path_factory.mktemp("java")
    subprocess.run(["javac", "-d", str(out), str(MOBILE / "IlliaNoise.java")], check=True, timeout=120)
    return out


@pytest.mark.parametrize(
    "seed,stream,n,start,count",
    [(0, 0, 5, 0, 2), (42, 3, 3, 7, 1), (7, 1, 20000, 0, 3), (2**62 + 5, 9, 1, 100, 50)],
)
def test_java_port_matches_numpy(java_classes, seed, stream, n, start, count):
    proc = subprocess.run(
        [
            "java",
            "-cp",
            str(java_classes),
            "IlliaNoise",
            str(seed),
            str(stream),
            str(n),
            str(start),
            str(count),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = np.array([int(v) for v in proc.stdout.split()], dtype=np.int64).astype(np.uint32).view(np.float32)
    want = standard_normal(seed, stream, (n,), start, count).reshape(-1)
    assert got.shape == want.shape
    # JVM and numpy libm may differ by an ulp in float64 before the float32 rounding.
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


@pytest.mark.parametrize(
    "seed,stream,n,start,count",
    [
        (0, 0, 5, 0, 2),
        (42, 3, 4, 7, 1),
        (7, 1, 20000, 0, 3),
        (2**62 + 5, 9, 1, 100, 50),
        (1, 4, 1000, 4_294_966, 3),
    ],
)
def test_java_v2_port_matches_numpy(java_classes, seed, stream, n, start, count):
    # the last case crosses element counter 2**32
    proc = subprocess.run(
        [
            "java",
            "-cp",
            str(java_classes),
            "IlliaNoise",
            str(seed),
            str(stream),
            str(n),
            str(start),
            str(count),
            "illia-noise-v2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = np.array([int(v) for v in proc.stdout.split()], dtype=np.int64).astype(np.uint32).view(np.float32)
    want = standard_normal_v2(seed, stream, (n,), start, count).reshape(-1)
    assert got.shape == want.shape
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_listings_share_the_constants():
    """The Kotlin and Swift listings use the spec's constants (they cannot be compiled here)."""
    kt = (MOBILE / "IlliaNoise.kt").read_text()
    swift = (MOBILE / "IlliaNoise.swift").read_text().replace("_", "")
    for const in ("9E3779B97F4A7C15", "BF58476D1CE4E5B9", "94D049BB133111EB", "0xFFFFFF", "16777216.0"):
        assert const in kt and const in swift, const
    # v2: lowbias32 multipliers, the counter's high-word constant, AS241 PPND7 and its split
    java = (MOBILE / "IlliaNoise.java").read_text()
    for const in (
        "21F0AAAD",
        "735A2D97",
        "9E3779B9",
        "322122547",
        "4294967296.0",
        "59.109374720",
        "0.12021132975",
    ):
        assert const in kt and const in swift and const in java, const
    for shift in ("shr 30", "shr 27", "shr 31", "shr 40", "shr 16"):
        assert shift in kt
    for shift in (">> 30", ">> 27", ">> 31", ">> 40", ">> 16"):
        assert shift in swift


@pytest.mark.parametrize("generator", ["illia-noise-v1", "illia-noise-v2"])
@pytest.mark.parametrize(
    "seed,stream,ids,pre,post,start,count",
    [
        (0, 0, [0, 1, 2], 1, 5, 0, 2),  # "batch" first: ids 0..B-1, the default layout
        (3, 2, [7, -1, 2**40], 3, 4, 5, 2),  # "batch" after a dim ([seq, batch, feat]); odd and negative ids
        (11, 1, [5, 5], 2, 3, 0, 1),  # equal ids get equal noise
    ],
)
def test_java_row_keyed_draws_match_numpy(java_classes, generator, seed, stream, ids, pre, post, start, count):
    """IlliaNoise.standardNormalRows lays out per-example noise exactly as the Python runtime
    (numpy reference of standard_normal_rows, batch dim moved into place), element by element."""
    from illia_export.runtime.noise import row_words, standard_normal_rows

    proc = subprocess.run(
        ["java", "-cp", str(java_classes), "IlliaNoise", "rows", str(seed), str(stream), ",".join(map(str, ids)),
         str(pre), str(post), str(start), str(count), generator],
        capture_output=True, text=True, timeout=120, check=True,
    )
    got = np.array([int(v) for v in proc.stdout.split()], dtype=np.int64).astype(np.uint32).view(np.float32)
    # [count, B, pre, post] -> the runtime's [count, pre, B, post] (batch dim at its axis)
    ref = standard_normal_rows(generator, seed, stream, row_words(np.array(ids, dtype=np.int64)), (pre, post), start,
                               count, use_kernel=False)
    want = np.moveaxis(ref, 1, 2).reshape(-1)
    assert got.shape == want.shape
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    if ids == [5, 5]:
        rows = got.reshape(count, pre, 2, post)
        assert np.array_equal(rows[:, :, 0], rows[:, :, 1])
