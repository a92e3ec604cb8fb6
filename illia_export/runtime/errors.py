"""Typed errors specific to the runtime (subclasses of :class:`illia_export.errors.IlliaExportError`).

The CLI prints them as one line and exits with status 2, like every other typed error.
"""

from __future__ import annotations

from illia_export.errors import IlliaExportError


class DeviceUnavailableError(IlliaExportError, RuntimeError):
    """The requested device (e.g. ``cuda``) is not usable by the artifact's backend.

    Raised instead of silently running somewhere else.
    """


class StrategyError(IlliaExportError, ValueError):
    """A sampling strategy cannot be used with this artifact (or is unknown)."""


class TaskError(IlliaExportError, ValueError):
    """A summary was asked for that the prediction's task does not define."""
