"""Typed errors of illia-export, in one place.

Every user-facing failure raises one of these; messages say what was expected, what was
found, and how to fix it. The CLI turns them into a one-line message and a non-zero exit.
"""

from __future__ import annotations


class IlliaExportError(Exception):
    """Base class of every error this package raises on purpose."""


class ExportError(IlliaExportError):
    """A model cannot be exported (unsupported layer, no Bayesian layer, bad option)."""


class ShapeError(IlliaExportError, ValueError):
    """An input or noise array has the wrong shape, rank or dtype."""


class ToleranceError(ExportError):
    """Validation found the artifact disagreeing with its source model beyond tolerance."""


class ManifestError(IlliaExportError):
    """A manifest is missing, unreadable or does not follow the artifact contract."""


class ArtifactError(IlliaExportError):
    """A file is not a usable artifact or model (missing, corrupt, wrong kind)."""


class MissingBackendError(IlliaExportError, ImportError):
    """An optional dependency needed for this format or runtime is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'illia-export[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str):
    """Import `module` or raise `MissingBackendError` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingBackendError(module.split(".")[0], extra, purpose) from exc


class DeviceUnavailableError(IlliaExportError, RuntimeError):
    """The requested device (e.g. ``cuda``) is not usable by the artifact's backend.

    Raised instead of silently running somewhere else.
    """


class StrategyError(IlliaExportError, ValueError):
    """A sampling strategy cannot be used with this artifact (or is unknown)."""


class TaskError(IlliaExportError, ValueError):
    """A summary was asked for that the prediction's task does not define."""


class InputError(IlliaExportError, ValueError):
    """An argument or input value is outside what the model or the runtime accepts: a NaN/inf
    input, a token id outside the vocabulary, a seed outside ``[0, 2**64)``, a bad count."""


class ResourceError(IlliaExportError, MemoryError):
    """A request would need more memory than the runtime's budget or the machine has
    (raised before the large allocation, with the numbers)."""
