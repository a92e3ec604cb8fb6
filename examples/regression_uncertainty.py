"""End-to-end demo: a heteroscedastic Bayesian regressor whose uncertainty survives export.

1. Train a small Bayesian MLP (``illia_export.nn.torch`` layers, mean-field Gaussian weights)
   on scikit-learn's ``load_diabetes`` (442 patients, 10 features; it ships with scikit-learn,
   no download). The network predicts, per patient, a Gaussian over the target: a mean and a
   log-variance (aleatoric noise). The loss is the ELBO with a Gaussian negative log-likelihood
   (``illia_export.losses.torch.ELBOLoss``); the weight posterior gives the epistemic spread.
2. Export it to ONNX with ``task="regression", likelihood="gaussian", scale="log_variance"``:
   the manifest records which output is the mean and which the log-variance.
3. Run Monte Carlo inference on held-out patients through ``illia_export.runtime``: the
   predictive distribution is the mixture of the S per-sample Gaussians, so
   ``Prediction.std`` combines the predicted noise with the spread over weight samples.
   Report NLL, RMSE and the coverage of the central intervals at several levels.
4. Save two figures: predictions with epistemic and total (epistemic + aleatoric) bands, and a
   calibration plot (observed coverage against nominal level).

Run it directly (about 10-30 s on two cores)::

    python examples/regression_uncertainty.py --out outputs/regression
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

import torch
from torch import nn

import illia_export
from illia_export.datasets import DiabetesData, load_diabetes_split
from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch import Linear

#: Levels of the central predictive intervals reported in metrics.json and the text summary.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Levels drawn in the calibration plot.
CURVE_LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


@dataclass(frozen=True)
class Config:
    """Training and inference settings."""

    hidden: int = 16
    steps: int = 1500
    learning_rate: float = 1e-2
    num_samples: int = 200
    rho_init: float = -5.0
    prior_std: float = 0.5
    test_fraction: float = 0.25
    seed: int = 0


def load_data(config: Config) -> DiabetesData:
    """``load_diabetes`` split at random (seeded), standardized on the training split."""
    return load_diabetes_split(config.seed, config.test_fraction)


class HeteroscedasticMLP(nn.Module):
    """``[B, 10] -> (mean [B, 1], log_variance [B, 1])``: one hidden Bayesian layer, two heads."""

    def __init__(self, in_features: int, config: Config) -> None:
        super().__init__()

        def gauss(shape):
            return GaussianDistribution(shape, std_prior=config.prior_std, rho_init=config.rho_init)

        def layer(i, o):
            return Linear(i, o, weights_distribution=gauss((o, i)), bias_distribution=gauss((o,)))

        self.hidden = layer(in_features, config.hidden)
        self.mean_head = layer(config.hidden, 1)
        self.log_variance_head = layer(config.hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.hidden(x))
        return self.mean_head(h), self.log_variance_head(h)


def gaussian_nll(outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood of `targets` under ``N(mean, exp(log_variance))``."""
    mean, log_variance = outputs
    return (
        0.5 * (log_variance + (targets - mean) ** 2 * torch.exp(-log_variance))
    ).mean() + 0.9189385332046727


def num_bayesian_params(model: nn.Module) -> int:
    return sum(m.num_params() for m in model.modules() if isinstance(m, GaussianDistribution))


def train(data: DiabetesData, config: Config, log=print) -> HeteroscedasticMLP:
    """Full-batch ELBO training (Adam): Gaussian NLL per example + KL / N_train."""
    from illia_export.losses.torch import ELBOLoss

    torch.manual_seed(config.seed)
    model = HeteroscedasticMLP(data.x_train.shape[1], config)
    # ELBOLoss's KL term is the per-parameter mean; x num_params / N gives KL / N per example.
    elbo = ELBOLoss(gaussian_nll, num_samples=1, kl_weight=num_bayesian_params(model) / len(data.y_train))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problem: thread start-up costs more than it saves
    try:
        for step in range(config.steps):
            optimizer.zero_grad()
            loss = elbo(x, y, model)
            loss.backward()
            optimizer.step()
            if step % 300 == 0 or step == config.steps - 1:
                log(f"  step {step:4d}  negative ELBO per example {loss.item():.4f}")
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def coverage_curve(prediction, y: np.ndarray, levels) -> list[float]:
    """Observed coverage of the mixture's central interval at each nominal level."""
    from illia_export import metrics

    out = []
    for level in levels:
        lo, hi = prediction.interval(float(level))
        out.append(metrics.interval_coverage(lo, hi, y))
    return out


