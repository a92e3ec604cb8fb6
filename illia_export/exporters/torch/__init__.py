"""PyTorch exporter, one module per stage: source -> inputs -> registry -> draws -> capture ->
writers -> pipeline (validation in :mod:`illia_export.exporters.verify`). The entry point is
:func:`illia_export.exporters.torch.export.export_torch`."""
