"""Building the app without launching it; what it imports; how it is launched; its settings."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gradio as gr
import pytest

from app import ui
from app.settings import parse_auth, train_defaults
from services.context import Studio
from services.errors import UserError
from services.train_options import TrainOptions
from tests.conftest import REPO_ROOT


def _components(demo: gr.Blocks) -> dict[str, gr.components.Component]:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_build_without_launch_has_every_screen(studio: Studio) -> None:
    demo = ui.build_ui(studio)
    assert isinstance(demo, gr.Blocks)
    ids = _components(demo)
    for tab in ("projects", "import", "browse", "tag", "paint", "train", "review", "export"):
        assert f"tab-{tab}" in ids
    assert '<div id="painter">' in ids["painter-host"].value  # our canvas editor mounts there
    assert {"paint-load", "paint-payload"} <= set(ids)
    assert "window.slrPainter" in ui.page_head() and "payload" in ui.page_head()
    assert any(isinstance(b, gr.Timer) for b in demo.blocks.values())
    names = {fn.name for fn in demo.fns.values()}
    assert {"start_training", "poll_jobs", "save_painting", "save_and_next", "start_export"} <= names


def test_server_folder_import_shows_only_with_import_roots(studio: Studio, tmp_path: Path) -> None:
    hidden = _components(ui.build_ui(studio))
    assert hidden["import-folder-column"].visible is False
    assert "--import-root" in hidden["import-folder-hint"].value
    studio.import_roots = (tmp_path.resolve(),)
    shown = _components(ui.build_ui(studio))
    assert shown["import-folder-column"].visible is True and "import-folder-hint" not in shown


def test_training_defaults_come_from_the_environment(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLRNET_TRAIN_OPTIONS", '{"backbone": "tiny", "epochs": 1, "image_size": 64}')
    values = {b.label: b.value for b in ui.build_ui(studio).blocks.values() if hasattr(b, "value")}
    assert values["Backbone"] == "tiny"
    assert values["Epochs (empty: default)"] == 1
    assert values["Image size (empty: default)"] == 64


def test_importing_the_ui_does_not_import_torch() -> None:
    # app.ui, and what its handlers import lazily at run time (the export service)
    code = "import sys, app.ui, services.exporting; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_launch_binds_localhost_and_serves_only_thumbnails_and_exports(studio: Studio) -> None:
    options = ui.launch_options(studio)
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7860
    assert options["auth"] is None
    assert options["allowed_paths"] == [str(studio.data_dir / "exports")]
    assert Path(options["allowed_paths"][0]).is_dir()
    assert "slrnet.tab" in options["js"] and "tag-save-next" in options["head"]  # the page scripts
    assert ui.launch_options(studio, "0.0.0.0", 8000, "ann:s3:cret")["auth"] == ("ann", "s3:cret")


def test_auth_must_be_user_colon_password() -> None:
    assert parse_auth(None) is None and parse_auth("") is None
    assert parse_auth("a:b") == ("a", "b")
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(UserError):
            parse_auth(bad)


def test_train_defaults_are_validated() -> None:
    assert train_defaults("") == TrainOptions()
    assert train_defaults('{"epochs": 2, "device": "cpu"}') == TrainOptions(epochs=2, device="cpu")
    for bad in (
        "[1]",
        "{",
        '{"lr": 1}',
        '{"epochs": 0}',
        '{"backbone": "vgg"}',
        '{"mode": "x"}',
        '{"device": "tpu"}',
    ):
        with pytest.raises(UserError):
            train_defaults(bad)


def test_login_is_required_when_auth_is_set(studio: Studio) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = ui.build_ui(studio)
    demo.launch(
        **ui.launch_options(studio, port=port, auth="ann:s3cret"), prevent_thread_lock=True, quiet=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/config", timeout=10)
        assert refused.value.code == 401

        def login(password: str) -> int:
            form = urllib.parse.urlencode({"username": "ann", "password": password}).encode()
            try:
                with urllib.request.urlopen(f"{base}/login", data=form, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert login("wrong") == 400
        assert login("s3cret") == 200
    finally:
        demo.close()
