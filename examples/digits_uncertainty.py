"""End-to-end demo: a Bayesian CNN on scikit-learn digits, exported, with uncertainty from the artifact.

1. Train a small Bayesian CNN (``illia_export.nn.torch`` layers, mean-field Gaussian weights,
   ELBO loss) on the 8x8 digits 0-7 of ``sklearn.datasets.load_digits``; digits 8 and 9 are held
   out as out-of-distribution (OOD) inputs the network never sees.
2. Export it to TorchScript and ONNX (``task="classification"``): deterministic graphs whose
   weight noise ``eps`` is an explicit input.
3. Run Monte Carlo inference through ``illia_export.runtime`` on the exported ONNX artifact
   (seeded noise), check that the TorchScript artifact gives the same predictions for the same
   seed, and report accuracy, NLL, Brier score, ECE and the OOD-detection AUROC from predictive
   entropy and from mutual information.
4. Save figures: a reliability diagram, histograms of mutual information in vs. out of
   distribution, and a grid of test digits with their predictive distributions.

Run it with ``bash scripts/demo.sh`` (sets up ``.venv`` first) or directly::

    python examples/digits_uncertainty.py --quick --out outputs/digits
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
import torch.nn.functional as F
from torch import nn

from illia_export.datasets import IN_DISTRIBUTION_CLASSES, DigitsData, load_digits_split
from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch import Conv2d, Linear

#: Largest difference allowed between the ONNX and TorchScript per-sample class probabilities.
AGREEMENT_TOLERANCE = 1e-4
#: Monte Carlo samples on which the TorchScript artifact is compared with the ONNX one.
AGREEMENT_SAMPLES = 8
#: Monte Carlo samples per graph call: bounds the memory of the im2col convolutions (the results
#: do not depend on it).
CHUNK_SIZE = 16


@dataclass(frozen=True)
class Config:
    """Training and inference settings of one run."""

    channels: tuple[int, int]
    steps: int
    num_samples: int
    learning_rate: float = 2e-2
    rho_init: float = -5.0
    prior_std: float = 1.0
    seed: int = 0


QUICK = Config(channels=(8, 16), steps=250, num_samples=64)
FULL = Config(channels=(16, 32), steps=500, num_samples=128)


def _gaussian(shape: tuple[int, ...], config: Config) -> GaussianDistribution:
    return GaussianDistribution(shape, std_prior=config.prior_std, rho_init=config.rho_init)


class BayesianCNN(nn.Module):
    """Conv(1->c1, 3, pad 1) ReLU MaxPool2 -> Conv(c1->c2, 3, pad 1) ReLU MaxPool2 -> Linear(4*c2 -> 8).

    Input ``[B, 1, 8, 8]`` (pixels in [0, 1]); output logits ``[B, 8]``.
    """

    def __init__(self, config: Config, num_classes: int = len(IN_DISTRIBUTION_CLASSES)) -> None:
        super().__init__()
        c1, c2 = config.channels
        self.conv1 = Conv2d(
            1,
            c1,
            3,
            padding=1,
            weights_distribution=_gaussian((c1, 1, 3, 3), config),
            bias_distribution=_gaussian((c1,), config),
        )
        self.conv2 = Conv2d(
            c1,
            c2,
            3,
            padding=1,
            weights_distribution=_gaussian((c2, c1, 3, 3), config),
            bias_distribution=_gaussian((c2,), config),
        )
        self.fc = Linear(
            4 * c2,
            num_classes,
            weights_distribution=_gaussian((num_classes, 4 * c2), config),
            bias_distribution=_gaussian((num_classes,), config),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.reshape(x.size(0), -1))


def load_data(seed: int = 0, test_fraction: float = 0.25) -> DigitsData:
    """Digits as float32 ``[N, 1, 8, 8]``: train/test of classes 0-7, and all 8s and 9s as OOD."""
    return load_digits_split(seed, test_fraction, IN_DISTRIBUTION_CLASSES)


def train(data: DigitsData, config: Config, log=print) -> BayesianCNN:
    """Full-batch ELBO training (Adam); the KL is weighted for a per-example ELBO (KL / N_train)."""
    from illia_export.losses.torch import ELBOLoss

    torch.manual_seed(config.seed)
    model = BayesianCNN(config)
    num_params = sum(m.mu.numel() for m in model.modules() if isinstance(m, GaussianDistribution))
    # ELBOLoss's KL term is the per-parameter mean; x num_params / N gives KL / N per example.
    elbo = ELBOLoss(F.cross_entropy, num_samples=1, kl_weight=num_params / len(data.y_train))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    threads = torch.get_num_threads()
    # The problem is tiny: thread start-up costs more than it saves (and much more on busy machines).
    torch.set_num_threads(1)
    try:
        for step in range(config.steps):
            optimizer.zero_grad()
            loss = elbo(x, y, model)
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == config.steps - 1:
                log(f"  step {step:4d}  negative ELBO per example {loss.item():.4f}")
    finally:
        torch.set_num_threads(threads)
    return model


def export_artifacts(model: BayesianCNN, out: Path) -> dict[str, Path]:
    """Export `model` to TorchScript and ONNX (validated against the model by the exporter)."""
    import illia_export

    paths = {"torchscript": out / "digits_cnn.pt", "onnx": out / "digits_cnn.onnx"}
    example = torch.zeros(2, 1, 8, 8)
    for fmt, path in paths.items():
        manifest = illia_export.export(model, example, path, format=fmt, task="classification")
        v = manifest.validation
        diff = (
            f"max abs diff {v.max_abs_diff:.2g} over {v.num_noise_draws} noise draws"
            if v
            else "not validated"
        )
        print(f"  {fmt:<11} -> {path}  ({len(manifest.noise)} noise inputs, {diff})")
    return paths


def save_figures(data: DigitsData, pred_test, pred_ood, report: dict, out: Path) -> list[Path]:
    """Reliability diagram, MI histograms and a grid of digits with their predictive distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # 1. Reliability diagram.
    cal = report["calibration"]
    edges = np.asarray(cal["bin_edges"])
    acc = np.array([np.nan if v is None else v for v in cal["bin_accuracy"]])
    conf = np.array([np.nan if v is None else v for v in cal["bin_confidence"]])
    counts = np.asarray(cal["bin_count"])
    width = np.diff(edges)
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.bar(
        edges[:-1], np.nan_to_num(acc), width=width, align="edge", edgecolor="k", alpha=0.8, label="accuracy"
    )
    centers = (edges[:-1] + edges[1:]) / 2
    ax.plot(centers, conf, "o", color="tab:red", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE = {report['ece']:.3f})")
    ax.legend(loc="upper left")
    ax_count.bar(edges[:-1], counts, width=width, align="edge", edgecolor="k", color="tab:gray")
    ax_count.set_yscale("symlog")
    ax_count.set_xlabel("confidence (max predictive probability)")
    ax_count.set_ylabel("count")
    fig.tight_layout()
    paths.append(out / "reliability_diagram.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. Mutual information (epistemic uncertainty), in vs. out of distribution.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in (
        (axes[0], "mutual_information", "Mutual information (epistemic)"),
        (axes[1], "predictive_entropy", "Predictive entropy (total)"),
    ):
        a, b = np.asarray(getattr(pred_test, key)), np.asarray(getattr(pred_ood, key))
        bins = np.linspace(0, max(a.max(), b.max()) * 1.02 + 1e-9, 40)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label="test digits 0-7 (in-distribution)")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label="digits 8-9 (OOD)")
        auroc = report["ood"]["auroc_" + key]
        ax.set_title(f"{title}: OOD AUROC {auroc:.3f}")
        ax.set_xlabel("nats")
        ax.legend()
    fig.tight_layout()
    paths.append(out / "mutual_information_hist.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 3. Digits with their predictive distributions (mean +- std over MC samples).
    n_each = 5
    test_idx = np.linspace(0, len(data.y_test) - 1, n_each).astype(int)
    ood_idx = np.linspace(0, len(data.y_ood) - 1, n_each).astype(int)
    classes = np.arange(len(IN_DISTRIBUTION_CLASSES))
    fig, axes = plt.subplots(
        4, n_each, figsize=(2.4 * n_each, 8.0), gridspec_kw={"height_ratios": [1.3, 1, 1.3, 1]}
    )
    for row, (pred, images, labels, idx, tag) in enumerate(
        (
            (pred_test, data.x_test, data.y_test, test_idx, "test"),
            (pred_ood, data.x_ood, data.y_ood, ood_idx, "OOD"),
        )
    ):
        probs = np.asarray(pred.probabilities)
        sample_probs = _sample_probabilities(pred)
        for col, i in enumerate(idx):
            ax_img, ax_bar = axes[2 * row, col], axes[2 * row + 1, col]
            ax_img.imshow(images[i, 0], cmap="gray_r", vmin=0, vmax=1)
            ax_img.set_title(
                f"{tag}: true {labels[i]}\nMI {float(pred.mutual_information[i]):.2f} nats", fontsize=9
            )
            ax_img.axis("off")
            std = sample_probs[:, i].std(axis=0)
            ax_bar.bar(classes, probs[i], yerr=std, color="tab:blue", ecolor="tab:gray", capsize=2)
            ax_bar.set_ylim(0, 1.05)
            ax_bar.set_xticks(classes)
            ax_bar.tick_params(labelsize=7)
            if col == 0:
                ax_bar.set_ylabel("p(class)")
    fig.suptitle("Predictive distributions (bars: MC mean, whiskers: std over samples)")
    fig.tight_layout()
    paths.append(out / "predictive_grid.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _sample_probabilities(prediction) -> np.ndarray:
    """Per-sample class probabilities ``[S, B, K]`` from the runtime's raw samples (logits)."""
    logits = np.asarray(prediction.samples, dtype=np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def format_report(report: dict) -> str:
    """A short table of the demo's metrics."""
    ood = report["ood"]
    rows = [
        ("test accuracy (digits 0-7)", f"{100 * report['accuracy']:.2f} %"),
        ("test NLL", f"{report['nll']:.4f} nats"),
        ("test Brier score", f"{report['brier']:.4f}"),
        ("test ECE (15 bins)", f"{report['ece']:.4f}"),
        ("OOD AUROC, predictive entropy", f"{ood['auroc_predictive_entropy']:.4f}"),
        ("OOD AUROC, mutual information", f"{ood['auroc_mutual_information']:.4f}"),
        (
            "mean MI test / OOD",
            f"{report['mean_mutual_information']:.4f} / {ood['mean_mutual_information']:.4f} nats",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> dict:
    """Run the demo; returns the metrics (also written to ``OUT/metrics.json``).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``): ``--quick``, ``--out DIR``,
            ``--samples S``, ``--seed SEED``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller CNN, fewer steps and samples (< 1 min)")
    parser.add_argument("--out", default="outputs/digits", help="output folder (default: outputs/digits)")
    parser.add_argument(
        "--samples", type=int, help="Monte Carlo samples per input (default: 64 quick, 128 full)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the runtime (default: 0)")
    args = parser.parse_args(argv)

    from illia_export import runtime
    from illia_export.evaluation import summarize_predictions

    config = QUICK if args.quick else FULL
    num_samples = args.samples or config.num_samples
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    data = load_data(seed=config.seed)
    print(
        f"digits: {len(data.y_train)} train / {len(data.y_test)} test images of digits 0-7, "
        f"{len(data.y_ood)} OOD images of digits 8-9"
    )
    print(f"[1/4] training a Bayesian CNN (channels {config.channels}, {config.steps} full-batch Adam steps)")
    model = train(data, config)
    t_train = time.perf_counter() - start

    print("[2/4] exporting (noise as explicit inputs)")
    paths = export_artifacts(model, out)

    print(f"[3/4] Monte Carlo inference from the ONNX artifact ({num_samples} samples, seed {args.seed})")
    t0 = time.perf_counter()
    onnx_predictor = runtime.load(paths["onnx"])
    pred_test = onnx_predictor.predict(
        data.x_test, num_samples=num_samples, seed=args.seed, chunk_size=CHUNK_SIZE
    )
    pred_ood = onnx_predictor.predict(
        data.x_ood, num_samples=num_samples, seed=args.seed, chunk_size=CHUNK_SIZE
    )
    t_infer = time.perf_counter() - t0
    report = summarize_predictions(pred_test, data.y_test, pred_ood)

    # The TorchScript artifact must give the same samples for the same seed. Sample s of a seed's
    # noise does not depend on S, so its first AGREEMENT_SAMPLES samples are compared per sample.
    ts_predictor = runtime.load(paths["torchscript"])
    num_check = min(num_samples, AGREEMENT_SAMPLES)
    agreement = 0.0
    for x, onnx_pred in ((data.x_test, pred_test), (data.x_ood, pred_ood)):
        ts_pred = ts_predictor.predict(x, num_samples=num_check, seed=args.seed)
        diff = _sample_probabilities(ts_pred) - _sample_probabilities(onnx_pred)[:num_check]
        agreement = max(agreement, float(np.max(np.abs(diff))))
    if not agreement <= AGREEMENT_TOLERANCE:
        raise RuntimeError(
            f"TorchScript and ONNX artifacts disagree for the same seed: max abs difference of the "
            f"per-sample class probabilities {agreement:.3g} > {AGREEMENT_TOLERANCE}"
        )
    print(
        f"  TorchScript artifact agrees with ONNX for seed {args.seed} "
        f"(first {num_check} samples): max |dp| = {agreement:.2g}"
    )
    print(format_report(report))

    print("[4/4] figures")
    figures = save_figures(data, pred_test, pred_ood, report, out)
    report.update(
        {
            "config": {**config.__dict__, "channels": list(config.channels)},
            "num_samples": num_samples,
            "seed": args.seed,
            "torchscript_onnx_max_abs_diff": agreement,
            "artifacts": {k: str(v) for k, v in paths.items()},
            "figures": [str(p) for p in figures],
            "seconds": {"train": t_train, "inference_onnx": t_infer, "total": time.perf_counter() - start},
        }
    )
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    for p in figures:
        print(f"  {p}")
    print(f"metrics: {out / 'metrics.json'}  (total {report['seconds']['total']:.1f} s)")
    return report


if __name__ == "__main__":
    main()
