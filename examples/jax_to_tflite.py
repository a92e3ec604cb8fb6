"""From Flax-NNX to TFLite (and ONNX): a Bayesian classifier with uncertainty on a mobile format.

The JAX version of ``examples/digits_uncertainty.py``:

1. Train a Bayesian MLP (``illia_export.nn.jax`` layers, mean-field Gaussian weights, the ELBO of
   ``illia_export.losses.jax``, optax Adam) on the 8x8 digits 0-7 of scikit-learn's
   ``load_digits``; digits 8 and 9 are held out as out-of-distribution (OOD) inputs.
2. Export it with the JAX exporter to TFLite (the format for Android/iOS) and ONNX
   (``task="classification"``): the weight noise ``eps`` becomes explicit graph inputs, so the
   TFLite model needs no random ops (no Flex delegate).
3. Run Monte Carlo inference through ``illia_export.runtime`` on the TFLite artifact (seeded
   noise), check that the ONNX artifact gives the same predictions for the same seed, and report
   accuracy, NLL, Brier score, ECE and the OOD AUROC from predictive entropy and mutual
   information; save histograms of both uncertainties in vs. out of distribution.

Run::

    python examples/jax_to_tflite.py --quick --out outputs/jax_tflite
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import illia_export  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from illia_export.datasets import IN_DISTRIBUTION_CLASSES, DigitsData, load_digits_split
from illia_export.distributions.jax import GaussianDistribution
from illia_export.nn.jax import Linear

#: Largest difference allowed between the TFLite and ONNX predictive probabilities.
AGREEMENT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Config:
    """Training and inference settings of one run."""

    hidden: int
    steps: int
    num_samples: int
    learning_rate: float = 2e-2
    rho_init: float = -5.0
    prior_std: float = 1.0
    seed: int = 0


QUICK = Config(hidden=64, steps=400, num_samples=64)
FULL = Config(hidden=128, steps=800, num_samples=256, learning_rate=1e-2)


class BayesianMLP(nnx.Module):
    """Flatten -> Linear(64 -> hidden) ReLU -> Linear(hidden -> 8): ``[B, 1, 8, 8]`` -> logits ``[B, 8]``."""

    def __init__(
        self, config: Config, rngs: nnx.Rngs, num_classes: int = len(IN_DISTRIBUTION_CLASSES)
    ) -> None:
        def gaussian(shape: tuple[int, ...]) -> GaussianDistribution:
            return GaussianDistribution(
                shape, std_prior=config.prior_std, rho_init=config.rho_init, rngs=rngs
            )

        h = config.hidden
        self.fc1 = Linear(
            64, h, weights_distribution=gaussian((h, 64)), bias_distribution=gaussian((h,)), rngs=rngs
        )
        self.fc2 = Linear(
            h,
            num_classes,
            weights_distribution=gaussian((num_classes, h)),
            bias_distribution=gaussian((num_classes,)),
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        return self.fc2(jax.nn.relu(self.fc1(x)))


def load_data(seed: int = 0, test_fraction: float = 0.25) -> DigitsData:
    """Digits as float32 ``[N, 1, 8, 8]``: train/test of classes 0-7, and all 8s and 9s as OOD."""
    return load_digits_split(seed, test_fraction, IN_DISTRIBUTION_CLASSES)


def train(data: DigitsData, config: Config, log=print) -> BayesianMLP:
    """Full-batch ELBO training with optax Adam; the KL is weighted for a per-example ELBO."""
    from illia_export.losses.jax import ELBOLoss

    model = BayesianMLP(config, nnx.Rngs(params=config.seed, sample=config.seed + 1))
    num_params = sum(m.num_params for _, m in nnx.iter_modules(model) if isinstance(m, GaussianDistribution))

    def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    # The KL term is the per-parameter mean; x num_params / N gives KL / N per example.
    elbo = ELBOLoss(cross_entropy, num_samples=1, kl_weight=num_params / len(data.y_train))
    optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model: BayesianMLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(lambda m: elbo(x, y, m), argnums=nnx.DiffState(0, nnx.Param))(model)
        optimizer.update(model, grads)
        return loss

    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    train_step = nnx.cached_partial(step, model, optimizer)  # flattens the modules once, not per step
    for i in range(config.steps):
        loss = train_step(x, y)
        if i % 100 == 0 or i == config.steps - 1:
            log(f"  step {i:4d}  negative ELBO per example {float(loss):.4f}")
    return model


def save_uncertainty_figure(pred_test, pred_ood, report: dict, path: Path) -> Path:
    """Histograms of mutual information and predictive entropy, in vs. out of distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in (
        (axes[0], "mutual_information", "Mutual information (epistemic)"),
        (axes[1], "predictive_entropy", "Predictive entropy (total)"),
    ):
        a, b = np.asarray(getattr(pred_test, key)), np.asarray(getattr(pred_ood, key))
        bins = np.linspace(0, max(a.max(), b.max()) * 1.02 + 1e-9, 40)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label="test digits 0-7")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label="digits 8-9 (OOD)")
        ax.set_title(f"TFLite, {title}: OOD AUROC {report['ood']['auroc_' + key]:.3f}", fontsize=9)
        ax.set_xlabel("nats")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_report(report: dict) -> str:
    """A short table of the example's metrics."""
    ood = report["ood"]
    rows = [
        ("test accuracy (digits 0-7)", f"{100 * report['accuracy']:.2f} %"),
        ("test NLL", f"{report['nll']:.4f} nats"),
        ("test Brier score", f"{report['brier']:.4f}"),
        ("test ECE (15 bins)", f"{report['ece']:.4f}"),
        ("OOD AUROC, predictive entropy", f"{ood['auroc_predictive_entropy']:.4f}"),
        ("OOD AUROC, mutual information", f"{ood['auroc_mutual_information']:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> dict:
    """Run the example; returns the metrics (also written to ``OUT/metrics.json``).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``): ``--quick``, ``--out DIR``,
            ``--samples S``, ``--seed SEED``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer steps and samples")
    parser.add_argument(
        "--out", default="outputs/jax_tflite", help="output folder (default: outputs/jax_tflite)"
    )
    parser.add_argument(
        "--samples", type=int, help="Monte Carlo samples per input (default: 64 quick, 256 full)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the runtime (default: 0)")
    args = parser.parse_args(argv)

    import illia_export
    from illia_export import runtime
    from illia_export.evaluation import summarize_predictions

    config = QUICK if args.quick else FULL
    num_samples = args.samples or config.num_samples
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    data = load_data(seed=config.seed)
    print(f"digits: {len(data.y_train)} train / {len(data.y_test)} test (0-7), {len(data.y_ood)} OOD (8-9)")
    print(
        f"[1/3] training a Bayesian Flax-NNX MLP (hidden {config.hidden}, {config.steps} full-batch Adam steps)"
    )
    model = train(data, config)

    print("[2/3] exporting with the JAX exporter (noise as explicit inputs)")
    paths = {"tflite": out / "digits_mlp.tflite", "onnx": out / "digits_mlp.onnx"}
    example = jnp.zeros((2, 1, 8, 8), jnp.float32)
    for fmt, path in paths.items():
        manifest = illia_export.export(model, example, path, format=fmt, task="classification")
        v = manifest.validation
        diff = f"max abs diff {v.max_abs_diff:.2g}" if v else "not validated"
        print(f"  {fmt:<7} -> {path}  ({len(manifest.noise)} noise inputs, {diff})")

    print(f"[3/3] Monte Carlo inference from the TFLite artifact ({num_samples} samples, seed {args.seed})")
    predictions = {}
    for fmt, path in paths.items():
        predictor = runtime.load(path)
        predictions[fmt] = (
            predictor.predict(data.x_test, num_samples=num_samples, seed=args.seed),
            predictor.predict(data.x_ood, num_samples=num_samples, seed=args.seed),
        )
    report = summarize_predictions(predictions["tflite"][0], data.y_test, predictions["tflite"][1])
    agreement = max(
        float(np.max(np.abs(np.asarray(a.probabilities) - np.asarray(b.probabilities))))
        for a, b in zip(predictions["tflite"], predictions["onnx"])
    )
    if not agreement <= AGREEMENT_TOLERANCE:
        raise RuntimeError(
            f"TFLite and ONNX artifacts disagree for the same seed: max abs difference of the "
            f"predictive probabilities {agreement:.3g} > {AGREEMENT_TOLERANCE}"
        )
    print(f"  ONNX artifact agrees with TFLite for seed {args.seed}: max |dp| = {agreement:.2g}")
    print(format_report(report))
    figure = save_uncertainty_figure(*predictions["tflite"], report, out / "uncertainty_hist.png")
    print(f"  {figure}")
    report.update(
        {
            "config": config.__dict__,
            "figures": [str(figure)],
            "num_samples": num_samples,
            "seed": args.seed,
            "tflite_onnx_max_abs_diff": agreement,
            "artifacts": {k: str(v) for k, v in paths.items()},
            "seconds": {"total": time.perf_counter() - start},
        }
    )
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(f"metrics: {out / 'metrics.json'}  (total {report['seconds']['total']:.1f} s)")
    return report


if __name__ == "__main__":
    main()
