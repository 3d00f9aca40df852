"""Uploads to the web server are limited in size ($SLRNET_MAX_UPLOAD_MB) and leave Gradio's upload
cache after $SLRNET_UPLOAD_CACHE_S (both were unbounded: the cache was never cleaned)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest

from app.settings import max_upload_bytes, upload_cache_seconds
from app.ui import build_ui, launch_options
from services.context import Studio
from services.errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLRNET_MAX_UPLOAD_MB", raising=False)
    monkeypatch.delenv("SLRNET_UPLOAD_CACHE_S", raising=False)
    assert max_upload_bytes() == 2048 * 2**20 and upload_cache_seconds() == 3600
    monkeypatch.setenv("SLRNET_MAX_UPLOAD_MB", "10")
    monkeypatch.setenv("SLRNET_UPLOAD_CACHE_S", "600")
    assert max_upload_bytes() == 10 * 2**20 and upload_cache_seconds() == 600
    for bad in ("0", "-5", "lots"):
        with pytest.raises(UserError, match="SLRNET_MAX_UPLOAD_MB must be a positive number"):
            max_upload_bytes(bad)


def test_the_app_launches_with_the_limit_and_a_cleaned_cache(studio: Studio,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLRNET_MAX_UPLOAD_MB", "10")
    monkeypatch.setenv("SLRNET_UPLOAD_CACHE_S", "600")
    assert launch_options(studio)["max_file_size"] == 10 * 2**20
    assert build_ui(studio).delete_cache == (60, 600)


def test_the_server_refuses_large_uploads_and_forgets_old_ones(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    with gr.Blocks(delete_cache=(1, 1)) as demo:
        gr.File()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                ssr_mode=False, max_file_size=max_upload_bytes("1"))
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/upload"
        big = httpx.post(url, files={"files": ("big.zip", b"x" * (2 * 2**20))})
        assert big.status_code == 413, big.text
        small = httpx.post(url, files={"files": ("small.jpg", b"y" * 1000)})
        assert small.status_code == 200, small.text
        stored = Path(small.json()[0])
        assert stored.is_file()
        deadline = time.monotonic() + 20
        while stored.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not stored.exists(), "the upload stayed in Gradio's cache"
    finally:
        demo.close()
