"""Write artifacts atomically, and never destroy what illia-export did not create.

An artifact is built under a temporary name beside its target and renamed into place only when
the body of :func:`atomic_output` finishes (after validation). A failed export -- an exception,
a failed validation, Ctrl-C, ``SIGTERM`` or ``SIGHUP`` -- leaves nothing at the output path, the
previous artifact there intact, and no temporary file behind.

Guards (:func:`check_output_path`, also run by :func:`atomic_output` before any work):

* an existing **folder** at the output path is refused, unless it is an earlier artifact of the
  format being written (a SavedModel folder, ``directory=True``): that one is replaced only
  after the new one is complete, and the old one is moved aside first, so a crash between the
  two renames leaves one of them in place;
* an existing **file** is refused where a folder is to be written;
* the output may not be one of the `sources` (the model, weights or input files the command
  reads) nor a folder holding one: symlinks are resolved first;
* the parent folder must be a folder (it is created when missing, unless
  ``create_parents=False``) and writable.

* the output may not be a file that belongs to another artifact: a manifest sidecar
  (``<artifact>.manifest.json`` beside an existing artifact) or the local-reparameterization
  variant an existing artifact's manifest names (``mlp.local.onnx`` of ``mlp.onnx``) -- unless
  the writer is writing that artifact (``part_of=``).

Temporary names are ``.<name>.illia-<pid>-<random>.tmp<suffix>``: a run killed with SIGKILL
leaves one behind, and the next write to the same target removes those whose process is gone.

Files and folders get the permissions a plain ``open()``/``mkdir`` would give them
(``0o666``/``0o777`` minus the process umask), not ``mkstemp``'s ``0o600``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from illia_export.errors import ArtifactError

#: Signals turned into a clean interruption while an artifact is being written.
INTERRUPT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)

_umask_lock = threading.Lock()
#: Marks our temporary names (``.<name>.illia-<pid>-<random>.tmp``).
TMP_TAG = "illia"


class ExportInterrupted(KeyboardInterrupt):
    """Raised (like Ctrl-C) when SIGTERM or SIGHUP arrives while an artifact is being written.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def current_umask() -> int:
    """The process umask (read without changing it for longer than two syscalls)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _is_artifact_folder(path: Path) -> bool:
    """An earlier illia-export (or TF) SavedModel folder: the only folder we ever replace."""
    return (path / "saved_model.pb").is_file()


def _holds(out: Path, src: Path) -> bool:
    """Whether writing `out` would replace `src` (the same path, or a folder holding it)."""
    return out == src or out in src.parents


def _owner_artifact(final: Path) -> Path | None:
    """The existing artifact `final` belongs to (as its sidecar or its local variant), or None."""
    from illia_export.artifact.manifest import SIDECAR_SUFFIX, read_manifest

    name = final.name
    if name.endswith(SIDECAR_SUFFIX) and len(name) > len(SIDECAR_SUFFIX):
        owner = final.with_name(name[: -len(SIDECAR_SUFFIX)])
        if owner.exists():
            return owner
    stem = final.stem
    if stem.endswith(".local") and len(stem) > len(".local"):
        owner = final.with_name(stem[: -len(".local")] + final.suffix)
        if owner.is_file():
            try:
                local = read_manifest(owner).local
            except Exception:  # not an artifact (or unreadable): nothing of ours to protect
                return None
            if local is not None and local.file == name:
                return owner
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporary files and folders an earlier, killed write to `final` left behind
    (``.<name>.illia-<pid>-*`` whose process is gone); return what was removed."""
    removed = []
    prefix = f".{final.name}.{TMP_TAG}-"
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix):].partition("-")[0]
        if entry.name.endswith(".old") and not final.exists():
            continue  # a killed swap's only copy of the previous artifact: left for the user
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            _remove(entry)
            removed.append(entry)
    return removed


