"""PyTorch exporter, one module per stage: source -> inputs -> registry -> draws -> capture strategy
(:mod:`.strategy_export` for torch.export, :mod:`.strategy_script` for TorchScript) -> one
:class:`~.capture_result.CaptureResult` -> the one tail (:mod:`.pipeline`: writers, validation in
:mod:`illia_export.exporters.verify`). The entry point is
:func:`illia_export.exporters.torch.export.export_torch`."""
