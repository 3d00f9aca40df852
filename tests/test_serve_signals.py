"""`launch.py serve` stops cleanly on SIGINT, even when its parent left SIGINT ignored (a
background job of a non-interactive shell: CI scripts, `cmd &`), and on SIGTERM (a container stop):
the web server closes, the job consumers stop, exit code 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint-ignored-by-parent", "sigterm"])
def test_serve_stops_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "launch.py", "serve", "--data", str(tmp_path / "data"), "--no-worker",
             "--port", str(_free_port())],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `cmd &` in a script
        )
        try:
            deadline = time.monotonic() + 120
            while "Running on local URL" not in log.read_text():  # gradio is serving
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            proc.send_signal(sig)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert code == 0, log.read_text()
    assert "job consumers stopped" in log.read_text()
