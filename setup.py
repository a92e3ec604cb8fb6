"""Build of the compiled noise kernel (everything else is in pyproject.toml).

``pip install -e .`` / ``pip install .`` compile ``illia_export/runtime/_noisekernel.cpp`` (a
plain CPython extension, C++17, no other dependency). Its kernel is the header
``runtimes/cpp/include/illia/noise_core.h``, which the C++ runtime includes too (one noise core
for both); ``depends`` puts the header into the sdist, so a wheel built from the sdist finds it. The extension is optional: where no C++
compiler exists the install still succeeds and the runtime falls back to the torch/numpy
ports (same numbers, slower); ``illia_export.runtime.noise.kernel_status()`` says which.
"""

import sys
from pathlib import Path

from setuptools import Extension, setup

if sys.platform == "win32":
    flags = ["/O2", "/std:c++17"]
    link = []
else:
    # -fno-math-errno and -fno-trapping-math let sqrt and the branch-free selects vectorize (no
    # -ffast-math: it would change the process's FP mode); -ffp-contract=off (no FMA) keeps every
    # element bit-identical between the AVX-512, AVX2 and scalar code paths and across CPUs.
    flags = ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-pthread"]
    link = ["-pthread"]

# Relative to this file (setuptools wants relative paths; pip runs setup.py from its folder).
CORE_INCLUDE = "runtimes/cpp/include"
CORE_HEADER = f"{CORE_INCLUDE}/illia/noise_core.h"
if not (Path(__file__).resolve().parent / CORE_HEADER).is_file():
    raise SystemExit(f"setup.py: {CORE_HEADER} is missing (the noise kernel's source); build from a full checkout or sdist")

setup(
    ext_modules=[
        Extension(
            "illia_export.runtime._noisekernel",
            sources=["illia_export/runtime/_noisekernel.cpp"],
            include_dirs=[CORE_INCLUDE],
            depends=[CORE_HEADER],
            language="c++",
            extra_compile_args=flags,
            extra_link_args=link,
            optional=True,
        )
    ]
)
