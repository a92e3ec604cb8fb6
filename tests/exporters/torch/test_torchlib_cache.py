"""The ONNX writer lists onnxscript's torch_lib functions once per process, and patches nothing for others."""

from __future__ import annotations

from illia_export.exporters.torch import writers


def test_torchlib_list_is_built_once_and_the_original_is_restored(monkeypatch):
    from torch.onnx._internal.exporter import _registration

    module = writers._onnxscript_apis()
    assert module is not None, "torch.onnx's torch_lib list moved: the writer's cache no longer applies"
    real = module.get_torchlib_ops
    calls = []

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(module, "get_torchlib_ops", counting)
    monkeypatch.setattr(writers, "_TORCHLIB", {})
    with writers.torchlib_ops_once():
        first = _registration.ONNXRegistry.from_torchlib(18)
        second = _registration.ONNXRegistry.from_torchlib(18)
    assert len(calls) == 1
    assert set(first.functions) == set(second.functions) and len(first.functions) > 100
    assert module.get_torchlib_ops is counting  # restored: nothing outside our exports sees the cache
    module.get_torchlib_ops()
    assert len(calls) == 2
