"""``illia-export predict ARTIFACT --input x.npy``: Monte Carlo predictions with uncertainty."""

from __future__ import annotations

import sys
from pathlib import Path

from illia_export.errors import ArtifactError, InputError

#: Rows shown in the human summary.
MAX_ROWS = 10


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="run Monte Carlo inference on an artifact and summarize the predictive distribution",
        description="Run S Monte Carlo samples of an exported Bayesian model on the inputs in a .npy "
        "(one input), .npz (one array per input name) or .parquet file, with seeded noise. Prints a "
        "summary (stdout); --output saves samples and summaries (.npz), summaries (.json) or one row "
        "of summary columns per input row (.parquet). Rows are keyed by their index (or --id-column), "
        "so a row's answer does not depend on --batch-size or --engine.",
    )
    p.add_argument(
        "artifact", metavar="ARTIFACT", help="exported file (.onnx, .pt, .tflite) or SavedModel folder"
    )
    p.add_argument(
        "--input",
        "-i",
        required=True,
        metavar="FILE",
        help=".npy (single input), .npz (by input name) or .parquet (a column per input, or feature columns)",
    )
    from illia_export.cli.options import add_sampling_arguments

    add_sampling_arguments(p)
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
        help="save to .npz (samples + summaries), .json (summaries) or .parquet (summary columns per row)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: Ray Data actors (needs illia-export[scale])",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, metavar="N", help="rows per graph call (default: all; 1024 with Parquet/Ray)"
    )
    p.add_argument(
        "--id-column", default=None, metavar="NAME", help="Parquet column of stable row ids (default: the row index)"
    )
    p.add_argument(
        "--columns", default=None, metavar="A,B,...", help="Parquet feature columns stacked into the single input"
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--actors", type=int, default=None, metavar="N", help="Ray actors (default: one per CPU)")
    p.add_argument(
        "--cpus-per-actor", type=float, default=None, metavar="C", help="CPUs per Ray actor (default: shares all but one)"
    )
    p.add_argument("--threads", type=int, default=None, metavar="N", help="backend threads (default: the CPUs given)")
    p.add_argument(
        "--allow-nonfinite", action="store_true", help="accept NaN/inf inputs (refused by default)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    from illia_export.cli.options import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


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


def _uses_tables(args) -> bool:
    """Parquet in or out, or the Ray engine: the per-row table path (illia_export.scale)."""
    suffixes = {Path(args.input).suffix.lower(), Path(args.output).suffix.lower() if args.output else ""}
    return args.engine == "ray" or ".parquet" in suffixes


def run(args) -> int:
    from illia_export.cli.options import check_sampling_arguments

    check_sampling_arguments(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size (={args.batch_size}) must be a positive integer")
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in (".npz", ".json", ".parquet"):
        raise ArtifactError(f"--output must end in .npz, .json or .parquet, got {out.name}")
    if _uses_tables(args):
        return _run_tables(args, out)
    for flag in ("id_column", "columns", "address", "actors", "cpus_per_actor"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')} applies to Parquet input/output or --engine ray")
    return _run_arrays(args, out)


def _run_arrays(args, out: Path | None) -> int:
    """.npy/.npz in, raw samples kept: one Prediction over all rows (row i keyed by i)."""
    import numpy as np

    from illia_export.artifact.atomic import atomic_output, check_output_path
    from illia_export.runtime import load
    from illia_export.runtime.prediction import Prediction
    from illia_export.scale.inputs import load_inputs

    if out is not None:
        # Before the Monte Carlo run: never overwrite the inputs or the artifact, nor a folder,
        # and fail now (not after the run) when the folder is missing.
        check_output_path(out, sources=[args.input, args.artifact], create_parents=False, what="--output")
    from illia_export.cli.options import trust_options

    predictor = load(
        args.artifact, device=args.device, **({"threads": args.threads} if args.threads else {}), **trust_options(args)
    )
    arrays = load_inputs(args.input, [t.name for t in predictor.manifest.inputs])
    rows = len(next(iter(arrays.values())))
    if rows == 0:
        shapes = {k: list(a.shape) for k, a in arrays.items()}
        raise InputError(f"--input {args.input} holds no rows (shapes {shapes}); pass at least one row to predict")
    step = args.batch_size or rows
    seed = args.seed
    if seed is None:
        from illia_export.runtime.sampling import random_seed

        seed = random_seed()
    parts = []
    for start in range(0, rows, step):
        parts.append(
            predictor.predict(
                {k: a[start : start + step] for k, a in arrays.items()},
                num_samples=args.samples,
                seed=seed,
                strategy=args.strategy,
                chunk_size=args.chunk_size,
                progress=not args.no_progress and sys.stderr.isatty(),
                task=args.task,
                allow_nonfinite=args.allow_nonfinite,
                row_ids=np.arange(start, min(start + step, rows)),
            )
        )
    pred = parts[0]
    if len(parts) > 1:
        outputs = {k: np.concatenate([p.outputs[k] for p in parts], axis=1) for k in pred.outputs}
        pred = Prediction(
            outputs, task=pred.task, seed=pred.seed, strategy=pred.strategy, likelihood=pred.likelihood,
            noise_generator=pred.noise_generator,
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


def _run_tables(args, out: Path | None) -> int:
    """Parquet in or out, or Ray: one row of summary columns per input row."""
    from illia_export.cli.options import trust_options
    from illia_export.scale.files import score_file

    if out is not None and out.suffix.lower() != ".parquet":
        raise ArtifactError(
            f"--output {out.name}: Parquet input and --engine ray write per-row summaries to a .parquet file "
            "(.npz/.json hold raw samples, from .npy/.npz input on the local engine)"
        )
    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip()) if args.columns else None
    if args.columns is not None and not columns:
        raise InputError("--columns must name at least one column (comma-separated)")
    run = score_file(
        args.artifact,
        args.input,
        out,
        engine=args.engine,
        batch_size=args.batch_size or 1024,
        address=args.address,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        threads=args.threads,
        device=args.device,
        progress=not args.no_progress and sys.stderr.isatty(),
        num_samples=args.samples,
        seed=args.seed,
        strategy=args.strategy,
        chunk_size=args.chunk_size,
        task=args.task,
        id_column=args.id_column,
        columns=columns,
        allow_nonfinite=args.allow_nonfinite,
        load_options=trust_options(args),
    )
    print(
        f"scored {run.rows} rows with {args.samples} samples, strategy {args.strategy}, seed {run.seed}, "
        f"engine {run.engine}: {run.rows / max(run.seconds, 1e-9):.0f} rows/s"
    )
    if run.table is not None:
        print(format_table(run.table))
    if out is not None:
        print(f"saved {out}")
    return 0


def format_table(table, limit: int = MAX_ROWS) -> str:
    """The first rows of a scored table, scalar columns only."""
    import numpy as np

    names = [n for n in table.column_names if np.asarray(table.column(n).slice(0, 1).to_pylist(), dtype=object).ndim == 1
             and not isinstance(table.column(n).slice(0, 1).to_pylist()[0], list)]
    shown = table.slice(0, limit)
    lines = [" ".join(f"{n:>18}" for n in names)]
    for i in range(len(shown)):
        cells = []
        for n in names:
            v = shown.column(n)[i].as_py()
            cells.append(f"{v:>18.4f}" if isinstance(v, float) else f"{v!s:>18}")
        lines.append(" ".join(cells))
    if len(table) > limit:
        lines.append(f"... {len(table) - limit} more rows (use --output scores.parquet to save all)")
    return "\n".join(lines)
