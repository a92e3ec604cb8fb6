"""``illia-export [export] MODEL --format ...``: export a model to a deterministic graph."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from illia_export.errors import ArtifactError, ExportError, ShapeError
from illia_export.exporters.verify.same_noise import DEFAULT_RTOL, DEFAULT_TOLERANCE

FORMATS = ("onnx", "torchscript", "pt2", "aoti", "savedmodel", "tflite")
TORCH_FORMATS = ("onnx", "torchscript", "pt2", "aoti")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "aoti": ".aoti.pt2", "tflite": ".tflite", "savedmodel": ""}

HELP = """\
MODEL is one of:
  state.pt --factory M:F  a state dict plus the function that builds the model (any PyTorch
                          model: illia layers, bayesian-torch, blitz, torchbnn, torch-uncertainty,
                          probly, MC dropout; every random draw becomes a noise input)
  model.pt --trust-pickle a whole module saved with torch.save (runs code from the file!)
  model.pt                a TorchScript archive (torch.jit.save of a scripted/traced model built
                          from illia_export.nn.torch layers) - loads without running pickled code;
                          exports to onnx or torchscript only
  pkg.module:factory      a JAX/Flax-NNX model factory, with --weights state.npz; the module is
                          imported from the current folder or the Python path, and the
                          factory is called with no arguments

The example input (--input-shape or --example-input) fixes every dim but the batch axis (and the
sequence axis of integer token inputs, "seq_len"), which stay dynamic in the artifact. In
--input-shape, NAME=N makes an axis dynamic under NAME (e.g. 1,3,h=32,w=32) and =N fixes it
(2,=32: token ids of exactly 32 steps). Without --format, the format comes from -o's suffix:
.onnx, .pt2 (ExportedProgram), .aoti.pt2 (AOTInductor), .pt/.ts (TorchScript), .tflite, or no
suffix (SavedModel folder); a suffix that contradicts --format is an error.

examples:
  illia-export cnn.pt --format onnx --input-shape 1,1,28,28 --task classification
  illia-export state.pt --factory mypkg.models:make_net --mc-dropout --input-shape 1,64 -f pt2
  illia-export lstm.pt --format torchscript --input-shape 2,32 --dtype int64
  illia-export state.pt --factory mypkg.models:make_bert --mc-dropout --input-shape 2,16 --dtype int64 -o bert.pt2
  illia-export mypkg.models:make_mlp --weights mlp.npz --format tflite --input-shape 1,64
  illia-export reg.pt --input-shape 1,10 --task regression --likelihood gaussian --scale log_variance
