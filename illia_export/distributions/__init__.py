"""Weight distributions (mean-field Gaussians), one module per backend.

Import the backend you use: ``illia_export.distributions.torch`` or
``illia_export.distributions.jax``. Nothing heavy is imported here.
"""
