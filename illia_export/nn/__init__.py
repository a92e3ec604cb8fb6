"""Bayesian layers, one subpackage per backend: ``illia_export.nn.torch`` and ``illia_export.nn.jax``."""
