"""SIGTERM / SIGHUP during an export: nothing partial is left, the previous artifact is intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT

_WRITER = """
import sys, time
from illia_export.artifact.atomic import atomic_output
target, directory = sys.argv[1], sys.argv[2] == "dir"
with atomic_output(target, directory=directory) as tmp:
    if directory:
        (tmp / "saved_model.pb").write_bytes(b"new, half written")
    else:
        tmp.write_bytes(b"new, half written")
    print("writing", flush=True)
    time.sleep(60)
print("done", flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _default_signals() -> None:
    """In the child: SIGINT as an interactive user has it. A job started in the background by a
    non-interactive shell (nohup, `&` in CI scripts) inherits SIGINT ignored, and Python then
    leaves it ignored, as it should; the test is about what a delivered SIGINT does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
@pytest.mark.parametrize("directory", [False, True])
def test_signal_during_a_write_leaves_the_previous_artifact(tmp_path, sig, directory):
    target = tmp_path / ("model_savedmodel" if directory else "model.onnx")
    if directory:
        target.mkdir()
        (target / "saved_model.pb").write_bytes(b"previous")
    else:
        target.write_bytes(b"previous")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target), "dir" if directory else "file"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_default_signals,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert _hidden(tmp_path), "the temporary artifact should exist while writing"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "done" not in proc.stdout.read()
    previous = (target / "saved_model.pb") if directory else target
    assert previous.read_bytes() == b"previous"
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_a_cli_export(tmp_path, art, sig):
    """A real export (model loading, scripting, ONNX export, validation) killed as soon as its
    temporary artifact appears: exit 128+signal, one line, no temp file, old artifact intact."""
    model = tmp_path / "model.pt"
    model.write_bytes(art["mlp_source"].read_bytes())
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous artifact")
    proc = subprocess.Popen(
        [sys.executable, "-m", "illia_export.cli", str(model), "--input-shape", "2,6", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_default_signals,
    )
    deadline = time.monotonic() + 240
    sent = False
    while proc.poll() is None and time.monotonic() < deadline:
        if _hidden(tmp_path):
            proc.send_signal(sig)
            sent = True
            break
        time.sleep(0.002)
    stdout, stderr = proc.communicate(timeout=240)
    if not sent:
        pytest.skip("the export finished before its temporary file could be seen")
    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    assert "Traceback" not in stderr
    assert out.read_bytes() == b"previous artifact"
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
@pytest.mark.parametrize("directory", [False, True], ids=["file", "folder"])
def test_signal_while_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch, directory, sig):
    """A signal sent at the instant the temporary appears (inside mkstemp/mkdtemp, before the
    cleanup block is entered): the write is interrupted and no temporary is left behind."""
    import tempfile
    import threading

    from illia_export.artifact.atomic import ExportInterrupted, atomic_output

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    name = "mkdtemp" if directory else "mkstemp"
    real = getattr(tempfile, name)

    def create_then_signal(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), sig)
        return made

    monkeypatch.setattr(tempfile, name, create_then_signal)
    target = tmp_path / ("saved" if directory else "model.onnx")
    # SIGINT as an interactive user has it (a background CI job may inherit it ignored).
    interactive = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else ExportInterrupted):
            with atomic_output(target, directory=directory):
                pass
    finally:
        signal.signal(signal.SIGINT, interactive)
    assert _hidden(tmp_path) == []
    assert not target.exists()
