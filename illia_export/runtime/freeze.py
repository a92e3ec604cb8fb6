"""Frozen-bank ONNX artifacts: S noise samples baked into one graph with summary outputs.

:func:`freeze_bank` turns a vectorized ONNX artifact into a plain ONNX model that any ONNX
runtime (no illia-export, no noise generator) can serve: the noise of ``strategy="bank"`` with a
given seed and S becomes initializers, the only inputs are the model's, and the outputs are the
batch-first Monte Carlo summaries of the first output (what :class:`Prediction` summarizes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact.manifest import (
    BATCH_DIM,
    FROZEN_KEY,
    SAMPLE_DIM,
    Manifest,
    TensorSpec,
)
from illia_export.errors import ArtifactError, InputError, StrategyError
from illia_export.runtime.noise import GENERATOR_V2

#: Key of ``manifest.extra`` that marks a frozen-bank artifact.
#: Highest ONNX IR version written (onnxruntime refuses newer ones).
MAX_IR_VERSION = 10
#: Prefix of the original graph's tensors inside the frozen graph.
PREFIX = "bnn/"
#: The frozen graph's input of row ids (int64 ``[batch]``) when the model has per-example noise.
ROW_ID_INPUT = "row_id"
#: Opset needed to generate per-example noise in the graph (unsigned BitwiseXor/BitwiseAnd).
MIN_ROW_OPSET = 18
_CLASSIFICATION_OUTPUTS = ("probabilities", "predicted_class", "predictive_entropy", "mutual_information")
_REGRESSION_OUTPUTS = ("mean", "std")


def freeze_bank(
    artifact_path: str | os.PathLike,
    out_path: str | os.PathLike,
    num_samples: int,
    seed: int,
    generator: str | None = None,
    **load_options,
) -> Path:
    """Write an ONNX graph with the noise bank of (`seed`, `num_samples`) baked in.

    Args:
        artifact_path: a vectorized ONNX artifact (``samples="vectorized"``, the default).
        out_path: the ``.onnx`` file to write (atomically; never one of the inputs).
        num_samples: S, the number of weight samples baked in (>= 1).
        seed: the bank's seed: the frozen graph computes what
            ``load(artifact).predict(x, num_samples=S, seed=seed, strategy="bank")`` summarizes.
        generator: the noise generator (default: the one the manifest names).
        **load_options: passed to :func:`illia_export.runtime.load` when the artifact is opened
            (``allow_unverified``, ``expected_digest``, ``threads``...).

    Returns:
        `out_path`. Its inputs are the model's inputs; its outputs, batch-first, are
        ``probabilities [B, ..., C]`` (float64), ``predicted_class [B, ...]`` (int64),
        ``predictive_entropy`` and ``mutual_information [B, ...]`` (float64) for classifiers,
        else ``mean`` and ``std`` (``ddof=0``) ``[B, ...]`` in the output's dtype.

    Raises:
        InputError: S < 1, a bad seed. StrategyError: a per-call artifact, noise that depends on
        the batch, a regression head with a likelihood. ArtifactError: not an ONNX artifact,
        an already frozen one, an output that is not floating point.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.compose import add_prefix_graph

    from illia_export.artifact.atomic import atomic_output
    from illia_export.artifact.manifest import embed_in_onnx
    from illia_export.runtime.inputs import check_seed
    from illia_export.runtime.predictor import load

    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise InputError(f"`num_samples` (={num_samples!r}) must be a positive integer")
    num_samples = int(num_samples)
    seed = check_seed(seed, allow_none=False)
    src = Path(artifact_path)
    from illia_export.artifact.atomic import check_output_path

    check_output_path(out_path, sources=[src])  # before the work: not an input, not a part of another artifact
    pred = load(src, **load_options)
    m = pred.manifest
    if m.format != "onnx" or src.suffix.lower() != ".onnx":
        raise ArtifactError(f"freeze_bank needs an ONNX artifact (.onnx); {src.name} is {m.format}")
    if not m.vectorized:
        raise StrategyError(
            f"{src.name} is a per-call artifact (one sample per graph call); freeze_bank needs a vectorized "
            "one (export with samples='vectorized', the default) so that the S samples run in one graph"
        )
    row_keyed = _row_keyed_noise(m, src.name)
    if m.likelihood is not None and m.task == "regression":
        raise StrategyError(
            f"{src.name} has a regression likelihood; freeze_bank writes sample mean/std only and does not "
            "implement mixture summaries"
        )
    first = m.outputs[0]
    if not first.dtype.startswith("float"):
        raise ArtifactError(f"output {first.name!r} is {first.dtype}; summaries need a floating output")
    if not first.shape or first.shape[0] != SAMPLE_DIM:
        raise ArtifactError(f"output {first.name!r} must be [samples, batch, ...], the manifest says {first.shape}")
    generator = pred._generator(generator)
    if row_keyed and generator != GENERATOR_V2:
        raise StrategyError(
            f"{src.name} has per-example noise ({sorted(row_keyed)}), which a frozen graph generates from each "
            f"row's id with {GENERATOR_V2}; the generator asked for is {generator}. Freeze with "
            f"generator={GENERATOR_V2!r} (the numbers then match predict(..., generator={GENERATOR_V2!r}))"
        )
    noise = pred.noise(num_samples, seed, strategy="bank", batch_size=1, generator=generator)

    model = onnx.load(str(src))
    if model.graph.input and any(i.name.startswith(PREFIX) for i in model.graph.input):
        raise ArtifactError(f"{src.name}: input names may not start with {PREFIX!r}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        raise ArtifactError(f"{src.name} uses ONNX opset {opset}; freeze_bank needs opset >= 13")
    if row_keyed and opset < MIN_ROW_OPSET:
        raise ArtifactError(
            f"{src.name} uses ONNX opset {opset}; generating its per-example noise in the graph needs opset >= "
            f"{MIN_ROW_OPSET} (unsigned bitwise ops): re-export it with opset={MIN_ROW_OPSET} or newer"
        )
    if row_keyed and any(t.name == ROW_ID_INPUT for t in m.inputs):
        raise ArtifactError(f"{src.name} has an input named {ROW_ID_INPUT!r}, the frozen graph's row-id input")
    noise_names = {n.name for n in m.noise}
    graph = add_prefix_graph(model.graph, PREFIX, rename_inputs=False)
    # noise inputs -> initializers holding the bank, or (per-example noise) the row-keyed generator
    kept = [i for i in graph.input if i.name not in noise_names]
    del graph.input[:]
    graph.input.extend(kept)
    if row_keyed:
        from illia_export.runtime.frozen_rows import RowNoiseBuilder

        graph.input.append(helper.make_tensor_value_info(ROW_ID_INPUT, TensorProto.INT64, [BATCH_DIM]))
        rows = RowNoiseBuilder(ROW_ID_INPUT, seed, num_samples)
        for k, spec in enumerate(m.noise):
            if spec.name in row_keyed:
                dims = spec.shape[1:]
                pos = dims.index(BATCH_DIM)
                out = rows.noise(k, [int(d) for i, d in enumerate(dims) if i != pos], pos)
                rows.nodes.append(helper.make_node("Identity", [out], [spec.name]))
        graph.initializer.extend(rows.initializers)
        for i, n in enumerate(rows.nodes):
            graph.node.insert(i, n)
    for name in noise_names - set(row_keyed):
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(noise[name], dtype=np.float32), name))
    y = PREFIX + first.name
    del graph.output[:]

    nodes: list[Any] = []
    consts: list[Any] = []

    def name(tag: str) -> str:
        return f"frozen_bank/{tag}"

    def const_axes(tag: str, axes: list[int]) -> str:
        consts.append(numpy_helper.from_array(np.asarray(axes, dtype=np.int64), name(tag)))
        return name(tag)

    axis0 = const_axes("axis0", [0])
    last = const_axes("axis_last", [-1])

    def reduce(op: str, x: str, axes: str, out: str, keepdims: int) -> str:
        # ReduceSum takes axes as an input since opset 13, the others since opset 18.
        if op == "ReduceSum" or opset >= 18:
            nodes.append(helper.make_node(op, [x, axes], [out], keepdims=keepdims))
        else:
            values = [int(v) for v in numpy_helper.to_array(next(c for c in consts if c.name == axes))]
            nodes.append(helper.make_node(op, [x], [out], axes=values, keepdims=keepdims))
        return out

    def node(op: str, ins: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    z = node("Cast", [y], name("y64"), to=TensorProto.DOUBLE)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(first.dtype))
    batch_shape = [d for d in first.shape[1:]]
    if m.task == "classification":
        zero = name("zero")
        one = name("one")
        consts.append(numpy_helper.from_array(np.asarray(0.0), zero))
        consts.append(numpy_helper.from_array(np.asarray(1.0), one))
        p = node("Softmax", [z], name("p"), axis=-1)

        def entropy(probs: str, tag: str) -> str:
            safe = node("Where", [node("Greater", [probs, zero], name(tag + "_pos")), probs, one], name(tag + "_safe"))
            plogp = node("Mul", [probs, node("Log", [safe], name(tag + "_log"))], name(tag + "_plogp"))
            return node("Neg", [reduce("ReduceSum", plogp, last, name(tag + "_sum"), 0)], name(tag))

        probs = reduce("ReduceMean", p, axis0, "probabilities", 0)
        node("ArgMax", [probs], "predicted_class", axis=-1, keepdims=0)
        total = node("Identity", [entropy(probs, "total_entropy")], "predictive_entropy")
        expected = reduce("ReduceMean", entropy(p, "sample_entropy"), axis0, name("expected_entropy"), 0)
        node("Max", [node("Sub", [total, expected], name("mi_raw")), zero], "mutual_information")
        outputs = [
            helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, batch_shape),
            helper.make_tensor_value_info("predicted_class", TensorProto.INT64, batch_shape[:-1]),
            helper.make_tensor_value_info("predictive_entropy", TensorProto.DOUBLE, batch_shape[:-1]),
            helper.make_tensor_value_info("mutual_information", TensorProto.DOUBLE, batch_shape[:-1]),
        ]
        specs = [
            TensorSpec("probabilities", batch_shape, "float64"),
            TensorSpec("predicted_class", batch_shape[:-1], "int64"),
            TensorSpec("predictive_entropy", batch_shape[:-1], "float64"),
            TensorSpec("mutual_information", batch_shape[:-1], "float64"),
        ]
    else:
        mean64 = reduce("ReduceMean", z, axis0, name("mean64"), 0)
        dev = node("Sub", [z, mean64], name("dev"))
        var = reduce("ReduceMean", node("Mul", [dev, dev], name("dev2")), axis0, name("var"), 0)
        node("Cast", [mean64], "mean", to=elem)
        node("Cast", [node("Sqrt", [var], name("std64"))], "std", to=elem)
        outputs = [helper.make_tensor_value_info(n, elem, batch_shape) for n in _REGRESSION_OUTPUTS]
        specs = [TensorSpec(n, batch_shape, first.dtype) for n in _REGRESSION_OUTPUTS]
    graph.node.extend(nodes)
    graph.initializer.extend(consts)
    graph.output.extend(outputs)
    graph.name = f"{graph.name or 'model'}_frozen_bank"
    model.graph.CopyFrom(graph)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    manifest = Manifest(
        format="onnx",
        source=m.source,
        inputs=list(m.inputs) + ([TensorSpec(ROW_ID_INPUT, [BATCH_DIM], "int64")] if row_keyed else []),
        noise=[],
        outputs=specs,
        sample_axis=None,
        task=m.task,
        contract=2,
        extra={
            **{k: v for k, v in m.extra.items() if k != FROZEN_KEY},
            FROZEN_KEY: {
                "samples": num_samples,
                "seed": seed,
                "noise_generator": generator,
                "output": first.name,
                "source_digest": m.digest,
                "row_keyed_noise": sorted(row_keyed),
            },
        },
        noise_generator=m.noise_generator,
    )
    embed_in_onnx(model, manifest)
    onnx.checker.check_model(model)
    out = Path(out_path)
    with atomic_output(out, sources=[src]) as tmp:
        onnx.save(model, str(tmp))
    return out


__all__ = ["freeze_bank"]


def _row_keyed_noise(m: Manifest, name: str) -> list[str]:
    """Names of the noise inputs a frozen graph generates per row (one ``"batch"`` dim, the other dims
    fixed); other per-example noise cannot be frozen and is refused with the reason."""
    keyed = []
    for spec in m.noise:
        dims = spec.shape[1:]
        symbolic = [d for d in dims if isinstance(d, str)]
        if not symbolic:
            continue
        if symbolic != [BATCH_DIM]:
            raise StrategyError(
                f"{name}: noise {spec.name!r} has dims {spec.shape}; a frozen graph can generate per-example noise "
                f"only when its one symbolic dim is {BATCH_DIM!r} (a batch folded with other axes, or a dim that "
                "follows another input size, cannot be keyed by row). Serve this artifact with `illia-export serve` "
                "instead (docs/scaling.md)"
            )
        keyed.append(spec.name)
    return keyed
