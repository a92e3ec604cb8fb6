"""``illia-export inspect ARTIFACT [--json]``: show an artifact's manifest and graph signature."""

from __future__ import annotations

from pathlib import Path

from illia_export.artifact.manifest import Manifest, batch_multiple, read_manifest


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="print an artifact's manifest, inputs, noise inputs and outputs",
        description="Print the manifest of an illia-export artifact (ONNX, TorchScript, TFLite, SavedModel) "
        "and the inputs/outputs of its graph. With --json, print exactly one JSON object: the manifest.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="exported file or SavedModel folder")
    p.add_argument("--json", action="store_true", help="print the manifest as one JSON object")
    from illia_export.cli.options import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def graph_signature(path: Path, fmt: str) -> list[str]:
    """Lines describing the graph's own inputs/outputs (best effort, from the file itself)."""
    if fmt == "onnx" and path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)

        def dims(vi):
            return _dims([d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim])

        init = {i.name for i in model.graph.initializer}
        lines = [f"  in  {i.name} {dims(i)}" for i in model.graph.input if i.name not in init]
        lines += [f"  out {o.name} {dims(o)}" for o in model.graph.output]
        lines.append(f"  opset {model.opset_import[0].version}, {len(model.graph.node)} nodes")
        return lines
    if fmt == "torchscript" and path.is_file():
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
        schema = str(module.forward.schema).replace("self: __torch__.", "")
        methods = [m for m in ("freeze", "unfreeze", "kl_cost", "sample_forward") if hasattr(module, m)]
        return [f"  forward{schema[schema.index('(') :]}", f"  methods: {', '.join(methods)}"]
    return []


def summary(manifest: Manifest, path: Path) -> str:
    lines = [
        f"{path}: illia-export artifact (contract {manifest.contract})",
        f"  format {manifest.format}, source {manifest.source}, task {manifest.task}, "
        + ("vectorized (sample axis 0)" if manifest.vectorized else "one sample per call"),
        "inputs:",
        *[f"  {t.name} {_dims(t.shape)} {t.dtype}" for t in manifest.inputs],
        f"noise inputs ({len(manifest.noise)}, standard normal):",
        *[f"  {n.name} {_dims(n.shape)} <- {n.parameter} ({_noise_kind(n)})" for n in manifest.noise],
        "outputs:",
        *[f"  {t.name} {_dims(t.shape)} {t.dtype}" for t in manifest.outputs],
    ]
    if manifest.dropout:
        lines.append("dropout modules:")
        lines += [
            f"  {d.path} p={d.p:g}: " + ("sampled" if d.sampled else "off (eval mode; export with --mc-dropout to sample)")
            for d in manifest.dropout
        ]
    if manifest.local is not None:
        lines.append(f"local-reparameterization variant: {manifest.local.file}")
        lines += [f"  {n.name} {_dims(n.shape)} <- {n.parameter}" for n in manifest.local.noise]
    elif manifest.local_unavailable:
        lines.append(f"no local-reparameterization variant: {manifest.local_unavailable}")
    lines.append(f"noise generator: {manifest.noise_generator}")
    v = manifest.validation
    if v is None:
        lines.append("validation: not run")
    else:
        status = "passed" if v.passed else "FAILED"
        lines.append(
            f"validation: {status}, max abs diff {v.max_abs_diff:.3g} (tolerance {v.tolerance:g}), "
            f"{v.num_noise_draws} noise draws + zero noise, batch sizes {v.batch_sizes}"
        )
    return "\n".join(lines)


def _noise_kind(n) -> str:
    """``weight noise``, ``dropout mask, per example`` ...: what the input replaces in the model."""
    kind = {"weight": "weight noise", "dropout": "dropout mask", "flipout_sign": "Flipout sign", "draw": "draw"}
    per_example = any(batch_multiple(d) is not None for d in n.shape)
    extra = ", per example" if per_example else ""
    return f"{kind.get(n.kind, n.kind)}, {n.transform}{extra}"


def check_integrity(path: Path, manifest: Manifest, **load_options) -> str:
    """Check the model file itself, not only its manifest; return a one-line verdict.

    Nothing from the file is run that ``runtime.load`` would not run: the manifest is read
    without loading code, the digest is checked (streaming), an AOTInductor package is not opened
    unless the caller trusts it (`load_options` ``trust_native_code`` / ``expected_digest``), a
    ``.pt2`` ExportedProgram is scanned before torch reads it. The artifact is then opened as
    ``runtime.load`` does (TFLite flatbuffer bounds-checked, graph signature against the
    manifest). Unlike ``load``, an artifact whose manifest no digest covers is shown, with a
    verdict that says ``load`` refuses it without ``--allow-unverified``.

    Raises:
        ArtifactError / ManifestError: the file is corrupt, does not match its manifest, or its
            digest is not an expected one.
    """
    from illia_export.artifact.digest import compute_digest
    from illia_export.artifact.manifest import detect_format
    from illia_export.artifact.trust import NATIVE_CODE_FORMATS, TrustPolicy, check_trust
    from illia_export.errors import ManifestError, MissingBackendError

    fmt = detect_format(path)
    if fmt != manifest.format:
        raise ManifestError(f"{path} looks like a {fmt} artifact but its manifest says format={manifest.format!r}")
    ort_format = path.suffix.lower() == ".ort"
    if manifest.digest is None and not ort_format:
        compute_digest(path, manifest.format)  # parses the container (protobuf fields, zip CRCs)
    options = dict(load_options, allow_unverified=True)
    verdict = check_trust(path, manifest, TrustPolicy.from_options(dict(options)), opening=False)
    if manifest.format in NATIVE_CODE_FORMATS and not verdict.vouched:
        graph = (
            "graph not opened: an AOTInductor package runs compiled code when loaded "
            "(pass --trust-native-code or --expect-digest to open it)"
        )
    else:
        try:
            from illia_export.runtime import load

            load(path, **options)  # TFLite verification, .pt2 scan, graph signature vs manifest
            graph = "graph signature matches the manifest"
        except MissingBackendError as exc:
            if manifest.format == "tflite":
                from illia_export.runtime.backends.tflite_verify import verify_flatbuffer

                verify_flatbuffer(path.read_bytes(), str(path))
            graph = f"graph signature not checked ({exc.package} is not installed)"
    if ort_format:
        digest = "ORT-format conversion (the digest covers the .onnx it came from; loaded unverified)"
    elif verdict.scheme == 2:
        digest = f"digest {manifest.digest} verified (graph, weights and sampling fields)"
    elif verdict.scheme == 1:
        digest = (
            f"digest {manifest.digest} verified for the graph only (older scheme): the manifest is "
            "unverified, runtime.load refuses it without --allow-unverified"
        )
    else:
        digest = "no digest recorded, file structure checked: runtime.load refuses it without --allow-unverified"
    return f"integrity: {digest}; {graph}"


def run(args) -> int:
    from illia_export.cli.options import trust_options

    path = Path(args.artifact)
    manifest = read_manifest(path)
    verdict = check_integrity(path, manifest, **trust_options(args))
    if args.json:
        print(manifest.to_json())
        return 0
    print(summary(manifest, path))
    print(verdict)
    try:
        sig = graph_signature(path, manifest.format)
    except ImportError:
        sig = []
    if sig:
        print("graph:")
        print("\n".join(sig))
    return 0
