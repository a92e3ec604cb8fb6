"""Distribution validation: the artifact's Monte Carlo output against the source model's own sampling.

Same-noise validation proves that the graph computes what the model computes *for a given
noise*; it cannot see randomness that was removed (a draw baked in as a constant, a dropout
left off), a wrong transform of the noise, or a ``local`` variant that is not exact. This check
samples the source model with its own RNG and the artifact with the runtime's noise and
compares, per output element, the means (in standard errors) and the standard deviations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from illia_export.errors import ToleranceError

#: Samples per side (the prototype: ratio 0.95-1.07 where correct at 1000).
DEFAULT_SAMPLES = 1000
#: Accepted band of the median std ratio (artifact / source).
STD_RATIO_BAND = (0.8, 1.25)
#: Largest accepted median |z| of the mean difference (0.67 expected under the null).
MAX_MEDIAN_Z = 2.0


def compare(
    names: Sequence[str],
    source: Sequence[np.ndarray],
    artifact: Sequence[np.ndarray],
    what: str = "the artifact",
) -> dict[str, dict[str, float]]:
    """Compare ``[N, ...]`` samples per output; return the per-output record, raise on a mismatch.

    Raises:
        ToleranceError: naming the output, the measured ratio / z and the likely cause.
    """
    record: dict[str, dict[str, float]] = {}
    problems: list[str] = []
    for name, src, art in zip(names, source, artifact):
        src = np.asarray(src, np.float64).reshape(src.shape[0], -1)
        art = np.asarray(art, np.float64).reshape(art.shape[0], -1)
        if not (np.isfinite(src).all() and np.isfinite(art).all()):
            problems.append(f"- {name}: non-finite samples (source or artifact)")
            continue
        n_src, n_art = src.shape[0], art.shape[0]
        sd_s, sd_a = src.std(0, ddof=1), art.std(0, ddof=1)
        scale = 1e-6 * (1.0 + np.abs(src.mean(0)))
        random_s, random_a = sd_s > scale, sd_a > scale
        entry: dict[str, float] = {"samples": float(min(n_src, n_art))}
        if not random_s.any() and not random_a.any():
            entry.update(std_ratio=1.0, mean_z_median=0.0)
            record[name] = entry
            continue
        both = random_s | random_a
        ratio = float(np.median(sd_a[both] / np.maximum(sd_s[both], scale[both])))
        z = (art.mean(0) - src.mean(0)) / np.sqrt(sd_a**2 / n_art + sd_s**2 / n_src + scale**2)
        z_med = float(np.median(np.abs(z[both])))
        entry.update(std_ratio=ratio, mean_z_median=z_med)
        record[name] = entry
        low, high = STD_RATIO_BAND
        if not low <= ratio <= high:
            if ratio < low:
                cause = (
                    "randomness is missing: a draw was baked into the graph as a constant, a dropout module is "
                    "off in the artifact (see mc_dropout), or a local-reparameterization variant is not exact "
                    "for this model"
                )
            else:
                cause = "the artifact adds spread: a noise transform is wrong or noise is fed to the wrong draw"
            problems.append(f"- {name}: MC std is {ratio:.3g}x the source model's own ({cause})")
        elif z_med > MAX_MEDIAN_Z:
            problems.append(
                f"- {name}: MC means differ from the source model's own (median |z| = {z_med:.3g}): a noise "
                "transform is wrong (e.g. a Bernoulli/uniform draw) or a draw feeds the wrong place"
            )
    if problems:
        raise ToleranceError(
            f"distribution check failed: {what}'s Monte Carlo output does not match the source model's own "
            "sampling\n" + "\n".join(problems)
        )
    return record
