"""Against the real Label Studio (PyPI ``label-studio`` in its own virtualenv, ``.venv-ls``, which
``make test`` installs when missing): started on a loopback port with a temporary data dir; a
project made through its HTTP API, images uploaded, our backend (``launch.py
label-studio-backend``) connected, annotations created, training started from Label Studio and
predictions fetched; the predictions checked pixel by pixel against our own export, and our export
-> Label Studio -> its export -> our import checked lossless.

Skipped, saying why, when Label Studio is not installed. Not marked slow (``make test`` runs it;
``make test-label-studio`` runs only it): Label Studio's first start migrates its database (about
45 s on two cores), so the migrated, empty data dir is kept in the virtualenv
(``slrnet-test-data``) and each run starts on a copy of it (about 6 s); the training is one short
run (``--train-minutes 0.02``), since what is checked is the round trip, not the model.
``SLRNET_LS_VENV`` names another virtualenv; ``SLRNET_LS_SCREENSHOT=PATH`` also saves a screenshot
of a task with SLRNet's predictions (the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from jobs.views import list_jobs
from services.context import Studio
from services.export_label_studio import config_path
from services.exporting import ExportOptions, export_project
from services.formats.label_studio import SHA_KEY, labelling_config
from services.formats.label_studio_rle import decode_mask, encode_mask
from services.import_options import ImportOptions
from services.importing import import_dataset
from storage.files import sha256_bytes
from storage.images import all_images
from storage.projects import get_project_by_name
from tests.conftest import REPO_ROOT
from tests.label_studio_support import project_labels

pytestmark = pytest.mark.label_studio

LS_VENV = Path(os.environ.get("SLRNET_LS_VENV", REPO_ROOT / ".venv-ls"))
TOKEN = "slrnet-test-token-0123456789"
CLASSES = ["background", "square", "disc"]
W, H = 96, 64
START_TIMEOUT_S = 600.0
# the training budget of the backend's START_TRAINING: a short run (an epoch or two) is enough for
# predictions that must equal our export; the README's screenshot shows a longer one's
TRAIN_MINUTES = 0.3 if os.environ.get("SLRNET_LS_SCREENSHOT") else 0.02


def _mark(what: str) -> None:
    """When a stage ended (shown with -s, and with a failure's output): where the time goes."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"{url} did not come up within {timeout:.0f} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _image(seed: int) -> tuple[bytes, np.ndarray]:
    """A PNG with a bright square and a dark disc on noise, and its true label map."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 160, size=(H, W, 3), dtype=np.uint8)
    truth = np.zeros((H, W), np.uint8)
    x, y = 8 + 7 * seed, 6 + 3 * seed
    truth[y : y + 24, x : x + 24] = 1
    yy, xx = np.mgrid[:H, :W]
    truth[(yy - 40) ** 2 + (xx - 70 + 4 * seed) ** 2 < 12**2] = 2
    pixels[truth == 1] = (240, 230, 40)
    pixels[truth == 2] = (30, 40, 200)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), truth


def _ls_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "DJANGO_SETTINGS_MODULE")}
    env.update(
        {
            "LABEL_STUDIO_USERNAME": "test@example.com",
            "LABEL_STUDIO_PASSWORD": "slrnet-test-pass",
            "LABEL_STUDIO_USER_TOKEN": TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "SSRF_PROTECTION_ENABLED": "false",
            "USE_DEFAULT_BANNED_SUBNETS": "false",  # the backend: loopback
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(root),
            "WEBHOOK_TIMEOUT": "10",
        }
    )
    return env


def _migrated_data_dir(executable: Path, target: Path) -> None:
    """``target``: a copy of a Label Studio data dir whose database is migrated and empty (no user,
    no project), made once per virtualenv (``label-studio version`` applies the migrations and
    exits) and kept there; where the virtualenv is not writable, migrated in place. A template
    from an older Label Studio is still right: each start applies the migrations it lacks."""
    template = LS_VENV / "slrnet-test-data"
    if not template.is_dir():
        staging = LS_VENV / f"slrnet-test-data.{os.getpid()}"
        try:
            staging.mkdir()
        except OSError:
            staging = target
        env = _ls_env(staging)
        for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
            env.pop(key)
        done = subprocess.run(
            [str(executable), "version", "--data-dir", str(staging)],
            cwd=staging.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        if done.returncode != 0:
            pytest.fail(
                f"Label Studio's migrations failed ({done.returncode}): {done.stdout[-1000:]}"
                f"{done.stderr[-2000:]}"
            )
        if staging == target:
            return
        try:
            staging.rename(template)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(template, target)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Label Studio started for this module."""
    executable = LS_VENV / "bin" / "label-studio"
    if not executable.is_file():
        pytest.skip(
            f"Label Studio is not installed in {LS_VENV}: `make test` installs it when it can "
            "(when it cannot, its output has a note saying so)"
        )
    root = tmp_path_factory.mktemp("label_studio")
    _migrated_data_dir(executable, root / "data")
    _mark("Label Studio: a migrated data dir")
    port = _free_port()
    env = _ls_env(root)
    log = root / "label_studio.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(executable),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(root / "data"),
                "--enable-legacy-api-token",
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{url}/health", proc, log, START_TIMEOUT_S)
        _mark("Label Studio: up")
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, label_studio: str, torch_hub_cache: Path
) -> Iterator[tuple[str, Path]]:
    """Our backend (URL, data dir), started with the launch.py verb; it fetches images with a
    personal access token where Label Studio gives one (else the legacy token)."""
    with _api(label_studio) as api:
        created = api.post("/api/token/")
    key = created.json().get("token") if created.status_code == 201 else None
    print(f"backend's API key: {'personal access token' if key else 'legacy token'} ({created.status_code})")
    data = tmp_path_factory.mktemp("slrnet") / "data"
    port = _free_port()
    log = data.parent / "backend.log"
    env = {**os.environ, "TORCH_HOME": str(torch_hub_cache), "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "launch.py"),
                "label-studio-backend",
                "--data",
                str(data),
                "--port",
                str(port),
                "--label-studio-url",
                label_studio,
                "--api-key",
                key or TOKEN,
                "--train-minutes",
                str(TRAIN_MINUTES),
                "--project",
                "from-ls",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{url}/health", proc, log, 120)
        _mark("backend: up")
        yield url, data
    finally:
        _stop(proc)


def _api(label_studio: str) -> httpx.Client:
    return httpx.Client(base_url=label_studio, headers={"Authorization": f"Token {TOKEN}"}, timeout=120)


def _brush(label: str, mask: np.ndarray) -> dict:
    value = {"format": "rle", "rle": encode_mask(mask), "brushlabels": [label]}
    return {
        "from_name": "mask",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": W,
        "original_height": H,
        "value": value,
    }


def _until(check, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def _regions_to_map(results: list[dict]) -> np.ndarray:
    out = np.full((H, W), 255, np.uint8)
    for r in results:
        if r["type"] == "brushlabels":
            out[decode_mask(r["value"]["rle"], W, H)] = CLASSES.index(r["value"]["brushlabels"][0])
    return out


def test_label_studio_round_trips(label_studio: str, backend: tuple[str, Path], tmp_path: Path):
    backend_url, data_dir = backend
    api = _api(label_studio)
    images = {f"shape{i}.png": _image(i) for i in range(4)}
    folder = tmp_path / "images"
    folder.mkdir()
    for name, (png, _) in images.items():
        (folder / name).write_bytes(png)

    # a project, its images, our backend
    project = api.post("/api/projects", json={"title": "SLRNet", "label_config": labelling_config(CLASSES)})
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    files = [(f"file{i}", (n, png, "image/png")) for i, (n, (png, _)) in enumerate(images.items())]
    upload = api.post(f"/api/projects/{pid}/import", files=files)
    assert upload.status_code == 201, upload.text
    tasks = api.get("/api/tasks", params={"project": pid, "page_size": 100}).json()["tasks"]
    by_name = {t["data"]["image"].rsplit("-", 1)[-1]: t for t in tasks}
    assert sorted(by_name) == sorted(images)
    _mark("images uploaded")
    ml = api.post("/api/ml", json={"url": backend_url, "project": pid, "title": "SLRNet"})
    assert ml.status_code == 201, ml.text

    # annotations on two images: synced into our project by the webhook
    painted = {}
    for name in ("shape0.png", "shape1.png"):
        truth = images[name][1]
        result = [_brush(CLASSES[k], truth == k) for k in (0, 1, 2)]
        result.append(
            {
                "from_name": "tags",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": ["square", "disc"]},
            }
        )
        answer = api.post(f"/api/tasks/{by_name[name]['id']}/annotations", json={"result": result})
        assert answer.status_code == 201, answer.text
        painted[sha256_bytes(images[name][0])] = truth
    with Studio.open(data_dir) as studio:

        def synced():
            labels = project_labels(studio, "from-ls") if _has_project(studio, "from-ls") else {}
            return sum(mask is not None for mask, _ in labels.values()) == 2 and labels

        labels = _until(synced, "the annotations to reach our project", 120)
        for name, (mask, tags) in labels.items():
            if mask is not None:
                assert tags == {"square", "disc"}
                assert any(np.array_equal(mask, truth) for truth in painted.values()), name

        _mark("annotations synced")
        # training, started from Label Studio, answered at once; then predictions
        started = time.monotonic()
        train = api.post(f"/api/ml/{ml.json()['id']}/train")
        assert train.status_code == 200, train.text
        assert time.monotonic() - started < 10
        job = _until(
            lambda: next(
                (j for j in list_jobs(studio) if j.kind == "train" and j.status in ("succeeded", "failed")),
                None,
            ),
            "training",
            600,
        )
        assert job.status == "succeeded", job.message
        _mark("trained")
    action = api.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": pid},
        json={"selectedItems": {"all": True, "excluded": []}},
    )
    assert action.status_code == 200, action.text
    predictions = {t["id"]: api.get("/api/predictions", params={"task": t["id"]}).json() for t in tasks}
    assert all(predictions.values()), predictions
    _mark("predictions fetched")

    # the predictions Label Studio holds are our export's, pixel for pixel
    with Studio.open(data_dir) as studio:
        export_project(studio, "from-ls", tmp_path / "ours.json", ExportOptions(fmt="label-studio"))
    ours = {t["data"][SHA_KEY]: t for t in json.loads((tmp_path / "ours.json").read_text())}
    for name, t in by_name.items():
        (prediction,) = predictions[t["id"]]
        mine = ours[sha256_bytes(images[name][0])]["predictions"][0]
        assert prediction["model_version"] == mine["model_version"]
        assert prediction["score"] == pytest.approx(mine["score"])
        assert np.array_equal(_regions_to_map(prediction["result"]), _regions_to_map(mine["result"]))
        assert (_regions_to_map(prediction["result"]) != 255).any()
    _screenshot(label_studio, pid, by_name["shape2.png"]["id"])

    # our export -> Label Studio -> its export -> our import: lossless
    config = config_path(tmp_path / "ours.json").read_text()
    copy = api.post("/api/projects", json={"title": "copy", "label_config": config})
    assert copy.status_code == 201, copy.text
    imported = api.post(f"/api/projects/{copy.json()['id']}/import", json=list(ours.values()))
    assert imported.status_code == 201, imported.text
    exported = api.get(f"/api/projects/{copy.json()['id']}/export", params={"exportType": "JSON"})
    assert exported.status_code == 200, exported.text
    (tmp_path / "theirs.json").write_text(exported.text)
    with Studio.open(tmp_path / "again") as studio:
        import_dataset(
            studio,
            folder,
            ImportOptions(
                label_studio_json=tmp_path / "theirs.json", label_config=config_path(tmp_path / "ours.json")
            ),
            project="again",
        )
        again = project_labels(studio, "again")
    with Studio.open(data_dir) as studio:
        original = project_labels(studio, "from-ls")
    by_sha = {sha256_bytes(images[n][0]): labels for n, labels in again.items()}
    with Studio.open(data_dir) as studio, studio.Session() as session:
        project_id = get_project_by_name(session, "from-ls").id
        sha_of = {im.name: im.sha256 for im in all_images(session, project_id)}
    assert sum(mask is not None for mask, _ in original.values()) == 2
    for name, (mask, tags) in original.items():
        mask2, tags2 = by_sha[sha_of[name]]
        assert tags == tags2
        assert (mask is None and mask2 is None) or np.array_equal(mask, mask2)
    _mark("round trip checked")


def _has_project(studio: Studio, name: str) -> bool:
    with studio.Session() as session:
        return get_project_by_name(session, name) is not None


def _screenshot(label_studio: str, project_id: int, task_id: int) -> None:
    """With SLRNET_LS_SCREENSHOT, a screenshot of the task's page showing the predictions."""
    target = os.environ.get("SLRNET_LS_SCREENSHOT")
    if not target:
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{label_studio}/user/login")
        page.fill("input[name=email]", "test@example.com")
        page.fill("input[name=password]", "slrnet-test-pass")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{label_studio}/projects/{project_id}/data?task={task_id}")
        page.wait_for_timeout(8000)
        page.screenshot(path=target)
        browser.close()