def save_figures(prediction, data: DiabetesData, curve: list[float], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # back to the target's units (disease progression score)
    scale, shift = data.y_std, data.y_mean
    mean = prediction.mean[:, 0] * scale + shift
    epi = np.sqrt(prediction.epistemic_variance[:, 0]) * scale
    lo, hi = (b[:, 0] * scale + shift for b in prediction.interval(0.95))
    y = data.y_test[:, 0] * scale + shift
    order = np.argsort(mean)
    idx = np.arange(len(order))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.fill_between(
        idx,
        lo[order],
        hi[order],
        color="tab:blue",
        alpha=0.18,
        label="95% predictive (aleatoric + epistemic)",
    )
    ax.fill_between(
        idx,
        (mean - 1.96 * epi)[order],
        (mean + 1.96 * epi)[order],
        color="tab:orange",
        alpha=0.5,
        label="±1.96 epistemic std",
    )
    ax.plot(idx, mean[order], color="tab:blue", lw=1.5, label="predictive mean")
    ax.scatter(idx, y[order], s=10, color="black", zorder=3, label="held-out target")
    ax.set_xlabel("held-out patients, sorted by predicted mean")
    ax.set_ylabel("disease progression (load_diabetes target)")
    ax.set_title("Exported Bayesian regressor (ONNX): predictions with uncertainty")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    bands = out / "regression_predictions.png"
    fig.savefig(bands, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="gray", ls="--", label="perfect calibration")
    ax.plot(CURVE_LEVELS, curve, marker="o", color="tab:blue", label="exported model (held-out)")
    ax.set_xlabel("nominal level of the central interval")
    ax.set_ylabel("observed coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Interval calibration")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    calib = out / "regression_calibration.png"
    fig.savefig(calib, dpi=120)
    plt.close(fig)
    return [bands, calib]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="outputs/regression", help="folder for the artifact, figures, metrics.json"
    )
    parser.add_argument(
        "--samples", type=int, default=Config.num_samples, help="Monte Carlo samples at inference"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of training, the split and the runtime noise"
    )
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (no matplotlib needed)")
    args = parser.parse_args(argv)
    config = Config(num_samples=args.samples, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    data = load_data(config)
    print(f"load_diabetes: {len(data.y_train)} training, {len(data.y_test)} held-out patients")
    model = train(data, config)

    artifact = out / "diabetes_regressor.onnx"
    manifest = illia_export.export(
        model,
        torch.from_numpy(data.x_train[:4]),
        artifact,
        task="regression",
        likelihood="gaussian",
        scale="log_variance",
    )
    lk = manifest.likelihood
    print(
        f"exported {artifact} (likelihood {lk.name}: mean {lk.mean!r}, scale {lk.scale!r} as {lk.scale_kind}; "
        f"validation max diff {manifest.validation.max_abs_diff:.2g})"
    )

    from illia_export.evaluation import summarize_regression
    from illia_export.runtime import load

    prediction = load(artifact).predict(data.x_test, num_samples=config.num_samples, seed=config.seed)
    report = summarize_regression(prediction, data.y_test, LEVELS)
    curve = coverage_curve(prediction, data.y_test, CURVE_LEVELS)
    report.update(
        num_samples=config.num_samples,
        seed=config.seed,
        target_units={"mean": data.y_mean, "std": data.y_std},
        rmse_target_units=report["rmse"] * data.y_std,
        calibration_curve=[{"level": float(level), "coverage": c} for level, c in zip(CURVE_LEVELS, curve)],
        mean_aleatoric_share=float(np.mean(prediction.aleatoric_variance / prediction.predictive_variance)),
    )
    print(f"held-out metrics ({config.num_samples} MC samples, standardized target):")
    print(
        f"  NLL {report['nll']:.3f} nats   RMSE {report['rmse']:.3f} ({report['rmse_target_units']:.1f} in target units)"
    )
    for c in report["coverage"]:
        print(f"  {c['level']:.0%} interval covers {c['coverage']:.1%} of held-out targets")
    print(
        f"  mean variance: aleatoric {report['mean_aleatoric_variance']:.3f}, epistemic "
        f"{report['mean_epistemic_variance']:.4f} (aleatoric share {report['mean_aleatoric_share']:.0%})"
    )
    if not args.no_figures:
        for path in save_figures(prediction, data, curve, out):
            print(f"saved {path}")
    (out / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    print(f"saved {out / 'metrics.json'}  ({time.perf_counter() - t0:.1f} s)")
    return report


if __name__ == "__main__":
    main()
