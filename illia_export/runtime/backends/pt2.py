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
        self._program = program
        module = program.module()
        if self._device.type != "cpu":
            module = module.to(self._device)
        return module

    def check_signature(self, inputs: list, noise: list, outputs: list, vectorized: bool) -> None:
        """The program's own input specs: count, rank and fixed dims, then one dry call."""
        from illia_export.artifact.manifest import SAMPLE_DIM

        names = [s.name for s in inputs] + [n.name for n in noise]
        placeholders = [n for n in self._program.graph.nodes if n.op == "placeholder"]
        user = [
            node
            for node, spec in zip(placeholders, self._program.graph_signature.input_specs)
            if spec.kind.name == "USER_INPUT"
        ]
        if len(user) != len(names):
            raise ArtifactError(
                f"{self.path}: the program takes {len(user)} inputs, the manifest feeds {len(names)} ({names})"
            )
        for spec, node in zip(list(inputs) + list(noise), user):
            val = node.meta.get("val")
            if val is None:
                continue
            want = [d for d in spec.shape if vectorized or d != SAMPLE_DIM]
            got = list(val.shape)
            if len(got) != len(want) or any(
                isinstance(w, int) and isinstance(g, int) and w != g for w, g in zip(want, got)
            ):
                raise ArtifactError(
                    f"{self.path}: input {spec.name!r} is {got} in the program but {list(spec.shape)} in the manifest"
                )
        self._dry_call(inputs, noise, outputs, vectorized, batch=2)

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

    def check_signature(self, inputs: list, noise: list, outputs: list, vectorized: bool) -> None:
        """A compiled package keeps no readable schema: one dry call shaped as the manifest says."""
        self._dry_call(inputs, noise, outputs, vectorized, batch=2)

    def describe(self) -> str:
        return f"AOTInductor package (torch {self._torch.__version__}, {self._device})"
