"""Check a ``.tflite`` file before the TFLite interpreter sees it.

The interpreter trusts its input: a truncated or byte-flipped model can make its constructor
read out of bounds and kill the process (segfault). Two layers of defence, both run by the
TFLite backend and by ``illia-export inspect``:

1. :func:`verify_flatbuffer` -- a bounds-checked walk of the flatbuffer against the TFLite
   schema (``tensorflow/lite/schema/schema.fbs``): the ``TFL3`` identifier, every table,
   vtable, vector and string inside the file, every tensor / buffer / operator-code /
   subgraph index in range, every signature pointing at existing tensors. Pure Python, no
   TensorFlow, a few milliseconds.
2. :func:`probe_in_subprocess` -- for files whose bytes are not vouched for by a manifest
   digest (older artifacts, files edited by hand): open the model with the interpreter in a
   child process first; if the child dies (signal) or fails, the file is refused with the
   reason, and this process never opens it. This costs a Python + TensorFlow start-up (seconds).

A manifest digest that matches (checked at load) means the bytes are the exporter's, which ran
them through the interpreter during validation; the probe is skipped then.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

from illia_export.errors import ArtifactError

#: Seconds the child process may take to open the model.
PROBE_TIMEOUT = 120.0


class _Corrupt(Exception):
    pass


class _Reader:
    """Bounds-checked flatbuffer reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)

    def _check(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise _Corrupt(f"{what} at byte {pos} (+{size}) lies outside the file ({self.n} bytes)")

    def u8(self, pos: int) -> int:
        self._check(pos, 1, "a byte")
        return self.data[pos]

    def u16(self, pos: int) -> int:
        self._check(pos, 2, "a uint16")
        return struct.unpack_from("<H", self.data, pos)[0]

    def u32(self, pos: int) -> int:
        self._check(pos, 4, "a uint32")
        return struct.unpack_from("<I", self.data, pos)[0]

    def i32(self, pos: int) -> int:
        self._check(pos, 4, "an int32")
        return struct.unpack_from("<i", self.data, pos)[0]

    def u64(self, pos: int) -> int:
        self._check(pos, 8, "a uint64")
        return struct.unpack_from("<Q", self.data, pos)[0]

    def table(self, pos: int) -> _Table:
        vt = pos - self.i32(pos)
        vt_size = self.u16(vt)
        if vt_size < 4 or vt_size % 2:
            raise _Corrupt(f"a vtable at byte {vt} has size {vt_size}")
        self._check(vt, vt_size, "a vtable")
        tsize = self.u16(vt + 2)
        self._check(pos, tsize, "a table")
        return _Table(self, pos, vt, vt_size, tsize)


class _Table:
    def __init__(self, r: _Reader, pos: int, vt: int, vt_size: int, tsize: int) -> None:
        self.r, self.pos, self.vt, self.vt_size, self.tsize = r, pos, vt, vt_size, tsize

    def _field(self, i: int) -> int | None:
        off = 4 + 2 * i
        if off >= self.vt_size:
            return None
        fo = self.r.u16(self.vt + off)
        if fo == 0:
            return None
        if fo >= self.tsize:
            raise _Corrupt(f"field {i} of the table at byte {self.pos} lies past its end")
        return self.pos + fo

    def scalar(self, i: int, kind: str, default: int = 0) -> int:
        p = self._field(i)
        if p is None:
            return default
        return {"u8": self.r.u8, "u32": self.r.u32, "i32": self.r.i32, "u64": self.r.u64}[kind](p)

    def _target(self, i: int) -> int | None:
        p = self._field(i)
        if p is None:
            return None
        return p + self.r.u32(p)

    def table(self, i: int) -> _Table | None:
        t = self._target(i)
        return None if t is None else self.r.table(t)

    def vector(self, i: int, elem_size: int) -> tuple[int, int]:
        """``(start, length)`` of vector field `i` ((0, 0) when absent), bounds-checked."""
        t = self._target(i)
        if t is None:
            return 0, 0
        length = self.r.u32(t)
        self.r._check(t + 4, length * elem_size, f"a vector of {length} elements")
        return t + 4, length

    def ints(self, i: int) -> list[int]:
        start, n = self.vector(i, 4)
        return [self.r.i32(start + 4 * k) for k in range(n)]

    def tables(self, i: int) -> list[_Table]:
        start, n = self.vector(i, 4)
        return [self.r.table(start + 4 * k + self.r.u32(start + 4 * k)) for k in range(n)]

    def string(self, i: int) -> str | None:
        start, n = self.vector(i, 1)
        if start == 0 and n == 0 and self._field(i) is None:
            return None
        return self.r.data[start : start + n].decode("utf-8", errors="replace")


def verify_flatbuffer(data: bytes, name: str = "model") -> None:
    """Bounds-check a TFLite flatbuffer (see the module docstring).

    Raises:
        ArtifactError: naming what is wrong.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError(f"{name} is not a TFLite model (no 'TFL3' identifier; truncated or another file)")
    r = _Reader(data)
    try:
        model = r.table(r.u32(0))
        codes = model.tables(1)
        buffers = model.tables(4)
        for b in buffers:
            b.vector(0, 1)
            offset, size = b.scalar(1, "u64"), b.scalar(2, "u64")
            if offset > 1 and offset + size > len(data):
                raise _Corrupt(f"a buffer at offset {offset} (+{size}) lies outside the file")
        subgraphs = model.tables(2)
        if not subgraphs:
            raise _Corrupt("the model has no subgraph")
        for g_i, g in enumerate(subgraphs):
            tensors = g.tables(0)
            nt = len(tensors)
            for t in tensors:
                if any(d < -1 for d in t.ints(0)):
                    raise _Corrupt(f"subgraph {g_i}: a tensor has a negative dim")
                t.ints(7)
                if t.scalar(2, "u32") >= max(1, len(buffers)):
                    raise _Corrupt(
                        f"subgraph {g_i}: a tensor names buffer {t.scalar(2, 'u32')} of {len(buffers)}"
                    )
                if t.scalar(1, "u8") > 64:
                    raise _Corrupt(f"subgraph {g_i}: a tensor has an unknown type {t.scalar(1, 'u8')}")
                t.string(3)
            for which, idx in (("input", g.ints(1)), ("output", g.ints(2))):
                if any(not 0 <= k < nt for k in idx):
                    raise _Corrupt(f"subgraph {g_i}: a graph {which} names a tensor outside [0, {nt})")
            for op in g.tables(3):
                if op.scalar(0, "u32") >= len(codes):
                    raise _Corrupt(
                        f"subgraph {g_i}: an operator names opcode {op.scalar(0, 'u32')} of {len(codes)}"
                    )
                for k in op.ints(1) + op.ints(2) + op.ints(8):
                    if not -1 <= k < nt:
                        raise _Corrupt(f"subgraph {g_i}: an operator names tensor {k} outside [-1, {nt})")
                op.table(4)
                op.vector(5, 1)
        for sig in model.tables(7):
            sub = sig.scalar(4, "u32")
            if sub >= len(subgraphs):
                raise _Corrupt(f"a signature names subgraph {sub} of {len(subgraphs)}")
            nt = len(subgraphs[sub].tables(0))
            for tm in sig.tables(0) + sig.tables(1):
                tm.string(0)
                if tm.scalar(1, "u32") >= nt:
                    raise _Corrupt(f"a signature names tensor {tm.scalar(1, 'u32')} outside [0, {nt})")
            sig.string(2)
        for md in model.tables(6):
            md.string(0)
            if md.scalar(1, "u32") >= max(1, len(buffers)):
                raise _Corrupt("a metadata entry names a buffer out of range")
    except _Corrupt as exc:
        raise ArtifactError(f"{name} is a corrupt TFLite model (truncated or modified): {exc}") from None
    except RecursionError:  # pragma: no cover - cannot happen: the walk is not recursive
        raise ArtifactError(f"{name} is a corrupt TFLite model") from None


_PROBE = """
import sys, warnings
warnings.simplefilter("ignore")
path = sys.argv[1]
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter
it = Interpreter(model_path=path, num_threads=1)
for key in it.get_signature_list():
    it.get_signature_runner(key).get_input_details()
it.allocate_tensors()
print("ok")
"""


def probe_in_subprocess(path: str | os.PathLike, timeout: float = PROBE_TIMEOUT) -> None:
    """Open the model with the TFLite interpreter in a child process; refuse it if that fails.

    Raises:
        ArtifactError: the child crashed (e.g. SIGSEGV), failed or timed out.
    """
    p = Path(path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(p)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ArtifactError(
            f"{p}: the TFLite interpreter did not open the model within {timeout:g} s"
        ) from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ArtifactError(
            f"{p}: the TFLite interpreter crashed ({name}) opening this model in a test process; the file "
            "is corrupt (truncated or modified). Re-export it"
        )
    if proc.returncode != 0 or "ok" not in proc.stdout:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ArtifactError(
            f"{p}: the TFLite interpreter cannot open this model: {lines[-1] if lines else 'failed'}"
        )


def verify_tflite_file(path: str | os.PathLike, trusted: bool = False) -> None:
    """:func:`verify_flatbuffer` on the file, then :func:`probe_in_subprocess` unless `trusted`
    (its bytes matched the manifest digest)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {p}: {exc}") from exc
    verify_flatbuffer(data, str(p))
    if not trusted:
        probe_in_subprocess(p)
