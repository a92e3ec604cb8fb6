"""Write artifacts atomically: build under a temporary name, rename into place on success.

A failed export (an exception, a failed validation) leaves nothing at the output path and no
temporary files behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on normal exit move it to `path`, else delete it.

    With ``directory=True`` the temporary path is an (empty, existing) folder.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if final.exists() and final.is_dir() != tmp.is_dir():
            _remove(final)
        elif final.is_dir():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
