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

import numpy as np

from illia_export.errors import ArtifactError
from illia_export.runtime.backends import WeightPlan
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

    # ------------------------------------------------------------------ run path: speed paths
    # (:mod:`.pt2_fast`; option ``fast_paths``, default True): fed weights for ``fresh``, the
    # bank's weights computed once per bank chunk, grouped convolutions. Each rewritten module is
    # checked against the original once before it is used.

    def prepare_inputs(self, inputs):
        prepared = super().prepare_inputs(inputs)
        self._last_inputs = prepared  # what a rewritten module is checked with
        return prepared

    def _rewritten(self, key, shapes, vectorized: bool, feed: bool):
        cache = self.__dict__.setdefault("_fast_modules", {})
        if key not in cache:
            cache[key] = None
            if self.options.get("fast_paths", True):
                from illia_export.runtime.backends import pt2_fast

                try:
                    module = self._program.module()
                    if self._device.type != "cpu":
                        module = module.to(self._device)
                    cache[key] = pt2_fast.rewrite(
                        module, len(self.input_names), list(shapes), vectorized, feed
                    )
                except Exception:  # an optimization only: run the original module
                    cache[key] = None
        return cache[key]

    def _same(self, fast, inputs, eps) -> bool:
        """Whether `fast` gives the original module's outputs for noise `eps` (recorded)."""
        from illia_export.runtime.backends import pt2_fast

        try:
            want = self._run_module(self.module, inputs, eps)
            got = self._run_module(fast.module, inputs, pt2_fast.sampled_weights(fast, self._as_tensors(eps)))
            fast.verified = all(
                g.shape == w.shape and np.allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True)
                for g, w in zip(got, want)
            )
        except Exception:
            fast.verified = False
        return fast.verified

    def weight_plan(self, shapes, vectorized):
        inputs = getattr(self, "_last_inputs", None)
        key = ("weights", tuple(tuple(s) for s in shapes), bool(vectorized))
        fast = self._rewritten(key, shapes, vectorized, feed=True)
        if fast is None or inputs is None or all(p is None for p in fast.pairs):
            return None
        if fast.verified is None:  # synthetic noise: two samples (vectorized) or one (per call)
            gen = self._torch.Generator().manual_seed(0)
            lead = (2,) if vectorized else ()
            eps = [self._torch.randn(lead + tuple(s), generator=gen).to(self._device) for s in shapes]
            self._same(fast, inputs, eps)
        return WeightPlan(fast.pairs, fast) if fast.verified else None

    def run_weights(self, inputs, values, plan):
        return self._run_module(plan.handle.module, inputs, values)

    def precompute_noise(self, noise):
        plan = self.weight_plan([tuple(n.shape[1:]) for n in noise], True)
        if plan is None:
            return None
        from illia_export.runtime.backends import pt2_fast

        with self._torch.inference_mode():
            return pt2_fast.sampled_weights(plan.handle, self._as_tensors(noise)), plan

    def run_precomputed(self, inputs, token):
        values, plan = token
        return self.run_weights(inputs, values, plan)

    def run(self, inputs, noise):
        # noise with a sample axis: the grouped-convolution rewrite (only vectorized graphs have
        # im2col convolutions; per-call graphs find nothing to rewrite)
        fast = self._rewritten(
            ("convs",), [tuple(getattr(n, "shape", ())[1:]) for n in noise], True, feed=False
        )
        if fast is None or fast.verified is False:
            return self._run_module(self.module, inputs, noise)
        if fast.verified is None and not self._same(fast, inputs, noise):
            return self._run_module(self.module, inputs, noise)
        return self._run_module(fast.module, inputs, noise)


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
