"""``illia-export evaluate ARTIFACT --input x.npy --labels y.npy [--ood ood.npy]``: classifier and regressor metrics."""

from __future__ import annotations

import argparse

EPILOG = """\
Runs S Monte Carlo samples of the exported classifier on the inputs (noise seeded with --seed,
so every runtime gives the same numbers) and reports, from the predictive distribution:
  accuracy, NLL (nats), Brier score (multi-class), ECE (15 equal-width confidence bins)
and with --ood: the AUROC of separating OOD from in-distribution inputs by predictive entropy
and by mutual information (1.0 = perfect, 0.5 = chance).

For a regression artifact (manifest task "regression"), --labels holds the targets and the report
is: NLL (nats, of the predictive mixture when the manifest has a likelihood, else of a Gaussian
with the samples' mean and variance), RMSE of the predictive mean, and the coverage of the
central predictive intervals at each --levels value with their mean absolute deviation from the
nominal level (the regression counterpart of ECE).

examples:
  illia-export evaluate cnn.onnx --input x_test.npy --labels y_test.npy
  illia-export evaluate cnn.pt --input x_test.npy --labels y_test.npy --ood x_ood.npy --samples 128 --json
  illia-export evaluate reg.onnx --input x_test.npy --labels y_test.npy --levels 0.5,0.9 --json
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _levels(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated levels in (0, 1), got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated levels in (0, 1), got {text!r}")
    return values


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="classifiers: accuracy, NLL, Brier, ECE, OOD AUROC; regressors: NLL, RMSE, interval coverage",
        description="Evaluate an exported Bayesian classifier with Monte Carlo inference: accuracy, NLL, "
        "Brier score, expected calibration error, and OOD-detection AUROC from predictive entropy and "
        "mutual information. With --json, print exactly one JSON object.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "artifact", metavar="ARTIFACT", help="exported classifier (.onnx, .pt, .tflite, SavedModel folder)"
    )
    p.add_argument(
        "--input", "-i", required=True, metavar="X.npy", help="in-distribution inputs, batch axis first"
    )
    p.add_argument(
        "--labels",
        "-y",
        required=True,
        metavar="Y.npy",
        help="integer class labels [N] (classifiers) or targets shaped like the mean output (regressors)",
    )
    p.add_argument("--ood", metavar="OOD.npy", help="out-of-distribution inputs (adds OOD AUROC)")
    from illia_export.cli.options import add_sampling_arguments

    add_sampling_arguments(p, seed_default=0, seed_help="noise seed (default: 0)")
    p.add_argument(
        "--bins", type=_positive_int, default=15, metavar="N", help="ECE confidence bins (default: 15)"
    )
    p.add_argument(
        "--levels",
        type=_levels,
        default=None,
        metavar="L1,L2,...",
        help="regressors: nominal levels of the central intervals whose coverage is reported "
        "(default: 0.5,0.8,0.9,0.95)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as exactly one JSON object")
    from illia_export.cli.options import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


def _load(path: str, what: str):
    import numpy as np

    from illia_export.errors import ShapeError

    try:
        data = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # ValueError (object arrays), EOFError (empty file), OSError, ...
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ShapeError(f"cannot read {what} {path!r} as a .npy array: {detail}") from exc
    if not isinstance(data, np.ndarray):
        data.close()
        raise ShapeError(f"{what} {path!r} is an .npz archive; evaluate reads one .npy array")
    return data


def format_table(report: dict) -> str:
    """The human-readable table of an evaluation report (see ``illia_export.evaluation``)."""
    rows = [
        ("examples", f"{report['num_examples']} ({report['num_classes']} classes)"),
        ("samples", f"{report['num_samples']} (seed {report['seed']}, strategy {report['strategy']})"),
        ("accuracy", f"{report['accuracy']:.4f}"),
        ("NLL", f"{report['nll']:.4f}"),
        ("Brier", f"{report['brier']:.4f}"),
        (f"ECE ({len(report['calibration']['bin_count'])} bins)", f"{report['ece']:.4f}"),
        ("mean predictive entropy", f"{report['mean_predictive_entropy']:.4f}"),
        ("mean mutual information", f"{report['mean_mutual_information']:.4f}"),
    ]
    ood = report.get("ood")
    if ood is not None:
        rows += [
            ("OOD examples", str(ood["num_examples"])),
            ("OOD AUROC (predictive entropy)", f"{ood['auroc_predictive_entropy']:.4f}"),
            ("OOD AUROC (mutual information)", f"{ood['auroc_mutual_information']:.4f}"),
            ("OOD mean predictive entropy", f"{ood['mean_predictive_entropy']:.4f}"),
            ("OOD mean mutual information", f"{ood['mean_mutual_information']:.4f}"),
        ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 5}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def format_regression_table(report: dict) -> str:
    """The human-readable table of a regression report (``illia_export.evaluation.summarize_regression``)."""

    def num(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lk = report.get("likelihood")
    rows = [
        ("examples", str(report["num_examples"])),
        ("samples", f"{report['num_samples']} (seed {report['seed']}, strategy {report['strategy']})"),
        ("likelihood", f"{lk['name']} ({lk['scale_kind']})" if lk else "none (output samples only)"),
        (f"NLL ({report['nll_method'].replace('_', ' ')})", num(report["nll"])),
        ("RMSE", num(report["rmse"])),
    ]
    rows += [
        (f"coverage of {c['level']:g} interval", f"{c['coverage']:.4f} (mean width {num(c['mean_width'])})")
        for c in report["coverage"]
    ]
    rows.append(("coverage calibration error", num(report["calibration_error"])))
    rows.append(("mean predictive std", num(report["mean_predictive_std"])))
    if "mean_aleatoric_variance" in report:
        rows.append(("mean aleatoric variance", num(report["mean_aleatoric_variance"])))
        rows.append(("mean epistemic variance", num(report["mean_epistemic_variance"])))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 5}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def _run_regression(args, x, y) -> int:
    from illia_export.evaluation import DEFAULT_LEVELS, evaluate_regression

    if args.ood:
        from illia_export.errors import ArtifactError

        raise ArtifactError("--ood is for classifiers; this artifact is a regressor (task 'regression')")
    report = evaluate_regression(
        args.predictor,
        x,
        y,
        levels=args.levels or DEFAULT_LEVELS,
        num_samples=args.samples,
        seed=args.seed,
        strategy=args.strategy,
        device=args.device,
        chunk_size=args.chunk_size,
    )
    return _print(args, report, "Monte Carlo evaluation (regression)", format_regression_table)


def run(args) -> int:
    from illia_export.artifact.manifest import read_manifest
    from illia_export.cli.options import check_sampling_arguments, trust_options
    from illia_export.evaluation import evaluate
    from illia_export.runtime import load

    check_sampling_arguments(args)
    x = _load(args.input, "--input")
    y = _load(args.labels, "--labels")
    read_manifest(args.artifact)  # a clear error for a non-artifact before anything is loaded
    args.predictor = load(args.artifact, device=args.device, **trust_options(args))
    if args.predictor.manifest.task == "regression":
        return _run_regression(args, x, y)
    x_ood = _load(args.ood, "--ood") if args.ood else None
    report = evaluate(
        args.predictor,
        x,
        y,
        x_ood=x_ood,
        num_samples=args.samples,
        seed=args.seed,
        strategy=args.strategy,
        num_bins=args.bins,
        device=args.device,
        chunk_size=args.chunk_size,
    )
    return _print(args, report, "Monte Carlo evaluation", format_table)


def _print(args, report: dict, title: str, table) -> int:
    """The report as one strictly valid JSON object (null for non-finite values), or as a table."""
    if args.json:
        from illia_export.strict_json import dumps

        print(dumps(report))
    else:
        print(f"{args.artifact}: {title}")
        print(table(report))
    return 0
