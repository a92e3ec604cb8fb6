"""``illia-export predict ARTIFACT --input x.npy``: Monte Carlo predictions with uncertainty."""

from __future__ import annotations

import sys
from pathlib import Path

from illia_export.errors import ArtifactError, InputError, ShapeError

#: Rows shown in the human summary.
MAX_ROWS = 10


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="run Monte Carlo inference on an artifact and summarize the predictive distribution",
        description="Run S Monte Carlo samples of an exported Bayesian model on the inputs in a .npy "
        "(one input) or .npz (one array per input name) file, with seeded noise. Prints a summary "
        "(stdout); --output saves samples and summaries (.npz) or summaries (.json).",
    )
    p.add_argument(
        "artifact", metavar="ARTIFACT", help="exported file (.onnx, .pt, .tflite) or SavedModel folder"
    )
    p.add_argument(
        "--input", "-i", required=True, metavar="FILE", help=".npy (single input) or .npz (by input name)"
    )
    p.add_argument(
        "--samples", "-S", type=int, default=64, metavar="S", help="Monte Carlo samples (default 64)"
    )
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: a random one, printed)")
    p.add_argument(
        "--strategy",
        choices=("fresh", "bank", "local"),
        default="fresh",
        help="noise strategy (default fresh)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=None, metavar="N", help="samples per graph call (bounds memory)"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.add_argument(
        "--task",
        choices=("classification", "regression", "raw"),
        default=None,
        help="override the manifest's task",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        default=None,
        help="save to .npz (samples + summaries) or .json (summaries)",
    )
    p.add_argument(
        "--allow-nonfinite", action="store_true", help="accept NaN/inf inputs (refused by default)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def load_inputs(path: str, input_names: list[str]):
    """Read the model inputs from a .npy or .npz file."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"input file not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"input {p} is a folder, not a .npy/.npz file")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        if not hasattr(data, "keys"):
            raise ValueError(f"expected an array, got {type(data).__name__}")
        with data:
            keys = list(data.keys())
            if len(input_names) == 1 and len(keys) == 1:
                return data[keys[0]]
            missing = [n for n in input_names if n not in keys]
            if missing:
                raise ShapeError(
                    f"{p} must hold one array per model input {input_names}; missing {missing} (has {keys})"
                )
            return {n: data[n] for n in input_names}
    except ShapeError:
        raise
    except Exception as exc:  # ValueError (pickled/object arrays), EOFError (empty), BadZipFile (bad CRC), ...
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ArtifactError(f"cannot read {p} as .npy/.npz: {detail}") from exc


def format_summary(pred, limit: int = MAX_ROWS) -> str:
    """A short human summary of a Prediction."""
    import numpy as np

    lines = [
        f"{pred.num_samples} samples, strategy {pred.strategy}, seed {pred.seed}, task {pred.task}, "
        f"output {pred.output_name} {list(pred.samples.shape)}"
    ]
    batch = pred.samples.shape[1] if pred.samples.ndim > 1 else 1
    shown = min(batch, limit)
    if pred.task == "classification":
        probs = pred.probabilities.reshape(batch, -1, pred.probabilities.shape[-1])[:, 0]
        cls = pred.predicted_class.reshape(batch, -1)[:, 0]
        pe = pred.predictive_entropy.reshape(batch, -1)[:, 0]
        mi = pred.mutual_information.reshape(batch, -1)[:, 0]
        lines.append(f"{'row':>5} {'class':>5} {'prob':>6} {'entropy':>8} {'mutual_info':>11}")
        for i in range(shown):
            lines.append(f"{i:>5} {int(cls[i]):>5} {probs[i, cls[i]]:>6.3f} {pe[i]:>8.4f} {mi[i]:>11.4f}")
        lines.append(
            f"mean predictive entropy {float(np.mean(pred.predictive_entropy)):.4f} nats, "
            f"mean mutual information {float(np.mean(pred.mutual_information)):.4f} nats"
        )
    else:
        mean = pred.mean.reshape(batch, -1)
        std = pred.std.reshape(batch, -1)
        lo, hi = (a.reshape(batch, -1) for a in pred.interval(0.9))
        lines.append(
            f"{'row':>5} {'mean':>10} {'std':>10} {'90% interval':>24}"
            + ("   (first value per row)" if mean.shape[1] > 1 else "")
        )
        for i in range(shown):
            lines.append(
                f"{i:>5} {mean[i, 0]:>10.4f} {std[i, 0]:>10.4f}   [{lo[i, 0]:>9.4f}, {hi[i, 0]:>9.4f}]"
            )
        lines.append(f"mean std {float(np.mean(pred.std)):.4f}")
    if batch > shown:
        lines.append(f"... {batch - shown} more rows (use --output to save all)")
    return "\n".join(lines)


def run(args) -> int:
    from illia_export.exporters.atomic import atomic_output, check_output_path
    from illia_export.runtime import load

    if args.samples < 1:
        raise InputError(f"--samples (={args.samples}) must be a positive integer")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise InputError(f"--seed (={args.seed}) must be an integer in [0, 2**64)")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise InputError(f"--chunk-size (={args.chunk_size}) must be a positive integer")
    out = Path(args.output) if args.output else None
    if out is not None:
        if out.suffix.lower() not in (".npz", ".json"):
            raise ArtifactError(f"--output must end in .npz or .json, got {out.name}")
        # Before the Monte Carlo run: never overwrite the inputs or the artifact, nor a folder,
        # and fail now (not after the run) when the folder is missing.
        check_output_path(out, sources=[args.input, args.artifact], create_parents=False, what="--output")
    predictor = load(args.artifact, device=args.device)
    x = load_inputs(args.input, [t.name for t in predictor.manifest.inputs])
    pred = predictor.predict(
        x,
        num_samples=args.samples,
        seed=args.seed,
        strategy=args.strategy,
        chunk_size=args.chunk_size,
        progress=not args.no_progress and sys.stderr.isatty(),
        task=args.task,
        allow_nonfinite=args.allow_nonfinite,
    )
    print(format_summary(pred))
    if out is not None:
        with atomic_output(out, sources=[args.input, args.artifact]) as tmp:
            if out.suffix.lower() == ".npz":
                pred.save_npz(tmp)
            else:
                tmp.write_text(pred.to_json(indent=2) + "\n")
        print(f"saved {out}")
    return 0
