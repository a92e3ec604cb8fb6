"""The one record every capture strategy returns, and the one tail of the pipeline consumes.

Why a record: the torch.export capture (:mod:`.strategy_export`) and the TorchScript capture
(:mod:`.strategy_script`, archives and ``format='torchscript'``) differ in how they turn a model
into a graph, but not in what happens next (write to a temporary file, same-noise validation,
distribution check, local variant, digest, rename: :func:`.pipeline.finish`). Each strategy says
what the tail needs to know here and nothing else, as torch.onnx's exporter does with its
ordered capture strategies; the rules (tolerances, the local-variant guard, the atomic write)
then exist once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.exporters.verify.same_noise import noise_draws

#: ``(inputs, noise) -> outputs``: the source model's outputs for the noise fed (numpy, per output).
Reference = Callable[[list[Any], list[np.ndarray]], list[np.ndarray]]
#: ``(step, draws) -> [(noise, expected outputs), ...]``: the cases of one validation step.
Cases = Callable[["ValidationStep", int], Iterable[tuple[list[np.ndarray], list[np.ndarray]]]]
#: ``(inputs, num, seed) -> [num, B, ...]`` per output: the source model's own sampling.
SourceSampling = Callable[[list[Any], int, int], list[np.ndarray]]


@dataclass
class ValidationStep:
    """One size the artifact is validated at (other than the captured one)."""

    batch: int
    inputs: list[Any]  # torch tensors resized to this step's sizes
    noise_shapes: list[tuple[int, ...]]  # per-call shapes of the noise inputs at these sizes
    num_samples: int | None  # the sample axis of the noise fed (None: a per-call graph)
    seed: int  # of the noise draws (or of the replayed generator)


def injected_cases(reference: Reference) -> Cases:
    """Cases from random standard-normal noise (plus zero noise, last) fed to `reference`."""

    def cases(step: ValidationStep, draws: int) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
        for noise in noise_draws(step.noise_shapes, draws, step.num_samples, seed=step.seed):
            yield noise, reference(step.inputs, noise)

    return cases


def sampled_once(sampling: SourceSampling) -> SourceSampling:
    """`sampling` drawn once per (inputs, num, seed): every distribution check of one capture
    (each format written from it, and the local variant) compares against the same source draws,
    so they are drawn once (a thousand eager forward passes each time otherwise).

    Inputs match by identity (the capture's own tensors, held by the cache entry); the source
    draws are seeded, so a repeat would give the same arrays.
    """
    drawn: list[tuple[list[Any], int, int, list[np.ndarray]]] = []

    def sample(inputs: list[Any], num: int, seed: int) -> list[np.ndarray]:
        for xs, n, s, values in drawn:
            if n == num and s == seed and len(xs) == len(inputs) and all(a is b for a, b in zip(xs, inputs)):
                return values
        values = sampling(inputs, num, seed)
        drawn.append((list(inputs), num, seed, values))
        return values

    return sample


def inject_per_sample(
    model, inputs: list[Any], noise: list[np.ndarray], targets: list[str], set_name: str, clear_name: str,
    outputs: Callable[[Any], list[Any]],
) -> list[np.ndarray]:
    """The source model's outputs ``[S, B, ...]`` for noise fed one sample at a time, per output.

    For sample s, module ``targets[k]`` of `model` gets ``noise[k][s]`` through its method
    `set_name` (``set_noise``, ``set_local_noise``), cleared with `clear_name` afterwards, also
    on error; `outputs` picks the output tensors from what the model returns.
    """
    import torch

    modules = dict(model.named_modules())
    per_sample: list[list[np.ndarray]] = []
    with torch.no_grad():
        for s in range(noise[0].shape[0]):
            for target, eps in zip(targets, noise):
                getattr(modules[target], set_name)(torch.from_numpy(eps[s]))
            try:
                out = model(*inputs)
            finally:
                for target in targets:
                    getattr(modules[target], clear_name)()
            per_sample.append([t.numpy() for t in outputs(out)])
    return [np.stack([ps[i] for ps in per_sample]) for i in range(len(per_sample[0]))]


@dataclass
class LocalPlan:
    """What a strategy knows about a local-reparameterization variant of its capture.

    The facts (`formats`, `draws`, `linear_calls`, `float_inputs`) are judged by the one guard,
    :func:`.pipeline.local_unavailable_reason`; `write` and `reference` serve the tail when the
    guard finds the variant exact.
    """

    formats: tuple[str, ...]  # the artifact formats this strategy writes a local variant for
    draws: list[tuple[str, str, bool]]  # per draw: (parameter, kind, owned by an illia Linear)
    linear_calls: dict[str, list[int]] | None  # Linear path -> input rank per call; None: not observable
    float_inputs: bool
    layers: list[str] = field(default_factory=list)  # the Linear layers, in noise-input order
    outputs: list[int] = field(default_factory=list)  # their output sizes
    #: ``(tmp_path, noise names, noise specs)``: write the local graph (inputs, then ``[S, B, out]`` noise)
    write: Callable[[Path, list[str], list[mf.NoiseSpec]], None] | None = None
    #: the source model under local reparameterization, one sample at a time
    reference: Reference | None = None


@dataclass
class CaptureResult:
    """A captured model, ready for the tail: the manifest draft and how to write and check it."""

    manifest: mf.Manifest  # the draft: inputs, noise, outputs, sample_axis, extra
    write: Callable[[Path], None]  # write the graph (no manifest yet) to the temporary path
    graph_names: list[str]  # the graph's inputs then its noise inputs, in feeding order
    steps: list[ValidationStep]  # where the same-noise validation runs
    cases: Cases  # the noise and the source's outputs for it at one step
    distribution_inputs: list[Any]  # the rows the distribution check samples
    #: the source model's own sampling (its own RNG), drawn once per capture (:func:`sampled_once`);
    #: None: no distribution check (a traced archive, which never had one: see :mod:`.traced`)
    source_samples: SourceSampling | None
    local: LocalPlan | None = None

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.manifest.outputs]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.manifest.inputs]

    @property
    def vectorized(self) -> bool:
        return self.manifest.sample_axis is not None
