"""Load a PyTorch source model safely: live modules, TorchScript archives, state dicts.

Never unpickles an arbitrary file by default: a whole module saved with ``torch.save`` runs
code from the file when loaded, so it needs ``trust_pickle=True`` (CLI: ``--trust-pickle``).
TorchScript archives load without it; state dicts load with ``weights_only=True`` into a model
built by a factory the user names.
"""

from __future__ import annotations

import importlib
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from illia_export.errors import ArtifactError, ExportError


@dataclass
class TorchSource:
    """A model to export: the module to wrap and where it came from."""

    module: Any  # torch.nn.Module or torch.jit.ScriptModule
    kind: str  # "torch" (live module) or "torchscript" (archive)
    path: Path | None = None

    def fresh_reference(self):
        """An independent copy of the model used as the validation reference."""
        import torch

        if self.kind == "torchscript" and self.path is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.load(str(self.path), map_location="cpu")
        return self.module


def import_factory(spec: str) -> Callable[[], Any]:
    """Resolve ``"package.module:function"`` to a callable (user code, imported on purpose)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ExportError(f"factory {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ExportError(f"cannot import {mod_name!r} for factory {spec!r}: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: their error, not ours
        raise ExportError(
            f"importing {mod_name!r} for factory {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        fn = getattr(module, attr)
    except AttributeError as exc:
        raise ExportError(f"module {mod_name!r} has no attribute {attr!r}") from exc
    if not callable(fn):
        raise ExportError(f"factory {spec!r} is not callable")
    return fn


def call_factory(spec: str) -> Any:
    """Import and call the factory `spec` with no arguments; its failures are the user's errors.

    Raises:
        ExportError: the module does not import, the factory is missing, needs arguments or
            raises (its message included).
    """
    fn = import_factory(spec)
    try:
        return fn()
    except Exception as exc:  # user code
        raise ExportError(
            f"calling the factory {spec!r} failed: {type(exc).__name__}: {exc} (a factory is called with no "
            "arguments and must return the model)"
        ) from exc


def load_torch_source(
    path: str | os.PathLike, *, trust_pickle: bool = False, factory: str | None = None
) -> TorchSource:
    """Load `path`: a TorchScript archive, a state dict (with `factory`), or a pickled module.

    Raises:
        ArtifactError: missing file, not a model file, or a pickled module without `trust_pickle`.
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"model file not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"{p} is a folder, expected a TorchScript archive (.pt)")
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
            raise ArtifactError(f"{p} is a damaged zip archive: {type(exc).__name__}: {exc}") from exc
        is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in names)
        if is_script:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    module = torch.jit.load(str(p), map_location="cpu")
            except Exception as exc:
                raise ArtifactError(
                    f"{p} looks like a TorchScript archive but cannot be loaded: {exc}"
                ) from exc
            return TorchSource(module, "torchscript", p)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        if not trust_pickle:
            if zipfile.is_zipfile(p) or _looks_like_pickle(p):
                raise ArtifactError(
                    f"{p} is not a TorchScript archive or a state dict; it looks like a pickled module "
                    "(torch.save(model)). Loading it runs code from the file: pass --trust-pickle "
                    "(trust_pickle=True) only if you trust its origin, or save a TorchScript archive "
                    "with torch.jit.save(torch.jit.script(model), path)"
                ) from exc
            raise ArtifactError(f"{p} is not a TorchScript archive, a state dict or a PyTorch file") from exc
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ArtifactError(f"{p} cannot be loaded as a PyTorch file: {exc2}") from exc2
    if isinstance(obj, torch.nn.Module):
        return TorchSource(obj, "torch", p)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if factory is None:
            raise ArtifactError(
                f"{p} is a state dict; name the model that it belongs to with --factory package.module:function"
            )
        model = call_factory(factory)
        if not isinstance(model, torch.nn.Module):
            raise ExportError(f"factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module")
        try:
            model.load_state_dict(obj)
        except RuntimeError as exc:
            raise ArtifactError(f"the state dict {p} does not fit the model from {factory!r}: {exc}") from exc
        return TorchSource(model, "torch", p)
    raise ArtifactError(f"{p} holds a {type(obj).__name__}, not a model or a state dict")


def _looks_like_pickle(p: Path) -> bool:
    with open(p, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80
