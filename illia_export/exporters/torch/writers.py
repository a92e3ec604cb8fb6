"""Writers: ONNX (dynamo exporter), ``.pt2`` ExportedProgram, AOTInductor; TorchScript and legacy ONNX.

:func:`write` takes the ExportedProgram of the torch.export capture, :func:`write_torchscript` and
:func:`write_legacy_onnx` the scripted wrapper of the TorchScript capture; each writes to a path
(a temporary one from :func:`~illia_export.artifact.atomic.atomic_output`). :func:`embed_manifest`
stores the final manifest after validation (for every format, after the digest is stamped), and
:class:`ArtifactRunner` runs a written artifact for validation.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import threading
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError, require

#: Metadata key of the manifest in an AOTInductor package (``AOTIModelPackageLoader::get_metadata``).
AOTI_METADATA_KEY = mf.ONNX_METADATA_KEY
CAPTURE_FORMATS = ("onnx", "pt2", "aoti")


def write(fmt: str, program, args: list, path: Path, graph_inputs, outputs, opset: int) -> None:
    """Write `program` as `fmt` to `path` (the manifest is embedded later).

    `graph_inputs` are the manifest specs of the inputs then the noise (``.name``, ``.shape``),
    `outputs` those of the outputs; ONNX graphs get their names and symbolic dims.
    """
    if fmt == "onnx":
        _write_onnx(program, args, path, graph_inputs, outputs, opset)
    elif fmt == "pt2":
        import torch

        torch.export.save(program, str(path))
    elif fmt == "aoti":
        _write_aoti(program, path)
    else:  # pragma: no cover - the caller checks the format
        raise ExportError(f"no writer for format {fmt!r}")


def name_dims(values, specs) -> None:
    """Give ONNX value infos the manifest's dims: integers fixed, strings as named symbolic dims."""
    for value, spec in zip(values, specs):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == len(spec.shape):
            for dim, want in zip(dims, spec.shape):
                if isinstance(want, int):
                    dim.dim_value = want
                else:
                    dim.dim_param = want


def _write_onnx(program, args, path: Path, graph_inputs, outputs, opset) -> None:
    import torch

    require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export with torch.export")
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed": irrelevant to these graphs
    try:
        with torchlib_ops_once():
            onnx_program = torch.onnx.export(
                program,
                tuple(args),
                dynamo=True,
                input_names=[s.name for s in graph_inputs],
                output_names=[s.name for s in outputs],
                opset_version=opset,
                verbose=False,
                optimize=True,
            )
    except Exception as exc:
        text = str(exc).strip()
        raise ExportError(f"the ONNX exporter failed: {text.splitlines()[0] if text else type(exc).__name__}") from exc
    finally:
        quiet.setLevel(level)
    model = onnx_program.model_proto
    name_dims(model.graph.input, graph_inputs)  # symbolic dims named as in the manifest
    name_dims(model.graph.output, outputs)
    check_onnx_graph(model, [s.name for s in graph_inputs])
    import onnx

    onnx.save(model, str(path))


_TORCHLIB: dict[str, tuple] = {}
_TORCHLIB_LOCK = threading.Lock()


def _onnxscript_apis():
    """The module torch.onnx reads its torch_lib function list from (behind torch's lazy import), or None."""
    try:
        from torch.onnx._internal.exporter import _registration

        apis = _registration.onnxscript_apis
        name = getattr(apis, "_name", None)  # torch's _LazyModule
        module = importlib.import_module(name) if isinstance(name, str) else apis
        return module if callable(getattr(module, "get_torchlib_ops", None)) else None
    except Exception:  # another torch / onnxscript layout: export uncached
        return None


@contextlib.contextmanager
def torchlib_ops_once():
    """Reuse onnxscript's torch_lib function list across ONNX exports of this process.

    ``torch.onnx.export`` rebuilds its op registry on every call, and onnxscript re-parses the
    source of ~500 torch_lib functions to list them (about a second each time here; an export
    with a local variant does it twice). The list is the same for the whole process, so it is
    computed once and handed back while our own exports run; the original function is restored
    after, so nothing else in the process sees the patch.
    """
    module = _onnxscript_apis()
    if module is None:
        yield
        return
    original = module.get_torchlib_ops
    key = f"{module.__name__}.get_torchlib_ops"

    def cached():
        with _TORCHLIB_LOCK:
            if key not in _TORCHLIB:
                _TORCHLIB[key] = tuple(original())
        return list(_TORCHLIB[key])

    module.get_torchlib_ops = cached
    try:
        yield
    finally:
        module.get_torchlib_ops = original


