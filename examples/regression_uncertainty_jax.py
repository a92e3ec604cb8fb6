"""The JAX version of ``examples/regression_uncertainty.py``: a heteroscedastic Flax-NNX regressor
exported to ONNX and TFLite with its likelihood.

1. Train a Bayesian MLP (``illia_export.nn.jax`` layers, the ELBO of ``illia_export.losses.jax``
   with a Gaussian negative log-likelihood, optax Adam) on scikit-learn's ``load_diabetes``
   (same split and standardization as the PyTorch example). The model returns a dict
   ``{"mean": ..., "log_variance": ...}``: the exporter takes the output names from its keys and
   infers the likelihood's scale parameterization from them.
2. Export it to ONNX and TFLite with ``task="regression", likelihood="gaussian"``.
3. Run Monte Carlo inference on the held-out patients through ``illia_export.runtime`` on both
   artifacts (same seed: same numbers) and report NLL, RMSE and interval coverage.

Run::

    python examples/regression_uncertainty_jax.py --out outputs/regression_jax
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

import illia_export
from illia_export.datasets import load_diabetes_split
from illia_export.distributions.jax import GaussianDistribution
from illia_export.nn.jax import Linear

LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Largest difference allowed between the ONNX and TFLite predictive summaries (same seed).
AGREEMENT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Config:
    hidden: int = 16
    steps: int = 1500
    learning_rate: float = 1e-2
    num_samples: int = 200
    rho_init: float = -5.0
    prior_std: float = 0.5
    test_fraction: float = 0.25
    seed: int = 0


class HeteroscedasticMLP(nnx.Module):
    """``[B, 10] -> {"mean": [B, 1], "log_variance": [B, 1]}``."""

    def __init__(self, in_features: int, config: Config, rngs: nnx.Rngs) -> None:
        def layer(i: int, o: int) -> Linear:
            def gauss(shape):
                return GaussianDistribution(
                    shape, std_prior=config.prior_std, rho_init=config.rho_init, rngs=rngs
                )

            return Linear(i, o, weights_distribution=gauss((o, i)), bias_distribution=gauss((o,)), rngs=rngs)

        self.hidden = layer(in_features, config.hidden)
        self.mean_head = layer(config.hidden, 1)
        self.log_variance_head = layer(config.hidden, 1)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        h = jax.nn.relu(self.hidden(x))
        return {"mean": self.mean_head(h), "log_variance": self.log_variance_head(h)}


def gaussian_nll(outputs: dict[str, jax.Array], targets: jax.Array) -> jax.Array:
    lv = outputs["log_variance"]
    return jnp.mean(0.5 * (lv + (targets - outputs["mean"]) ** 2 * jnp.exp(-lv))) + 0.9189385332046727


def train(x: np.ndarray, y: np.ndarray, config: Config, log=print) -> HeteroscedasticMLP:
    from illia_export.losses.jax import ELBOLoss

    model = HeteroscedasticMLP(x.shape[1], config, nnx.Rngs(params=config.seed, sample=config.seed + 1))
    num_params = sum(m.num_params for _, m in nnx.iter_modules(model) if isinstance(m, GaussianDistribution))
    # The KL term is the per-parameter mean; x num_params / N gives KL / N per example.
    elbo = ELBOLoss(gaussian_nll, num_samples=1, kl_weight=num_params / len(y))
    optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(elbo: ELBOLoss, model: HeteroscedasticMLP, optimizer: nnx.Optimizer, x, y):
        # the loss is an nnx.Module (as in the seed), so it can be a transform argument
        loss, grads = nnx.value_and_grad(
            lambda loss_fn, m: loss_fn(x, y, m), argnums=nnx.DiffState(1, nnx.Param)
        )(elbo, model)
        optimizer.update(model, grads)
        return loss

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    # cached_partial flattens the modules once, not on each of the 1500 calls (nnx.jit's overhead)
    train_step = nnx.cached_partial(step, elbo, model, optimizer)
    for i in range(config.steps):
        loss = train_step(xj, yj)
        if i % 300 == 0 or i == config.steps - 1:
            log(f"  step {i:4d}  negative ELBO per example {float(loss):.4f}")
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="outputs/regression_jax", help="folder for the artifacts and metrics.json"
    )
    parser.add_argument(
        "--samples", type=int, default=Config.num_samples, help="Monte Carlo samples at inference"
    )
    args = parser.parse_args(argv)
    config = Config(num_samples=args.samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    data = load_diabetes_split(config.seed, config.test_fraction)
    print(f"load_diabetes: {len(data.y_train)} training, {len(data.y_test)} held-out patients")
    model = train(data.x_train, data.y_train, config)

    from illia_export.evaluation import summarize_regression
    from illia_export.runtime import load

    reports, predictions = {}, {}
    for fmt in ("onnx", "tflite"):
        path = out / f"diabetes_regressor.{fmt}"
        manifest = illia_export.export(
            model, data.x_train[:4], path, format=fmt, task="regression", likelihood="gaussian"
        )
        lk = manifest.likelihood
        print(
            f"exported {path} (outputs {[o.name for o in manifest.outputs]}, likelihood {lk.name} with scale "
            f"{lk.scale!r} as {lk.scale_kind}; validation max diff {manifest.validation.max_abs_diff:.2g})"
        )
        predictions[fmt] = load(path).predict(data.x_test, num_samples=config.num_samples, seed=config.seed)
        reports[fmt] = summarize_regression(predictions[fmt], data.y_test, LEVELS)

    diff = max(
        float(np.max(np.abs(getattr(predictions["onnx"], k) - getattr(predictions["tflite"], k))))
        for k in ("mean", "predictive_variance")
    )
    report = dict(reports["tflite"], onnx=reports["onnx"], onnx_tflite_max_diff=diff)
    r = reports["tflite"]
    print(f"held-out metrics (TFLite, {config.num_samples} MC samples, standardized target):")
    print(f"  NLL {r['nll']:.3f} nats   RMSE {r['rmse']:.3f}")
    for c in r["coverage"]:
        print(f"  {c['level']:.0%} interval covers {c['coverage']:.1%} of held-out targets")
    print(
        f"  mean variance: aleatoric {r['mean_aleatoric_variance']:.3f}, epistemic {r['mean_epistemic_variance']:.4f}"
    )
    print(f"ONNX and TFLite agree to {diff:.2g} (mean and predictive variance, same seed)")
    if diff > AGREEMENT_TOLERANCE:
        raise SystemExit(f"ONNX and TFLite disagree by {diff:.3g} > {AGREEMENT_TOLERANCE}")
    (out / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    print(f"saved {out / 'metrics.json'}  ({time.perf_counter() - t0:.1f} s)")
    return report


if __name__ == "__main__":
    main()
