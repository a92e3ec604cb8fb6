"""``illia-export freeze ARTIFACT -o OUT.onnx --samples S --seed N``: a frozen-bank ONNX model."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "freeze",
        help="bake S posterior samples and the summaries into one plain ONNX graph (any ONNX server)",
        description="Write a frozen-bank ONNX model: the noise of strategy 'bank' with this seed and S "
        "is baked in, the inputs are the model's (plus row_id, int64 [batch], when the model has "
        "per-example noise such as MC-dropout masks: the graph generates each row's noise from its id), "
        "and the outputs are batch-first Monte Carlo summaries (probabilities, predicted_class, "
        "predictive_entropy, mutual_information; or mean, std). Any ONNX server (Triton, ONNX Runtime "
        "server, KServe) serves it unchanged, with dynamic batching: a row's answer does not depend on "
        "its batch.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="a vectorized ONNX artifact")
    p.add_argument("--output", "-o", required=True, metavar="OUT.onnx", help="the frozen model to write")
    p.add_argument("--samples", "-S", type=int, required=True, metavar="S", help="posterior samples baked in")
    p.add_argument("--seed", type=int, required=True, help="the bank's seed (reproduces predict --strategy bank)")
    from illia_export.cli.options import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from illia_export.cli.options import check_sampling_arguments, trust_options
    from illia_export.runtime.freeze import freeze_bank

    check_sampling_arguments(args)

    out = freeze_bank(args.artifact, args.output, num_samples=args.samples, seed=args.seed, **trust_options(args))
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB): {args.samples} samples of seed {args.seed} baked in")
    return 0
