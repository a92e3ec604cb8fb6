"""Row-keyed ``illia-noise-v2`` written as ONNX nodes, for frozen artifacts.

A frozen-bank graph (:mod:`illia_export.runtime.freeze`) bakes the weight noise in, but
per-example noise (MC-dropout masks, Flipout signs, local pre-activation noise) depends on the
rows, so it cannot be baked. Instead the frozen graph takes each row's id (``row_id``, int64
``[batch]``) and computes that row's noise in the graph with the portable generator, exactly as
docs/noise.md ("Row-keyed noise") specifies: ``row_key = mix64(key_k + GOLDEN * (id + 1))`` in
64-bit integers, then the v2 hash of each element counter ``c = s * n_row + i`` under that key in
32-bit integers, then Wichura's PPND7 in float64, rounded to float32 once. So any ONNX server
(Triton, plain onnxruntime) returns what ``predict(..., strategy="bank", row_ids=ids)`` returns
for those rows. Uses unsigned integer ``Mul``/``Add``/``BitShift``/``BitwiseXor``/``BitwiseAnd``
(opset 18), which onnxruntime implements with wrap-around arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from illia_export.runtime.noise import (
    GOLDEN,
    GOLDEN32,
    LB_MUL1,
    LB_MUL2,
    MUL1,
    MUL2,
    PPND7_A,
    PPND7_B,
    PPND7_C,
    PPND7_D,
    V2_CENTRAL,
    stream_key,
)

#: Opset the generator's integer ops need (BitwiseXor/BitwiseAnd arrived in opset 18).
MIN_OPSET = 18


class RowNoiseBuilder:
    """Appends the nodes and constants that compute row-keyed v2 noise from a ``row_id`` input.

    Args:
        row_id: name of the int64 ``[batch]`` graph input holding each row's id.
        seed: the seed whose streams the noise reproduces.
        num_samples: S, the samples baked into the frozen graph.
        prefix: prefix of every tensor name this builder creates.
    """

    def __init__(self, row_id: str, seed: int, num_samples: int, prefix: str = "frozen_rows/") -> None:
        from onnx import TensorProto

        self.row_id = row_id
        self.seed = int(seed)
        self.num_samples = int(num_samples)
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._scalars: dict[tuple[str, Any], str] = {}
        self._T = TensorProto
        # The row ids as unsigned 64-bit words (two's complement for negative ids, as row_words does).
        self.words = self._node("Cast", [row_id], "words", to=TensorProto.UINT64)

    # -- small helpers -------------------------------------------------------------------------
    def _name(self, tag: str) -> str:
        self._count += 1
        return f"{self.prefix}{tag}_{self._count}"

    def _node(self, op: str, inputs: Sequence[str], tag: str, **attrs: Any) -> str:
        from onnx import helper

        out = self._name(tag)
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def _const(self, value: Any, dtype: Any, tag: str) -> str:
        """An initializer holding `value`; scalars are shared by every stream (one per value and dtype)."""
        from onnx import numpy_helper

        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.item()) if array.ndim == 0 else None
        if key is not None and key in self._scalars:
            return self._scalars[key]
        name = self._name(tag)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._scalars[key] = name
        return name

    def _shr(self, x: str, bits: int, dtype: Any) -> str:
        return self._node("BitShift", [x, self._const(bits, dtype, "bits")], "shr", direction="RIGHT")

    def _xorshift(self, x: str, bits: int, dtype: Any) -> str:
        return self._node("BitwiseXor", [x, self._shr(x, bits, dtype)], "xs")

    def _mul(self, x: str, k: int, dtype: Any) -> str:
        return self._node("Mul", [x, self._const(k, dtype, "k")], "mul")

    def _poly(self, coeffs: Sequence[float], x: str) -> str:
        acc = self._const(coeffs[-1], np.float64, "c")
        for c in reversed(coeffs[:-1]):
            acc = self._node("Add", [self._node("Mul", [acc, x], "hx"), self._const(c, np.float64, "c")], "h")
        return acc

    # -- the generator -------------------------------------------------------------------------
    def _row_keys(self, stream: int) -> str:
        """uint64 ``[B]``: ``mix64(stream_key + GOLDEN * (word + 1))``."""
        u64 = np.uint64
        z = self._node("Add", [self.words, self._const(1, u64, "one")], "w1")
        z = self._node("Add", [self._mul(z, GOLDEN, u64), self._const(stream_key(self.seed, stream), u64, "key")], "z")
        z = self._mul(self._xorshift(z, 30, u64), MUL1, u64)
        z = self._mul(self._xorshift(z, 27, u64), MUL2, u64)
        return self._xorshift(z, 31, u64)

    def _lowbias32(self, x: str) -> str:
        u32 = np.uint32
        x = self._mul(self._xorshift(x, 16, u32), LB_MUL1, u32)
        x = self._mul(self._xorshift(x, 15, u32), LB_MUL2, u32)
        return self._xorshift(x, 15, u32)

    def noise(self, stream: int, row_shape: Sequence[int], batch_axis: int) -> str:
        """float32 noise of `stream`, shaped like the noise input: ``[S, *shape]`` with the batch at
        position `batch_axis` of ``shape`` and `row_shape` the other (integer) dims in order."""
        T = self._T
        n_row = int(np.prod(row_shape)) if row_shape else 1
        count = self.num_samples * n_row
        keys = self._row_keys(stream)                                             # uint64 [B]
        k0 = self._node("Cast", [self._node("BitwiseAnd", [keys, self._const(0xFFFFFFFF, np.uint64, "m")], "lo")],
                        "k0", to=T.UINT32)
        k1 = self._node("Cast", [self._shr(keys, 32, np.uint64)], "k1", to=T.UINT32)
        k0 = self._node("Unsqueeze", [k0, self._const([1], np.int64, "ax")], "k0c")  # [B, 1]
        k1 = self._node("Unsqueeze", [k1, self._const([1], np.int64, "ax")], "k1c")
        # Element counters c = s * n_row + i of one row, i.e. 0 .. S*n_row - 1, split into 32-bit words.
        counters = np.arange(count, dtype=np.uint64)
        lo = self._const((counters & np.uint64(0xFFFFFFFF)).astype(np.uint32), np.uint32, "clo")
        h = self._lowbias32(self._node("BitwiseXor", [lo, k0], "x0"))             # [B, S*n_row]
        kh = k1
        if count > 1 << 32:  # counters past 2**32 add GOLDEN32 * hi32(c) to the high key word
            hi_words = (counters >> np.uint64(32)).astype(np.uint32)
            with np.errstate(over="ignore"):
                golden_hi = (np.uint32(GOLDEN32) * hi_words).astype(np.uint32)
            kh = self._node("Add", [k1, self._const(golden_hi, np.uint32, "chi")], "kh")
        h = self._lowbias32(self._node("BitwiseXor", [h, kh], "x1"))
        values = self._ppnd7(h)                                                    # float64 [B, S*n_row]
        values = self._node("Cast", [values], "f32", to=T.FLOAT)
        shape = self._const([0, self.num_samples, *[int(d) for d in row_shape]], np.int64, "shape")
        values = self._node("Reshape", [values, shape], "rows")                   # [B, S, *row]
        rank = 2 + len(row_shape)
        # [B, S, r0, r1, ...] -> [S, r0, .., B (at 1 + batch_axis), ..]
        rest = list(range(2, rank))
        perm = [1, *rest[:batch_axis], 0, *rest[batch_axis:]]
        return self._node("Transpose", [values], "noise", perm=perm)

    def _ppnd7(self, h: str) -> str:
        """float64 v2 values of uint32 hashes (docs/noise.md, as ``_v2_transform_np``)."""
        T = self._T
        j = self._node("BitwiseAnd", [h, self._const(0x7FFFFFFF, np.uint32, "m31")], "j")
        central = self._node("GreaterOrEqual", [j, self._const(V2_CENTRAL, np.uint32, "central")], "isc")
        p = self._node("Mul", [self._node("Add", [self._node("Cast", [j], "jd", to=T.DOUBLE),
                                                  self._const(0.5, np.float64, "half")], "jh"),
                               self._const(1.0 / 2.0**32, np.float64, "scale")], "p")
        q = self._node("Sub", [p, self._const(0.5, np.float64, "half")], "q")
        r = self._node("Sub", [self._const(0.180625, np.float64, "r0"), self._node("Mul", [q, q], "qq")], "r")
        mid = self._node("Div", [self._node("Mul", [q, self._poly(PPND7_A, r)], "qa"), self._poly(PPND7_B, r)], "mid")
        t = self._node("Sub", [self._node("Sqrt", [self._node("Neg", [self._node("Log", [p], "lp")], "nlp")], "sq"),
                               self._const(1.6, np.float64, "c16")], "t")
        tail = self._node("Neg", [self._node("Div", [self._poly(PPND7_C, t), self._poly(PPND7_D, t)], "cd")], "tail")
        x = self._node("Where", [central, mid, tail], "x")
        negative = self._node("Equal", [self._shr(h, 31, np.uint32), self._const(1, np.uint32, "one32")], "neg")
        return self._node("Where", [negative, self._node("Neg", [x], "nx"), x], "v")
