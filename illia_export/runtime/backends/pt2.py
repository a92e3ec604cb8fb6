"""torch.export artifacts: ``.pt2`` ExportedPrograms and AOTInductor packages (CPU or CUDA).

Both take ``(*inputs, *noise)`` positionally and return the outputs in manifest order, like
the TorchScript backend they extend; only loading differs.
"""

from __future__ import annotations

from pathlib import Path

from illia_export.errors import ArtifactError
from illia_export.runtime.backends.torchscript import TorchScriptBackend


class ExportedProgramBackend(TorchScriptBackend):
    """A ``.pt2`` ExportedProgram (``torch.export.save``), run as its ``.module()`` in Python."""

    name = "pt2"

    def _load(self, path: Path):
        torch = self._torch
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ArtifactError(f"torch.export.load cannot load {path}: {exc}") from exc
        module = program.module()
        if self._device.type != "cpu":
            module = module.to(self._device)
        return module

    def describe(self) -> str:
        return f"pt2 ExportedProgram (torch {self._torch.__version__}, {self._device})"


class AOTInductorBackend(TorchScriptBackend):
    """An AOTInductor package (``.pt2`` with compiled kernels), loaded with ``aoti_load_package``.

    The package runs on the device it was compiled for (CPU packages on the CPU).
    """

    name = "aoti"

    def _load(self, path: Path):
        torch = self._torch
        try:
            runner = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:
            raise ArtifactError(f"torch._inductor.aoti_load_package cannot load {path}: {exc}") from exc
        device = runner.get_metadata().get("AOTI_DEVICE_KEY", "cpu")
        if device.split(":")[0] != self._device.type:
            raise ArtifactError(
                f"{path} was compiled for {device}; it cannot run on {self._device.type} (export it again there)"
            )
        return runner

    def describe(self) -> str:
        return f"AOTInductor package (torch {self._torch.__version__}, {self._device})"