def check_onnx_graph(model, arg_names: list[str]) -> None:
    """Structural checks: valid graph, every expected input present, no random op left."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {exc}") from exc
    graph_inputs = {i.name for i in model.graph.input}
    missing = [n for n in arg_names if n not in graph_inputs]
    if missing:
        raise ExportError(
            f"the exported ONNX graph lost inputs {missing}: the model's output does not depend on them "
            "(is a Bayesian layer unused in forward()?)"
        )
    random_ops = sorted(
        {n.op_type for n in all_nodes(model.graph) if n.op_type.startswith("Random") or n.op_type == "Multinomial"}
    )
    if random_ops:
        raise ExportError(f"the exported ONNX graph still draws noise internally ({', '.join(random_ops)})")


def all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from all_nodes(attr.g)
            for sub in attr.graphs:
                yield from all_nodes(sub)


def write_torchscript(module, path: Path) -> None:
    """Save a ScriptModule so that embedding the manifest later changes no hashed byte.

    The first re-save of a TorchScript archive rewrites its ``data.pkl``; the digest is stamped
    before the manifest is embedded (a re-save), so the archive is re-saved once here, settled.
    """
    import torch

    torch.jit.save(module, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.load(str(path), map_location="cpu"), str(path))


def write_legacy_onnx(
    module, args: list, path: Path, arg_names: list[str], output_names: list[str], dynamic: dict, opset: int,
    outputs: Sequence = (),
) -> None:
    """Write a scripted wrapper with the TorchScript-based ONNX exporter (the only one that reads an archive).

    `outputs` (manifest specs) name the output dims; the graph is checked like every ONNX graph.
    """
    import torch

    require("onnx", "onnx", "ONNX export")
    buf = io.BytesIO()
    try:
        torch.onnx.export(
            module,
            tuple(args),
            buf,
            dynamo=False,
            input_names=arg_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed: {first}") from exc
    import onnx

    model = onnx.load_from_string(buf.getvalue())
    name_dims(model.graph.output, outputs)  # name the output dims as the manifest does
    check_onnx_graph(model, arg_names)
    onnx.save(model, str(path))


def _write_aoti(program, path: Path) -> None:
    import torch

    try:
        torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(path),
            inductor_configs={"aot_inductor.metadata": {AOTI_METADATA_KEY: "{}"}},
        )
    except Exception as exc:
        text = str(exc).strip()
        raise ExportError(
            f"AOTInductor could not compile the model: {text.splitlines()[0] if text else type(exc).__name__}"
        ) from exc


def embed_manifest(fmt: str, path: Path, manifest: mf.Manifest) -> None:
    """Store the final manifest in the artifact at `path` (rewritten in place)."""
    text = manifest.to_json(indent=None)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        mf.embed_in_onnx(model, manifest)
        onnx.save(model, str(path))
    elif fmt == "pt2":
        _rewrite_zip(path, lambda name, data: data, extra=(mf.EMBEDDED_NAME, text))
    elif fmt == "aoti":

        def put(name: str, data: bytes) -> bytes:
            if name.endswith("_metadata.json"):
                meta = json.loads(data)
                meta[AOTI_METADATA_KEY] = text
                return json.dumps(meta).encode()
            return data

        _rewrite_zip(path, put)
    elif fmt == "torchscript":  # settled by write_torchscript: only the extra file changes
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
            torch.jit.save(module, str(path), _extra_files={mf.EMBEDDED_NAME: manifest.to_json()})


def _rewrite_zip(path: Path, transform, extra: tuple[str, str] | None = None) -> None:
    """Rewrite a zip archive member by member (``extra``: an ``extra/<name>`` member to set)."""
    tmp = path.with_name(path.name + ".rewrite")
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as out:
            names = src.namelist()
            root = names[0].split("/")[0] if names else "archive"
            extra_name = f"{root}/extra/{extra[0]}" if extra else None
            for info in src.infolist():
                if info.filename == extra_name:
                    continue
                out.writestr(info, transform(info.filename, src.read(info.filename)))
            if extra_name:
                info = zipfile.ZipInfo(extra_name)
                out.writestr(info, extra[1].encode())
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


class ArtifactRunner:
    """Runs a written artifact on numpy arrays (inputs then noise, in manifest order)."""

    def __init__(self, fmt: str, path: Path, names: Sequence[str]) -> None:
        self.fmt = fmt
        self.names = list(names)
        try:
            if fmt == "onnx":
                ort = require("onnxruntime", "onnx", "Validating ONNX exports")
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            elif fmt == "pt2":
                import torch

                self.module = torch.export.load(str(path)).module()
            elif fmt == "aoti":
                import torch

                self.module = torch._inductor.aoti_load_package(str(path))
            else:
                import torch

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ExportError(f"the written {fmt} artifact cannot be loaded for validation: {exc}") from exc

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.fmt == "onnx":
            return list(self.session.run(None, dict(zip(self.names, arrays))))
        import torch

        with torch.no_grad():
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return [o.detach().numpy() for o in outs]

