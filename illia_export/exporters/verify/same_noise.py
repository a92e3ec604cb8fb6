"""Compare an exported artifact with its source model for the same noise (any backend).

Exporters produce outputs from both sides as numpy arrays; this module measures the worst
absolute difference per output, builds the manifest's :class:`Validation` record, and raises
:class:`ToleranceError` with a per-output report when the artifact disagrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from illia_export.artifact.manifest import Validation
from illia_export.errors import ToleranceError

DEFAULT_TOLERANCE = 1e-4
DEFAULT_RTOL = 1e-4
DEFAULT_NOISE_DRAWS = 3


@dataclass
class OutputCheck:
    """The comparison of one output over every noise draw and batch size."""

    name: str
    max_abs_diff: float
    tolerance: float
    rtol: float = 0.0
    within: bool = True

    @property
    def passed(self) -> bool:
        return self.within

    def line(self) -> str:
        status = "ok" if self.passed else "FAILED"
        rel = f" + {self.rtol:g} * |expected|" if self.rtol else ""
        return f"- {self.name}: max diff = {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}{rel}) {status}"


def noise_draws(
    shapes: Sequence[Sequence[int]],
    num_draws: int = DEFAULT_NOISE_DRAWS,
    num_samples: int | None = 2,
    seed: int = 0,
) -> list[list[np.ndarray]]:
    """`num_draws` random standard-normal noise sets plus one all-zero set (last).

    Each set holds one float32 array per shape, with a leading sample axis of `num_samples`
    when it is not None.
    """
    rng = np.random.default_rng(seed)
    lead = () if num_samples is None else (num_samples,)
    draws = [
        [rng.standard_normal(lead + tuple(shape)).astype(np.float32) for shape in shapes]
        for _ in range(num_draws)
    ]
    draws.append([np.zeros(lead + tuple(shape), np.float32) for shape in shapes])
    return draws


def check_deterministic(run, arrays, names: Sequence[str]) -> None:
    """Run the artifact twice on the same inputs and noise: the outputs must be identical.

    An artifact whose outputs change for a fixed noise draws hidden randomness of its own (a
    random op left in a TorchScript graph, numpy noise baked into the forward): the same seed
    would not reproduce its predictions.
    """
    first, second = run(arrays), run(arrays)
    for name, a, b in zip(names, first, second):
        if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
            raise ToleranceError(
                f"validation failed: output {name!r} of the artifact changes between two runs with the same inputs "
                "and noise: the model draws randomness that is not a noise input (the same seed would give other "
                "predictions)"
            )


class Comparison:
    """Accumulates per-output worst differences across noise draws and batch sizes."""

    def __init__(
        self, output_names: Sequence[str], tolerance: float = DEFAULT_TOLERANCE, rtol: float = 0.0
    ) -> None:
        self.names = list(output_names)
        self.tolerance = float(tolerance)
        self.rtol = float(rtol)
        self.worst = dict.fromkeys(self.names, 0.0)
        self.within = dict.fromkeys(self.names, True)
        self.draws = 0
        self.batch_sizes: list[int] = []
        self.zero_noise = False

    def add(
        self, got: Sequence[np.ndarray], expected: Sequence[np.ndarray], *, zero_noise: bool = False
    ) -> None:
        """Compare one run of the artifact (`got`) with the source model (`expected`)."""
        if len(got) != len(self.names) or len(expected) != len(self.names):
            raise ToleranceError(
                f"validation expected {len(self.names)} outputs, got {len(got)} from the artifact and "
                f"{len(expected)} from the source model"
            )
        for name, a, b in zip(self.names, got, expected):
            a = np.asarray(a)
            b = np.asarray(b)
            if a.shape != b.shape:
                raise ToleranceError(
                    f"validation: output {name!r} has shape {a.shape} in the artifact but {b.shape} in the source model"
                )
            if not a.size:
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            err = np.abs(a64 - b64)
            nan = np.isnan(a64) | np.isnan(b64)  # NaN anywhere, on either side, is a failure
            diff = float("inf") if nan.any() else float(np.max(err))
            if not np.isfinite(diff):
                diff = float("inf")
            ok = bool(np.all(err <= self.tolerance + self.rtol * np.abs(b64))) and not nan.any()
            self.worst[name] = max(self.worst[name], diff)
            self.within[name] = self.within[name] and ok
        self.draws += 1
        self.zero_noise = self.zero_noise or zero_noise

    def note_batch(self, batch: int) -> None:
        if batch not in self.batch_sizes:
            self.batch_sizes.append(batch)

    @property
    def checks(self) -> list[OutputCheck]:
        return [OutputCheck(n, self.worst[n], self.tolerance, self.rtol, self.within[n]) for n in self.names]

    def report(self) -> str:
        return "\n".join(c.line() for c in self.checks)

    def result(self, noise_draws_per_batch: int) -> Validation:
        """The manifest record; raises ToleranceError when any output is above tolerance."""
        validation = Validation(
            max_abs_diff=max(self.worst.values(), default=0.0),
            tolerance=self.tolerance,
            num_noise_draws=noise_draws_per_batch,
            includes_zero_noise=self.zero_noise,
            per_output=dict(self.worst),
            batch_sizes=list(self.batch_sizes),
            rtol=self.rtol,
            within_tolerance=all(self.within.values()),
        )
        if not validation.passed:
            raise ToleranceError(
                "validation failed: the exported artifact disagrees with the source model for the same noise\n"
                + self.report()
            )
        return validation