def check_output_path(
    path: str | os.PathLike,
    *,
    directory: bool = False,
    sources: Iterable[str | os.PathLike] = (),
    create_parents: bool = True,
    what: str = "output",
    part_of: str | os.PathLike | None = None,
) -> Path:
    """Refuse an output path that would destroy user data; return it as a Path.

    Args:
        path: where the artifact (or result file) will be written.
        directory: the artifact is a folder (SavedModel).
        sources: files or folders the command reads (model, weights, inputs); the output may
            not be one of them nor a folder holding one (after resolving symlinks).
        create_parents: create a missing parent folder (else refuse it).
        what: how the path is named in messages (``"output"``, ``"--output"``).
        part_of: the artifact this file is a part of (its local variant, its sidecar), when the
            writer is writing that artifact; any other writer may not replace such a file.

    Raises:
        ArtifactError: with a one-line explanation.
    """
    final = Path(path)
    if str(path) in ("", ".", "..") or final.name in ("", ".", ".."):
        raise ArtifactError(f"{what} {str(path)!r} names a folder, not an artifact file; give a file name")
    resolved = final.resolve()
    for src in sources:
        if src is None:
            continue
        src_resolved = Path(src).resolve()
        if _holds(resolved, src_resolved):
            raise ArtifactError(
                f"{what} {final} would overwrite the input {src}; choose another output path"
                if resolved == src_resolved
                else f"{what} {final} is a folder holding the input {src}; choose another output path"
            )
    owner = _owner_artifact(final)
    if owner is not None and (part_of is None or Path(part_of).resolve() != owner.resolve()):
        role = "manifest" if final.name.endswith(".manifest.json") else "local-reparameterization variant"
        raise ArtifactError(
            f"{what} {final} is the {role} of the artifact {owner}; refusing to replace it (choose another "
            "output path, or re-export that artifact)"
        )
    if final.is_dir():
        if not directory:
            raise ArtifactError(
                f"{what} {final} is an existing folder; refusing to replace it with a file (give a file "
                f"path such as {final / ('model' + (final.suffix or ''))} or remove the folder yourself)"
            )
        if not _is_artifact_folder(final):
            raise ArtifactError(
                f"{what} {final} is an existing folder that is not a SavedModel artifact; refusing to "
                "delete it (choose a new path or remove it yourself)"
            )
    elif final.exists() and directory:
        raise ArtifactError(
            f"{what} {final} is an existing file; a SavedModel is a folder, choose another path"
        )
    parent = final.parent
    if parent.exists() and not parent.is_dir():
        raise ArtifactError(f"{what} {final}: {parent} is not a folder")
    if not parent.exists():
        if not create_parents:
            raise ArtifactError(f"{what} {final}: the folder {parent} does not exist")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(
                f"{what} {final}: cannot create the folder {parent}: {exc.strerror or exc}"
            ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"{what} {final}: the folder {parent} is not writable")
    return final


@contextlib.contextmanager
def _handlers(signals: Iterable[int], handler) -> Iterator[dict]:
    """`handler` for `signals` while the body runs (main thread only: elsewhere nothing is
    installed); yields the handlers it replaced, restored on exit."""
    previous: dict = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover - not the main interpreter
                pass
    try:
        yield previous
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into :class:`ExportInterrupted` while the body runs (main thread only)."""

    def handler(signum, frame):  # noqa: ARG001
        raise ExportInterrupted(signum)

    with _handlers(INTERRUPT_SIGNALS, handler):
        yield


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGTERM/SIGHUP/SIGINT back while the body runs; the first one sent meanwhile is
    handled on exit, by the handler that was in place. (Python handlers run in the main thread
    only, so this holds for a process with other threads, where a signal mask would not.)"""
    pending: list[int] = []
    previous: dict = {}
    try:
        with _handlers((*INTERRUPT_SIGNALS, signal.SIGINT), lambda signum, frame: pending.append(signum)) as previous:
            yield
    finally:
        if pending:
            old = previous.get(pending[0])
            if callable(old):
                old(pending[0], None)
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), pending[0])


def _fix_mode(path: Path, directory: bool) -> None:
    mode = (0o777 if directory else 0o666) & ~current_umask()
    with contextlib.suppress(OSError):
        os.chmod(path, mode)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    directory: bool = False,
    sources: Iterable[str | os.PathLike] = (),
    part_of: str | os.PathLike | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on normal exit move it to `path`, else delete it.

    Args:
        path: the final artifact path (checked by :func:`check_output_path` first).
        directory: the temporary path is an (empty, existing) folder (SavedModel).
        sources: paths the export reads (source model, weights): the output may not be one of
            them (see :func:`check_output_path`).
        part_of: the artifact this file belongs to (see :func:`check_output_path`).

    SIGTERM and SIGHUP raise :class:`ExportInterrupted` (a ``KeyboardInterrupt``) inside the
    body, so the temporary artifact is removed and the previous one stays in place.
    """
    sources = list(sources)
    final = check_output_path(path, directory=directory, sources=sources, part_of=part_of)
    remove_stale_temporaries(final)
    prefix = f".{final.name}.{TMP_TAG}-{os.getpid()}-"
    with _signals_interrupt():
        # A signal between creating the temporary and entering `try` would leave it behind:
        # hold the signals back until the name is known (they arrive right after).
        tmp: Path | None = None
        try:
            with _signals_held():
                if directory:
                    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=final.parent))
                else:
                    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + final.suffix, dir=final.parent)
                    os.close(fd)
                    tmp = Path(name)
            yield tmp
            # The body may have taken minutes: check again what is at the target now.
            check_output_path(final, directory=directory, sources=sources, part_of=part_of)
            _fix_mode(tmp, directory)
            if tmp.is_dir():
                for sub in tmp.rglob("*"):
                    _fix_mode(sub, sub.is_dir())
            if directory and final.is_dir():
                # Replace an earlier SavedModel: move it aside, move the new one in, drop the old.
                backup = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=final.parent))
                backup.rmdir()
                os.replace(final, backup)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    os.replace(backup, final)
                    raise
                _remove(backup)
            else:
                os.replace(tmp, final)
        except BaseException:
            if tmp is not None:
                _remove(tmp)
            raise


def atomic_write_text(
    path: str | os.PathLike,
    text: str,
    *,
    sources: Iterable[str | os.PathLike] = (),
    part_of: str | os.PathLike | None = None,
) -> None:
    """Write `text` to `path` atomically."""
    with atomic_output(path, sources=sources, part_of=part_of) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes, *, sources: Iterable[str | os.PathLike] = ()
) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path, sources=sources) as tmp:
        tmp.write_bytes(data)
