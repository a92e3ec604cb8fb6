"""torch.export artifacts: ``.pt2`` ExportedPrograms and AOTInductor packages (CPU or CUDA).

Both take ``(*inputs, *noise)`` positionally and return the outputs in manifest order, like
the TorchScript backend they extend; only loading differs.

Loading runs nothing from an untrusted file (docs/formats.md, "Trust"): an ExportedProgram's
bytes are read once, checked by :mod:`.pt2_safety` (no pickles, no code in shapes or guards)
and loaded from memory; an AOTInductor package (compiled code) opens only when the caller
vouched for it (option ``trusted``, set by ``runtime.load`` from ``trust_native_code`` /
``expected_digest``), and is extracted into a temporary folder of ours that is removed when the
load fails or the runner is released.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

from illia_export.errors import ArtifactError
from illia_export.runtime.backends.torchscript import TorchScriptBackend

#: Prefix of the folders AOTInductor packages are extracted into (removed on failure and release).
AOTI_TMP_PREFIX = "illia-export-aoti-"
_TMPDIR_LOCK = threading.Lock()


@contextlib.contextmanager
def _extraction_folder():
    """A fresh folder of ours as ``TMPDIR`` while torch extracts a package (its C++ loader
    extracts under the system temp folder and leaves it there when loading fails)."""
    folder = tempfile.mkdtemp(prefix=AOTI_TMP_PREFIX)
    with _TMPDIR_LOCK:
        old = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = folder
        tempfile.tempdir = None
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if old is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old
            tempfile.tempdir = None


class ExportedProgramBackend(TorchScriptBackend):
    """A ``.pt2`` ExportedProgram (``torch.export.save``), run as its ``.module()`` in Python."""

    name = "pt2"

    def _load(self, path: Path):
        from illia_export.runtime.backends.pt2_safety import scan_exported_program

        torch = self._torch
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not self.options.get("trusted", False):
            scan_exported_program(data, Path(path))  # the bytes loaded below are the ones checked
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as exc:
            raise ArtifactError(f"torch.export.load cannot load {path}: {type(exc).__name__}: {exc}") from exc
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
        if not self.options.get("trusted", False):
            raise ArtifactError(
                f"{path} is an AOTInductor package: loading it runs compiled code from the file. Pass "
                "trust_native_code=True (CLI --trust-native-code) or expected_digest='sha256:...' (CLI --expect-digest)"
            )
        try:
            with _extraction_folder() as folder:
                runner = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:
            raise ArtifactError(
                f"torch._inductor.aoti_load_package cannot load {path}: {type(exc).__name__}: {exc}"
            ) from exc
        weakref.finalize(self, shutil.rmtree, folder, True)
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
