"""Refuse a ``.pt2`` ExportedProgram whose loading would run code from the file.

``torch.export.load`` (torch 2.13, ``torch/export/pt2_archive/_package.py``) reads weights stored
as raw bytes plus a JSON config -- safe -- but it also:

* unpickles with ``torch.load(weights_only=False)`` every weight or constant whose config says
  ``use_pickle`` (and legacy ``data/weights/<model>.pt`` files), and ``pickle.loads`` "opaque"
  constants -- a pickle's ``__reduce__`` runs arbitrary Python;
* loads the sample inputs with ``weights_only=True`` but falls back to ``weights_only=False``
  when that fails;
* parses symbolic shapes with ``sympy.sympify`` (``eval``) and compiles ``guards_code`` (Python
  source) into the module's input guard.

:func:`scan_exported_program` checks the archive's bytes before torch sees them (the same bytes
are then loaded from memory): no pickled payload, sample inputs that load with
``weights_only=True``, shape expressions and guards within a small grammar of what
``torch.export`` writes, node targets among torch operators. Anything else is refused with the
opt-ins (``trust_native_code=True`` / ``expected_digest=``) named.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from illia_export.artifact.digest import MAX_PARSED_MEMBER, ZIP_ERRORS, check_member_sizes
from illia_export.errors import ArtifactError

#: Node targets the loader resolves (``torch.ops.<namespace>.<op>.<overload>``, ``_operator.<fn>``).
_TARGET = re.compile(
    r"^(torch\.ops\.(aten|prims|higher_order)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?"
    r"|torch\.(sym_[a-z_]+|_sym_sqrt)|math\.(ceil|floor|trunc|sqrt))$"
)
_OPERATORS = {
    "mul", "add", "sub", "floordiv", "truediv", "mod", "neg", "pow", "getitem",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_", "abs",
}  # fmt: skip
#: Names a shape expression (``sympy.srepr`` as torch.export writes it) may use.
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Mul", "Add", "Pow", "Max", "Min", "Mod", "floor", "ceiling", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "true", "false", "oo", "zoo", "nan",
    "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan",
    "BooleanTrue", "BooleanFalse", "Infinity", "NegativeInfinity", "One", "Zero", "NegativeOne", "Half",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "IntTrueDiv", "Identity", "TruncToInt", "RoundToInt",
    "positive", "integer", "nonnegative", "real", "finite", "commutative", "True", "False",
}  # fmt: skip
_SYMBOL_NAME = re.compile(r"^[a-z]+[0-9]+$")
_EXPR_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>-?[0-9]+)|(?P<str>'[^']*')|(?P<punct>[(),=+\-*/]))")
#: A guard's tensor-size reference, e.g. ``L['args'][2].size()[0]``.
_GUARD_REF = re.compile(r"L\['[A-Za-z_][A-Za-z0-9_]*'\](?:\[[0-9]+\])*(?:\.(?:size|stride)\(\)\[[0-9]+\]|\.(?:size|stride)\([0-9]+\))?")
_GUARD_TOKEN = re.compile(r"\s*(?:(?P<ref>@)|(?P<int>[0-9]+)|(?P<word>and|or|not)\b|(?P<op>==|!=|<=|>=|//|[<>%*+\-()]))")


def _refuse(path: Path, what: str) -> ArtifactError:
    return ArtifactError(
        f"{path}: {what}. Loading it would run code from the file, which illia-export does not do for an "
        "untrusted .pt2 (it never writes such archives). If you trust its origin, pass trust_native_code=True "
        "(CLI --trust-native-code) or expected_digest='sha256:...' (CLI --expect-digest)"
    )


def _check_expr(path: Path, text: Any) -> None:
    if not isinstance(text, str) or len(text) > 10_000:
        raise _refuse(path, f"a shape expression is not a short string ({str(text)[:40]!r})")
    pos = 0
    while pos < len(text.rstrip()):
        m = _EXPR_TOKEN.match(text, pos)
        if m is None:
            raise _refuse(path, f"the shape expression {text[:60]!r} holds {text[pos:pos + 10]!r}, not sympy's form")
        name, string = m.group("name"), m.group("str")
        if name is not None and name not in _SYMPY_NAMES and not _SYMBOL_NAME.match(name):
            raise _refuse(path, f"the shape expression {text[:60]!r} calls {name!r}")
        if string is not None and not _SYMBOL_NAME.match(string[1:-1]):
            raise _refuse(path, f"the shape expression {text[:60]!r} holds the string {string!r}")
        pos = m.end()


def _check_guard(path: Path, code: Any) -> None:
    if not isinstance(code, str) or len(code) > 10_000 or "@" in code:
        raise _refuse(path, f"a guard is not a short comparison ({str(code)[:40]!r})")
    text = _GUARD_REF.sub("@", code)
    pos = 0
    while pos < len(text.rstrip()):
        m = _GUARD_TOKEN.match(text, pos)
        if m is None:
            raise _refuse(path, f"the guard {code[:60]!r} is not a comparison of input sizes")
        pos = m.end()


def _walk(path: Path, obj: Any, key: str = "") -> None:
    """Check every shape expression and node target in a serialized program (JSON)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "expr_str":
                _check_expr(path, v)
            elif k == "target" and isinstance(v, str):
                op = v.partition("_operator.")[2]
                if v.split(".")[3:4] == ["from_file"] or not (
                    _TARGET.match(v) or (v.startswith("_operator.") and op in _OPERATORS)
                ):  # (aten.from_file maps a file shared: a program could write to it)
                    raise _refuse(path, f"the program calls {v[:80]!r}, which is not a torch operator")
            elif k == "guards_code":
                for code in v if isinstance(v, list) else [v]:
                    _check_guard(path, code)
            elif k == "range_constraints" and isinstance(v, dict):
                for name in v:
                    _check_expr(path, name)
            _walk(path, v, k)
    elif isinstance(obj, list):
        for v in obj:
            _walk(path, v, key)


