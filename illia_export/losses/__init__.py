"""Losses for Bayesian networks (KL divergence, ELBO), one module per backend.

Import the backend you use: ``illia_export.losses.torch`` (``KLDivergenceLoss``, ``ELBOLoss``)
or ``illia_export.losses.jax``. Nothing heavy is imported here.
"""
