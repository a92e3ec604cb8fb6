"""The sizes at which discovery and validation run a model, and which input dim a draw follows.

A noise input can only be sized at run time from the model's inputs: every dim of a draw is
either fixed or ``k`` times one dynamic input dim (``"batch"``, ``"seq_len"``, a user-named
``"height"``; docs/formats.md, "Dims"). Discovery learns which by running the eager model at
several sizes, varying one dynamic dim at a time: the batch at ``B``, ``2B + 1`` (odd) and a
size above both and above 8; every other dynamic dim ``T`` at ``T + 3`` (or ``T - 1`` when the
model refuses longer inputs, e.g. past its position table). Each run must make the same list of
draws (count, modules, ops, kinds, ranks): a model that draws once more at odd batch sizes, or
above some size, would otherwise export a noise list that is right only at the example's size.
Models that split their batch into groups (BatchEnsemble) refuse odd batches: they are run at
multiples of the capture batch instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError, IlliaExportError

Sizes = dict[str, int]
#: The smallest batch size discovery probes above the example's: draws that change "above batch 8"
#: are caught even for a small example.
LARGE_BATCH = 9
#: How much longer than the example the other dynamic dims are probed.
EXTRA_STEPS = 3


def parse_dim(dim: mf.Dim) -> tuple[int, str] | None:
    """``"seq_len"`` -> ``(1, "seq_len")``, ``"2*batch"`` -> ``(2, "batch")``; ints and ``"samples"`` -> None."""
    return mf.dim_factor(dim)


def dim_name(k: int, name: str) -> str:
    return name if k == 1 else f"{k}*{name}"


def resolve(dims: Sequence[mf.Dim], sizes: Sizes) -> tuple[int, ...]:
    """The concrete shape of `dims` at `sizes`."""
    out = []
    for d in dims:
        parsed = parse_dim(d)
        out.append(int(d) if parsed is None else parsed[0] * sizes[parsed[1]])
    return tuple(out)


def describe(sizes: Sizes) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def batch_probes(batch: int, grouped: bool) -> list[int]:
    """Batch sizes other than `batch`: odd and large ones, or multiples of `batch` for grouped models."""
    if grouped:
        return [2 * batch, batch * max(3, -(-LARGE_BATCH // batch))]
    return [2 * batch + 1, max(3 * batch, LARGE_BATCH)]


def other_probes(size: int) -> list[int]:
    """Sizes to try for a non-batch dynamic dim of example size `size`, the first the model accepts wins."""
    return [size + EXTRA_STEPS] + ([size - 1] if size > 1 else [])


class Probe:
    """The runs of one discovery: ``run(sizes)`` for the base sizes and one dim varied at a time."""

    def __init__(self, run: Callable[[Sizes], Any], base: Sizes) -> None:
        self.run = run
        self.base = dict(base)
        self.sizes: list[Sizes] = []
        self.results: list[Any] = []
        self.grouped = False  # the model refused an odd batch; probed at multiples instead
        self.probed: Sizes = {}  # per non-batch dim, the other size it was run at

    def go(self) -> Probe:
        self._add(self.base)  # errors here are the example's: the caller reports them
        self._batches()
        for name, size in self.base.items():
            if name != mf.BATCH_DIM:
                self._other(name, size)
        return self

    def _add(self, sizes: Sizes) -> None:
        self.results.append(self.run(sizes))
        self.sizes.append(dict(sizes))

    def _batches(self) -> None:
        batch = self.base[mf.BATCH_DIM]
        try:
            for b in batch_probes(batch, grouped=False):
                self._add({**self.base, mf.BATCH_DIM: b})
        except IlliaExportError:
            raise
        except Exception:
            # e.g. BatchEnsemble: the batch must be a multiple of its members
            del self.sizes[1:], self.results[1:]
            self.grouped = True
            for b in batch_probes(batch, grouped=True):
                self._add({**self.base, mf.BATCH_DIM: b})

    def _other(self, name: str, size: int) -> None:
        last: BaseException | None = None
        for other in other_probes(size):
            try:
                self._add({**self.base, name: other})
                self.probed[name] = other
                return
            except IlliaExportError:
                raise
            except Exception as exc:
                last = exc
        text = str(last).strip().splitlines() if last else []
        raise ExportError(
            f"the model runs at {name}={size} but rejects every other size tried ({other_probes(size)}): "
            f"{text[-1] if text else type(last).__name__}. A dynamic {name!r} must accept other sizes; to export "
            f"it fixed at {size}, pass dynamic_axes={{<input>: {{<axis>: None}}}} (CLI: --input-shape with '={size}' "
            "at that axis)"
        ) from last

    def validation_sizes(self) -> list[Sizes]:
        """Two sizes other than the base: a probed (odd) batch with every other dim changed, and
        the largest probed batch at the base's other dims."""
        batches = [s[mf.BATCH_DIM] for s in self.sizes[1:3]]
        return [{**self.base, **self.probed, mf.BATCH_DIM: batches[0]}, {**self.base, mf.BATCH_DIM: batches[1]}]