"""


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export MODEL to onnx/torchscript/savedmodel/tflite with noise inputs (the default command)",
        description="Export a Bayesian model to a deterministic graph whose noise is an explicit input, "
        "validate it against the source model, and write the artifact with its manifest.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", metavar="MODEL", help="TorchScript archive, state dict, or pkg.module:factory (JAX)"
    )
    p.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        default=None,
        help="artifact format (default: from -o's suffix, else onnx)",
    )
    p.add_argument("-o", "--output", help="output path (default: MODEL's name with the format's suffix)")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="DIMS",
        help="example input shape, e.g. 1,1,28,28 (repeat for several inputs); NAME=N makes an axis dynamic "
        "under NAME, =N fixes it (e.g. 2,=32 for a fixed sequence length)",
    )
    p.add_argument(
        "--example-input", action="append", metavar="X.npy", help="example input array (repeatable)"
    )
    p.add_argument(
        "--dtype", action="append", help="dtype of each --input-shape input: float32 (default), int64, ..."
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default 18; 17 for TorchScript archives)")
    p.add_argument(
        "--mc-dropout",
        nargs="?",
        const="all",
        metavar="NAMES",
        help="sample what model.train() samples (every dropout-like draw; normalization layers stay in eval), "
        "or only in the comma-separated modules given and their children (PyTorch; nnx.Dropout and other "
        "jax.random draws for JAX)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="JAX: allow an artifact without any noise input (refused otherwise: an export that lost every draw "
        "must not pass silently)",
    )
    p.add_argument(
        "--samples",
        choices=("vectorized", "per-call"),
        default="vectorized",
        help="vectorized: one call evaluates a chunk of S samples (default); per-call: one sample a call",
    )
    p.add_argument(
        "--task",
        choices=("classification", "regression", "raw"),
        default="raw",
        help="how runtimes summarize outputs",
    )
    p.add_argument(
        "--likelihood",
        choices=("gaussian", "laplace", "student_t"),
        help="regression head predicting a distribution (needs --task regression): output 0 is the mean, "
        "output 1 the scale (or outputs named 'mean' and the scale kind)",
    )
    p.add_argument(
        "--scale",
        choices=("variance", "log_variance", "std", "softplus_std"),
        help="how the scale output is parameterized (may be omitted for outputs named after it)",
    )
    p.add_argument("--df", type=float, help="Student-t degrees of freedom (with --likelihood student_t)")
    p.add_argument(
        "--no-validate", action="store_true", help="skip running the artifact against the source model"
    )
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        default=DEFAULT_TOLERANCE,
        help=f"absolute difference allowed by validation (default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--rtol",
        type=_tolerance,
        default=DEFAULT_RTOL,
        help="relative difference allowed on top (an element passes when |a - b| <= tolerance + rtol * |b|)",
    )
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow loading a pickled module (runs code from MODEL)"
    )
    p.add_argument("--factory", help="pkg.module:function that builds the model for a state dict")
    p.add_argument("--weights", help="weights file (.npz/.safetensors) for a JAX factory MODEL")
    p.add_argument(
        "--frozen-bank",
        type=int,
        default=None,
        metavar="S",
        help="also write OUTPUT's .frozen.onnx: S weight samples and the summaries baked in (ONNX; any ONNX server)",
    )
    p.add_argument(
        "--frozen-seed", type=int, default=0, metavar="SEED", help="seed of the --frozen-bank samples (default 0)"
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    p.set_defaults(func=run)


def frozen_output(out: Path) -> Path:
    """Where ``--frozen-bank`` writes: ``model.onnx`` -> ``model.frozen.onnx``."""
    return out.with_name(out.stem + ".frozen.onnx")


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text!r}")
    return value


def default_output(model: str, fmt: str) -> Path:
    """``cnn.pt`` -> ``cnn.onnx``; a TorchScript export of ``cnn.pt`` -> ``cnn.illia.pt``."""
    if ":" in model and not Path(model).exists():
        stem = model.rpartition(":")[2]
        base = Path(stem)
    else:
        base = Path(model).with_suffix("")
    if fmt == "savedmodel":
        return base.with_name(base.name + "_savedmodel")
    out = base.with_name(base.name + _SUFFIX[fmt])
    if out == Path(model):
        out = base.with_name(base.name + ".illia" + _SUFFIX[fmt])
    return out


def parse_shape(text: str) -> tuple[int, ...]:
    return parse_shape_spec(text)[0]


def parse_shape_spec(text: str) -> tuple[tuple[int, ...], dict[int, str | None]]:
    """``"2,seq=32"`` -> ``((2, 32), {1: "seq"})``; ``"2,=32"`` -> ``((2, 32), {1: None})`` (fixed)."""
    bad = (
        f"bad --input-shape {text!r}: expected comma-separated positive integers like 1,1,28,28, each optionally "
        "NAME=N (a dynamic axis named NAME) or =N (a fixed axis)"
    )
    dims: list[int] = []
    axes: dict[int, str | None] = {}
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if len(entries) == 1 and "x" in entries[0] and "=" not in entries[0]:
        entries = [e.strip() for e in entries[0].split("x") if e.strip()]  # 1x28x28
    for axis, entry in enumerate(entries):
        name, sep, size = entry.rpartition("=")
        try:
            value = int(size)
        except ValueError:
            raise ShapeError(bad) from None
        if value <= 0:
            raise ShapeError(bad)
        if sep:
            name = name.strip()
            if name and not name.isidentifier():
                raise ShapeError(f"bad --input-shape {text!r}: axis name {name!r} must be an identifier")
            if axis == 0 and name != "batch":
                raise ShapeError(
                    f"bad --input-shape {text!r}: axis 0 is the batch, always dynamic (write 'batch=N' or N)"
                )
            if axis:
                axes[axis] = name or None
        dims.append(value)
    if not dims:
        raise ShapeError(bad)
    return tuple(dims), axes


def shape_axes(args) -> dict[int, dict[int, str | None]]:
    """The dynamic axes --input-shape names or fixes, per input index."""
    out = {}
    for i, text in enumerate(args.input_shape or []):
        axes = parse_shape_spec(text)[1]
        if axes:
            out[i] = axes
    return out


def example_inputs(args, token_high: int | None = None) -> list:
    """Build the example inputs from --example-input files or --input-shape/--dtype."""
    import numpy as np

    if args.example_input and args.input_shape:
        raise ShapeError("give either --input-shape or --example-input, not both")
    if args.example_input:
        arrays = []
        for f in args.example_input:
            path = Path(f)
            if not path.exists():
                raise ArtifactError(f"example input not found: {path}")
            try:
                arrays.append(np.load(path, allow_pickle=False))
            except Exception as exc:
                raise ArtifactError(f"{path} is not a readable .npy array: {exc}") from exc
        return arrays
    if not args.input_shape:
        raise ShapeError(
            "the model's input shape is unknown: pass --input-shape (e.g. 1,1,28,28) or --example-input x.npy"
        )
    dtypes = args.dtype or []
    if len(dtypes) not in (0, 1, len(args.input_shape)):
        raise ShapeError(f"{len(dtypes)} --dtype values for {len(args.input_shape)} inputs")
    rng = np.random.default_rng(0)
    arrays = []
    for i, text in enumerate(args.input_shape):
        shape = parse_shape(text)
        dtype = dtypes[i] if len(dtypes) > 1 else (dtypes[0] if dtypes else "float32")
        if dtype not in ("float32", "float64", "int64", "int32"):
            raise ShapeError(f"unsupported --dtype {dtype!r}: use float32, float64, int64 or int32")
        if dtype.startswith("int"):
            arrays.append(rng.integers(0, token_high or 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _token_high(model) -> int | None:
    """The smallest embedding table of `model` (torch or nnx): random token inputs stay in range."""
    if hasattr(model, "named_modules"):
        modules = [m for _, m in model.named_modules()]
    else:
        from flax import nnx

        modules = [m for _, m in nnx.iter_modules(model)]
    sizes = [int(m.num_embeddings) for m in modules if isinstance(getattr(m, "num_embeddings", None), int)]
    return min(sizes) if sizes else None


def _token_axes(arrays, named: dict[int, dict[int, str | None]]) -> dict[int, dict[int, str]]:
    """Integer token inputs get a dynamic sequence axis (dim 1), as in the PyTorch exporter; then
    the axes --input-shape names (or fixes, None) apply."""
    out = {i: {1: "seq_len"} for i, a in enumerate(arrays) if a.dtype.kind in "iu" and a.ndim >= 2}
    for i, axes in named.items():
        for axis, name in axes.items():
            if name is None:
                out.get(i, {}).pop(axis, None)
            else:
                out.setdefault(i, {})[axis] = name
    return {i: axes for i, axes in out.items() if axes}


def resolve_format(args) -> str:
    """--format, or the format -o's suffix means (onnx without either); they must agree."""
    from illia_export.api import format_from_path

    if args.output:
        return format_from_path(args.output, args.format)
    return args.format or "onnx"


