"""Build of the compiled noise kernel (everything else is in pyproject.toml).

``pip install -e .`` / ``pip install .`` compile ``illia_export/runtime/_noisekernel.cpp`` (a
plain CPython extension, C++17, no other dependency). The extension is optional: where no C++
compiler exists the install still succeeds and the runtime falls back to the torch/numpy
ports (same numbers, slower); ``illia_export.runtime.noise.kernel_status()`` says which.
"""

import sys

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

setup(
    ext_modules=[
        Extension(
            "illia_export.runtime._noisekernel",
            sources=["illia_export/runtime/_noisekernel.cpp"],
            language="c++",
            extra_compile_args=flags,
            extra_link_args=link,
            optional=True,
        )
    ]
)