def follow_dims(shapes: Sequence[Sequence[int]], sizes: Sequence[Sizes], where: str) -> list[mf.Dim]:
    """Which input dim each axis of a tensor follows, from its shapes at the probed `sizes`.

    An axis whose size never changes is fixed; one that is ``k`` times the same dynamic dim at
    every run follows it; anything else (a product such as ``batch * seq_len``, a size that
    depends on the data) cannot be sized from the inputs and is refused.
    """
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        detail = "; ".join(f"rank {len(s)} at {describe(z)}" for s, z in zip(shapes, sizes))
        raise ExportError(f"{where} has a rank that depends on the input sizes ({detail})")
    dims: list[mf.Dim] = []
    for axis in range(len(shapes[0])):
        values = [int(s[axis]) for s in shapes]
        if len(set(values)) == 1:
            dims.append(values[0])
            continue
        found = None
        for name, base in sizes[0].items():
            k, rem = divmod(values[0], base)
            if rem == 0 and k >= 1 and all(v == k * z[name] for v, z in zip(values, sizes)):
                found = dim_name(k, name)
                break
        if found is None:
            detail = ", ".join(f"{v} at {describe(z)}" for v, z in zip(values, sizes))
            raise ExportError(
                f"{where} has an axis {axis} of size {detail}: it is not a multiple of one dynamic input dim "
                "(a product like batch*seq_len, or a size that depends on the data), so a graph input cannot be "
                "sized from it. Keep the draw's shape that of one input dim, or fix the dims it mixes "
                "(dynamic_axes={<input>: {<axis>: None}})"
            )
        dims.append(found)
    return dims


def check_same_draws(draw_lists: Sequence[Sequence[Any]], sizes: Sequence[Sizes]) -> None:
    """Refuse a model whose list of draws (count, module, op, kind, rank) depends on the input sizes."""

    def key(d) -> tuple:
        return (d.module, d.call.op, d.call.kind, d.call.transform, len(d.call.shape))

    def name(d) -> str:
        where = f"module {d.module!r}" if d.module else "the model's forward"
        return f"{where} ({d.call.op})"

    first = draw_lists[0]
    for draws, z in zip(draw_lists[1:], sizes[1:]):
        for i in range(max(len(first), len(draws))):
            a = first[i] if i < len(first) else None
            b = draws[i] if i < len(draws) else None
            if a is not None and b is not None and key(a) == key(b):
                continue
            if b is None:
                what = f"{name(a)} draws at {describe(sizes[0])} but not at {describe(z)}"
            elif a is None:
                what = f"{name(b)} makes an extra draw at {describe(z)} that it does not make at {describe(sizes[0])}"
            else:
                what = f"draw {i} is {name(a)} at {describe(sizes[0])} but {name(b)} at {describe(z)}"
            raise ExportError(
                f"the model makes {len(first)} random draws at {describe(sizes[0])} but {len(draws)} at "
                f"{describe(z)}: {what}. A data-dependent number of draws (one that depends on the batch size or "
                "another input size) cannot become a fixed list of noise inputs; make the module draw the same "
                "tensors at every size (one draw shaped like the batch instead of one per row or per step)"
            )
