"""illia-export: deploy Bayesian neural networks without losing their uncertainty.

The exported graph is deterministic; the noise ``eps`` of every weight distribution
(``w = mu + softplus(rho) * eps``) is an explicit, named input. Runtimes feed that noise from a
seeded, portable generator and run many Monte Carlo samples fast.

Heavy backends (torch, jax, tensorflow, onnxruntime) are imported lazily.
"""

from illia_export.artifact.manifest import Manifest, read_manifest

__version__ = "0.1.0"
__all__ = ["Manifest", "export", "read_manifest", "__version__"]


def export(*args, **kwargs):
    """Export a Bayesian model; see :func:`illia_export.api.export`."""
    from illia_export.api import export as _export

    return _export(*args, **kwargs)


export.__doc__ = "Export a Bayesian model to a deterministic graph with noise inputs (see illia_export.api.export)."
