"""Shared fixtures: paths to ../shared (skip when absent), an offline torch hub cache, a studio, and
the browser tests' served app, headless Chromium and page (tests/browser_support.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser_support import browser, page, server  # noqa: F401 (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLRNET_SHARED", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"

# Imports in tests queue no background feature computation with the real backbone (the app and
# its subprocesses in the browser tests inherit this); tests/test_features_jobs.py turns it on.
os.environ.setdefault("SLRNET_PREFILL_FEATURES", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco128(shared_data: Path) -> Path:
    root = shared_data / "coco128"
    if not root.is_dir():
        pytest.skip("coco128 not in shared data")
    return root


@pytest.fixture(scope="session")
def camvid(shared_data: Path) -> Path:
    root = shared_data / "camvid"
    if not root.is_dir():
        pytest.skip("camvid not in shared data")
    return root


@pytest.fixture(scope="session")
def torch_hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME seeded from ../shared/weights, so torchvision's weights API works offline."""
    src = SHARED_WEIGHTS / "mobilenet_v2-b0353104.pth"
    if not src.is_file():
        pytest.skip(f"pretrained weights not found at {src}")
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copy(src, ckpt / src.name)
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture()
def torch_one_thread():
    """Run torch on one thread: on a shared 2-core host, two OpenMP threads wait on each other and
    small convolutions get up to 100x slower than on one."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh Studio (SQLite database and image store) under tmp_path/data."""
    from services.context import Studio

    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    opened = Studio.open(tmp_path / "data")
    yield opened
    opened.close()