def scan_exported_program(data: bytes, path: Path) -> None:
    """Raise :class:`ArtifactError` unless loading the ``.pt2`` bytes `data` runs no code from them."""
    import torch

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as exc:
        raise ArtifactError(f"{path} is not a readable .pt2 archive: {type(exc).__name__}: {exc}") from exc
    with zf:
        check_member_sizes(zf, path)
        try:
            for info in zf.infolist():
                rel = info.filename.partition("/")[2]
                if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt"):
                    raise _refuse(path, f"its member {rel!r} is a pickle (legacy weight format)")
                if rel.startswith("data/") and rel.endswith(("_weights_config.json", "_constants_config.json")):
                    for fqn, meta in _json(zf, info, path).get("config", {}).items():
                        name = meta.get("path_name", "") if isinstance(meta, dict) else ""
                        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                            raise _refuse(path, f"its weight {fqn!r} is stored as a pickle")
                        if not isinstance(name, str) or not name.startswith(("weight_", "tensor_")):
                            raise _refuse(path, f"its constant {fqn!r} is a pickled object ({str(name)[:40]!r})")
                elif rel.startswith("data/sample_inputs/"):
                    try:
                        torch.load(io.BytesIO(zf.read(info)), weights_only=True)
                    except Exception as exc:  # torch's restricted unpickler refused it
                        raise _refuse(path, f"its sample inputs {rel!r} are not plain tensors ({type(exc).__name__})") from exc
                elif rel.startswith("models/") and rel.endswith(".json"):
                    _walk(path, _json(zf, info, path))
        except ZIP_ERRORS as exc:
            raise ArtifactError(f"{path} is not a readable .pt2 archive: {type(exc).__name__}: {exc}") from exc


def _json(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> dict:
    if info.file_size > 64 * MAX_PARSED_MEMBER:
        raise ArtifactError(f"{path}: member {info.filename!r} is larger than 1 GiB")
    try:
        obj = json.loads(zf.read(info))
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: member {info.filename!r} is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: member {info.filename!r} is not a JSON object")
    return obj
