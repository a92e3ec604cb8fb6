"""The ``illia-export`` command line: argument parsing and printing only.

Each subcommand lives in its own module ``illia_export.cli.<name>_cmd`` exposing
``register(subparsers)``; every action is a library call. Heavy backends are imported inside the
commands, so ``illia-export --help`` stays fast. User errors (typed ``IlliaExportError``\\ s, bad
files, bad shapes) print one line and exit with status 2 — no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("export", "inspect", "predict", "evaluate", "serve", "freeze")

_DESCRIPTION = """\
Export Bayesian neural networks with their noise as explicit graph inputs, and run Monte Carlo
inference with uncertainty from the exported artifacts.

examples:
  illia-export model.pt --format onnx                 # TorchScript archive -> ONNX (+ validation)
  illia-export model.pt --format torchscript --input-shape 1,1,28,28
  illia-export inspect model.onnx                     # manifest, inputs, noise, outputs
  illia-export predict model.onnx --input x.npy --samples 64 --seed 0
  illia-export evaluate model.onnx --input x.npy --labels y.npy --ood ood.npy
  illia-export predict model.onnx -i rows.parquet -o scores.parquet --engine ray   # batch scoring
  illia-export serve model.onnx --port 8000           # KServe v2 inference protocol over HTTP
  illia-export freeze model.onnx -o frozen.onnx -S 32 --seed 0   # for Triton / any ONNX server
  illia-export serve model.onnx --port 8000            # KServe v2 HTTP server

'illia-export MODEL ...' is short for 'illia-export export MODEL ...'.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="illia-export", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        spec = f"illia_export.cli.{name}_cmd"
        if importlib.util.find_spec(spec) is None:  # a partial install without that command
            continue
        importlib.import_module(spec).register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("illia-export")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from illia_export.artifact.atomic import ExportInterrupted
    from illia_export.errors import IlliaExportError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv.insert(0, "export")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except IlliaExportError as exc:
        print(f"illia-export: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"illia-export: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only file system, ...
        print(f"illia-export: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"illia-export: error: out of memory ({_one_line(exc)}); lower --samples or the batch", file=sys.stderr)
        return 2
    except ExportInterrupted as exc:
        print(f"illia-export: {exc}; nothing was written", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("illia-export: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback on request
        if os.environ.get("ILLIA_EXPORT_DEBUG"):
            raise
        print(
            f"illia-export: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(set ILLIA_EXPORT_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