def run(args) -> int:
    from illia_export.api import check_opset
    from illia_export.artifact.atomic import check_output_path

    args.format = resolve_format(args)
    check_opset(args.opset)
    out = Path(args.output) if args.output else default_output(args.model, args.format)
    is_jax = ":" in args.model and not Path(args.model).exists()
    # Before any long work: never write over the model, its weights or the example inputs, nor
    # into a folder that is not an earlier artifact.
    sources = [f for f in [None if is_jax else args.model, args.weights, *(args.example_input or [])] if f]
    check_output_path(out, directory=args.format == "savedmodel", sources=sources)
    if args.frozen_bank is not None:
        if args.format != "onnx":
            raise ExportError(f"--frozen-bank writes an ONNX graph: it needs --format onnx, not {args.format!r}")
        if args.frozen_bank < 1:
            raise ExportError(f"--frozen-bank (={args.frozen_bank}) must be a positive number of samples")
        if not 0 <= args.frozen_seed < 2**64:
            raise ExportError(f"--frozen-seed (={args.frozen_seed}) must be an integer in [0, 2**64)")
        check_output_path(frozen_output(out), sources=[*sources, out])
    common = dict(
        format=args.format,
        samples=args.samples,
        task=args.task,
        validate=not args.no_validate,
        tolerance=args.tolerance,
        rtol=args.rtol,
        likelihood=args.likelihood,
        scale=args.scale,
        df=args.df,
    )
    if args.opset is not None:
        common["opset"] = args.opset
    if args.mc_dropout:
        common["mc_dropout"] = True if args.mc_dropout == "all" else [n for n in args.mc_dropout.split(",") if n]
    if is_jax:
        from illia_export.exporters.jax.export import export_jax, load_jax_model

        if not args.weights:
            raise ExportError("a JAX factory MODEL needs --weights state.npz (saved with save_jax_weights)")
        # Like `python -m`: modules in the current folder are importable.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            model = load_jax_model(args.model, args.weights)
        except TypeError as exc:
            raise ExportError(
                f"calling the factory {args.model!r} failed: {exc}; a CLI factory must build the model "
                "with no arguments (wrap it in a function that passes them)"
            ) from exc
        inputs = example_inputs(args, _token_high(model))
        axes = _token_axes(inputs, shape_axes(args))
        if args.deterministic:
            common["deterministic"] = True
        manifest = export_jax(model, tuple(inputs), out, dynamic_axes=axes, **common)
    else:
        if args.deterministic:
            raise ExportError(
                "--deterministic is for JAX models; a PyTorch model without random draws is refused with the reason"
            )
        if args.format not in TORCH_FORMATS:
            raise ExportError(
                f"format {args.format!r} is for JAX models; a PyTorch model exports to {', '.join(TORCH_FORMATS)}"
            )
        from illia_export.exporters.torch.export import export_torch
        from illia_export.exporters.torch.source import load_torch_source

        source = load_torch_source(args.model, trust_pickle=args.trust_pickle, factory=args.factory)
        inputs = example_inputs(args, _token_high(source.module))
        manifest = export_torch(
            source.path if source.kind == "torchscript" else source.module,
            tuple(inputs),
            out,
            dynamic_axes=shape_axes(args) or None,
            **common,
        )
    if args.frozen_bank is not None:
        from illia_export.runtime.freeze import freeze_bank

        try:
            frozen = freeze_bank(out, frozen_output(out), num_samples=args.frozen_bank, seed=args.frozen_seed)
        except BaseException:
            # All or nothing: remove the artifact this command just wrote.
            for made in [out] + ([out.with_name(manifest.local.file)] if manifest.local else []):
                made.unlink(missing_ok=True)
            raise
    if args.json:
        print(manifest.to_json())
        return 0
    if args.frozen_bank is not None:
        print(f"wrote {frozen} (frozen bank: {args.frozen_bank} samples of seed {args.frozen_seed})")
    mode = "vectorized (sample axis 0)" if manifest.vectorized else "one sample per call"
    print(
        f"wrote {out} ({manifest.format}, {mode}, {len(manifest.noise)} noise inputs, task={manifest.task})"
    )
    if manifest.likelihood is not None:
        lk = manifest.likelihood
        df = f", df={lk.df:g}" if lk.df is not None else ""
        print(f"likelihood: {lk.name} (mean {lk.mean!r}, scale {lk.scale!r} as {lk.scale_kind}{df})")
    if manifest.local is not None:
        print(f"wrote {out.with_name(manifest.local.file)} (local reparameterization variant)")
    kinds: dict[str, int] = {}
    for n in manifest.noise:
        kinds[n.kind] = kinds.get(n.kind, 0) + 1
    if kinds:
        print("noise: " + ", ".join(f"{count} {kind}" for kind, count in kinds.items()))
    for d in manifest.dropout:
        state = "sampled" if d.sampled else "off (eval mode; --mc-dropout samples it)"
        print(f"dropout {d.path!r} (p={d.p:g}): {state}")
    for path, why in (manifest.extra.get("kept_in_eval") or {}).items():
        print(f"kept in eval mode: {path!r} ({why})")
    if manifest.local is None and manifest.local_unavailable:
        print(f"no local variant: {manifest.local_unavailable}")
    if manifest.validation is not None:
        v = manifest.validation
        print(f"validation: {v.num_noise_draws} noise draws + zero noise, batch sizes {v.batch_sizes}")
        for name, diff in v.per_output.items():
            print(f"- {name}: max diff = {diff:.3g} (tolerance {v.tolerance:g}) ok")
        for name, d in v.distribution.items():
            print(
                f"- {name}: MC std ratio {d['std_ratio']:.3f}, mean |z| median {d['mean_z_median']:.2f} "
                f"against the source model's own sampling ({int(d['samples'])} samples) ok"
            )
    else:
        print("validation: skipped (--no-validate)")
    return 0
