"""Session-wide caches of the torch exporter tests.

The parity matrix (test_parity, test_families) is built from the registry: each (case, format,
sample mode) is exported once per session, whichever test asks for it first, each written
artifact is loaded once for all the draws checked against it (TorchScript excepted, see
`SessionCache.run`), and each case's own Monte Carlo reference is drawn once. A module-scoped cache exported the same artifacts again in every module
that used them and reloaded an artifact (``torch.export.load``, an AOTInductor package, an ONNX
session) for every single noise draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from illia_export.exporters.torch.writers import ArtifactRunner


class SessionCache:
    """Values computed once per test session, keyed by what they depend on."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._values: dict[Hashable, Any] = {}
        self._runners: dict[tuple[str, str, tuple[str, ...]], ArtifactRunner] = {}

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value for `key`, computed by `compute()` the first time it is asked for.

        A failure is kept too: every test that needs a failed export fails with its error
        instead of exporting again (into a folder that already exists).
        """
        if key not in self._values:
            try:
                self._values[key] = (True, compute())
            except Exception as exc:
                self._values[key] = (False, exc)
        ok, value = self._values[key]
        if not ok:
            raise value
        return value

    def folder(self, *parts: str) -> Path:
        """A fresh folder for one export (named after its key, for failure messages)."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=False)
        return path

    def run(self, fmt: str, path: Path, names: Sequence[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run a written artifact on numpy arrays (inputs then noise), loading it once per session."""
        key = (fmt, str(path), tuple(names))
        if fmt == "onnx":
            return self._runner(key)(arrays)
        with warnings.catch_warnings():  # TorchScript / .pt2 loading warns about torch's own internals
            warnings.simplefilter("ignore")
            if fmt == "torchscript":
                # loaded afresh per call, as before: a kept TorchScript module re-profiles and
                # re-optimizes on each new batch size (a transformer per-call test went 26 s -> 113 s)
                return ArtifactRunner(fmt, path, names)(arrays)
            return self._runner(key)(arrays)

    def _runner(self, key: tuple[str, str, tuple[str, ...]]) -> ArtifactRunner:
        if key not in self._runners:
            fmt, path, names = key
            self._runners[key] = ArtifactRunner(fmt, Path(path), names)
        return self._runners[key]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> SessionCache:
    return SessionCache(tmp_path_factory.mktemp("exports"))
