"""Label Studio projects kept in step with ours: what the ML backend (``app/label_studio_backend``)
calls. Torch-free; predictions are in :mod:`services.label_studio_predict`.

* :func:`ensure_project` — our project for a Label Studio labelling config (classes from it;
  classes it adds later are appended).
* :func:`sync_annotation` — an annotation's tags and mask become the image's human labels
  (replacing what an earlier annotation of it said); the image is fetched from Label Studio
  (its URL, the API key) unless the task names our content hash, and stored once by content.
* :func:`delete_annotations` — labels that came from deleted annotations are removed.

Which annotation labelled which image is kept in ``<data dir>/label_studio/<project>.json``
(Label Studio's delete events name annotation ids only).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import numpy as np

from services import labeling
from services.context import Studio
from services.errors import UserError
from services.formats.label_studio import (
    SHA_KEY,
    LabelConfig,
    LabelStudioError,
    image_name,
    mask_results,
    read_results,
    tag_results,
)
from services.importing import import_dataset
from services.lookups import resolve_project
from services.progress import Cancelled
from slrnet.config import IGNORE_INDEX
from storage import images as image_repo
from storage import labels as label_repo
from storage import projects as project_repo
from storage.files import sha256_bytes
from storage.label_maps import decode_label_png
from storage.models import TrainingRun

logger = logging.getLogger(__name__)

STATE_DIR = "label_studio"
MAX_IMAGE_BYTES = 200 * 1024 * 1024
FETCH_TIMEOUT_S = 30.0
_state_lock = threading.Lock()


@dataclass(frozen=True)
class LabelStudioLink:
    """Where Label Studio is and the key to read its files: a legacy token or a personal access
    token (a JWT, exchanged for an access token first)."""

    url: str = ""
    api_key: str = ""

    def headers(self, client: httpx.Client) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.api_key.count(".") != 2:
            return {"Authorization": f"Token {self.api_key}"}
        response = client.post(urljoin(self.url.rstrip("/") + "/", "api/token/refresh/"),
                               json={"refresh": self.api_key})
        if response.status_code != 200:
            raise UserError(f"Label Studio refused the API key ({response.status_code})")
        return {"Authorization": f"Bearer {response.json().get('access', '')}"}


def fetch_image(link: LabelStudioLink, url: str, *, transport: httpx.BaseTransport | None = None) -> bytes:
    """The bytes of a task's image: an absolute URL, or one relative to Label Studio's (the API
    key goes only to Label Studio's own URLs). ``transport``: for tests."""
    if not url.startswith(("http://", "https://")):
        if not link.url:
            raise UserError(f"image {url!r} is on Label Studio: give its URL (--label-studio-url)")
        url = urljoin(link.url.rstrip("/") + "/", url.lstrip("/"))
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT_S, follow_redirects=True, transport=transport) as client:
            headers = link.headers(client) if link.url and url.startswith(link.url.rstrip("/")) else {}
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    raise UserError(f"fetching {url} answered {response.status_code}")
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_IMAGE_BYTES:
                        raise UserError(f"{url} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    except httpx.HTTPError as exc:
        raise UserError(f"cannot fetch {url} ({type(exc).__name__})") from exc
    return bytes(data)


def project_name_for(ls_project: Any, given: str | None) -> str:
    """Our project for a Label Studio project: ``given``, else ``label-studio-<id>``."""
    if given:
        return given
    ls_id = str(ls_project.get("id") if isinstance(ls_project, dict) else ls_project or "")
    ls_id = ls_id.split(".")[0]  # the ML API sends "<id>.<created timestamp>"
    if not re.fullmatch(r"\d+", ls_id):
        raise UserError("the request names no Label Studio project")
    return f"label-studio-{ls_id}"


def ensure_project(studio: Studio, project: str, config: LabelConfig) -> list[str]:
    """Our project's class names after making it match ``config``: created with the config's
    classes, or with the classes the config adds appended."""
    with studio.Session.begin() as session:
        row = project_repo.get_project_by_name(session, project)
        existing = [c.name for c in project_repo.list_classes(session, row.id)] if row else None
    if existing is None:
        colors = [config.colors.get(c) for c in config.classes]
        created = labeling.create_project(studio, project, config.classes, True, colors)
        return [c.name for c in created.classes]
    new = [c for c in config.classes if c not in existing]
    if new:
        names = existing + new
        return [c.name for c in labeling.set_classes(studio, project, names).classes]
    return existing


def _state_path(studio: Studio, project: str) -> Path:
    return studio.data_dir / STATE_DIR / (re.sub(r"[^A-Za-z0-9._-]+", "_", project) + ".json")


def _update_state(studio: Studio, project: str, change: Any) -> Any:
    """Read, change and write the annotation -> image map of a project, under one lock."""
    path = _state_path(studio, project)
    with _state_lock:
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        result = change(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(path)
    return result


def _store_image(studio: Studio, project: str, name: str, data: bytes) -> str:
    """Store an image fetched from Label Studio in ``project`` (once by content); its sha256."""
    sha = sha256_bytes(data)
    with studio.Session.begin() as session:
        if image_repo.find_image_by_sha(session, resolve_project(session, project).id, sha) is not None:
            return sha
    with tempfile.TemporaryDirectory(dir=studio.data_dir) as tmp:
        (Path(tmp) / name).write_bytes(data)
        import_dataset(studio, tmp, project=project)
    return sha


@dataclass(frozen=True)
class SyncResult:
    image_id: int
    tags: int
    has_mask: bool


def sync_annotation(studio: Studio, project: str, config: LabelConfig, task: dict[str, Any],
                    annotation: dict[str, Any], link: LabelStudioLink) -> SyncResult:
    """Make ``annotation`` the labels of its task's image in ``project`` (see the module docstring)."""
    classes = ensure_project(studio, project, config)
    sha = _task_image(studio, project, config, task, link)
    with studio.Session.begin() as session:
        image = image_repo.find_image_by_sha(session, resolve_project(session, project).id, sha)
        if image is None:
            raise UserError(f"task {task.get('id')}: its image is not in project {project!r}")
        try:
            labels = read_results(annotation.get("result") or [], config,
                                  {n: i for i, n in enumerate(classes)}, image.width, image.height,
                                  where=f"task {task.get('id')}")
        except LabelStudioError as exc:
            raise UserError(str(exc)) from exc
        class_ids = {c.index: c.id for c in project_repo.list_classes(session, image.project_id)}
        labeling.set_tags(session, image, [class_ids[i] for i in labels.tags])
        if labels.label_map is not None and (labels.label_map != IGNORE_INDEX).any():
            label_repo.put_mask(session, image.id, labels.label_map)
        else:
            label_repo.delete_mask(session, image.id)
        result = SyncResult(image.id, len(labels.tags), labels.label_map is not None)
    _update_state(studio, project, lambda s: s.__setitem__(str(annotation.get("id")), sha))
    logger.info("annotation %s of task %s -> image %d of %r (%d tags, mask: %s)", annotation.get("id"),
                task.get("id"), result.image_id, project, result.tags, result.has_mask)
    return result


def delete_annotations(studio: Studio, project: str, annotation_ids: list[Any]) -> int:
    """Remove the labels that the given annotations put on images (when each was the last to
    label its image); returns how many images lost their labels."""

    def take(state: dict[str, str]) -> list[str]:
        shas = [state.pop(str(a), None) for a in annotation_ids]
        still = set(state.values())
        return [s for s in shas if s and s not in still]

    cleared = 0
    for sha in _update_state(studio, project, take):
        with studio.Session.begin() as session:
            row = project_repo.get_project_by_name(session, project)
            image = image_repo.find_image_by_sha(session, row.id, sha) if row else None
            if image is None:
                continue
            labeling.set_tags(session, image, [])
            label_repo.delete_mask(session, image.id)
            cleared += 1
    return cleared


# --- predictions --------------------------------------------------------------------------------

_inference_lock = threading.Lock()  # one inference at a time: a CPU has no room for two
PREDICT_BUDGET_S = 80.0  # Label Studio waits 100 s (ML_TIMEOUT_PREDICT) for /predict


def model_version(studio: Studio, project: str) -> str:
    """The name Label Studio shows for our project's current model."""
    with studio.Session.begin() as session:
        row = project_repo.get_project_by_name(session, project)
        run_id = label_repo.current_run_id(session, row.id) if row else None
        run = session.get(TrainingRun, run_id) if run_id else None
        return f"slrnet-v{run.version}" if run is not None else "slrnet-untrained"


def _task_image(studio: Studio, project: str, config: LabelConfig, task: dict[str, Any],
                link: LabelStudioLink) -> str:
    """The sha256 of the task's image in ``project``, fetched and stored first when missing."""
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    url = data.get(config.data_key)
    if not isinstance(url, str) or not url:
        raise UserError(f"task {task.get('id')}: no image URL in data.{config.data_key}")
    sha = data.get(SHA_KEY) if isinstance(data.get(SHA_KEY), str) else None
    if sha:
        with studio.Session.begin() as session:
            if image_repo.find_image_by_sha(session, resolve_project(session, project).id, sha):
                return sha
    image_bytes = fetch_image(link, url)
    name = image_name(url) or f"task-{task.get('id')}.jpg"
    try:
        return _store_image(studio, project, name, image_bytes)
    except UserError as exc:
        if "already named so" not in str(exc):
            raise
        return _store_image(studio, project, f"task-{task.get('id')}-{name}", image_bytes)


def predict_tasks(studio: Studio, project: str, config: LabelConfig, tasks: list[dict[str, Any]],
                  link: LabelStudioLink, *, device: str = "cpu", budget_s: float = PREDICT_BUDGET_S
                  ) -> list[dict[str, Any]]:
    """One prediction per task with the current model (none at all without one): a brushlabels
    region per class (score: the mean confidence of its pixels) and the predicted tags as choices,
    as the config has them; the task's ``score`` is the model's uncertainty (1 - the mean
    confidence over the image), so sorting by it puts the images the model is least sure of first.
    Images new to ``project`` are stored and predicted first (one inference at a time), for at most
    ``budget_s`` (Label Studio gives up after 100 s): past that a UserError says how far it got,
    and the next request goes on from there."""
    deadline = time.monotonic() + budget_s

    def late() -> bool:
        return time.monotonic() > deadline

    classes = ensure_project(studio, project, config)
    shas = []
    for t in tasks:
        if late():
            raise UserError(f"stored {len(shas)} of {len(tasks)} task images in {budget_s:.0f} s; "
                            "ask again for the rest")
        shas.append(_task_image(studio, project, config, t, link))
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        run_id = label_repo.current_run_id(session, row.id)
        ids = [image_repo.find_image_by_sha(session, row.id, sha).id for sha in shas]
        missing = run_id is not None and any(
            label_repo.get_pseudo_label(session, i, run_id) is None for i in ids)
    if run_id is None:
        return []
    if missing:
        with _inference_lock:
            from services.publishing import predict  # torch: only here

            try:  # images without this run's labels
                predict(studio, project, run_id=run_id, device=device, should_stop=late)
            except Cancelled as exc:
                raise UserError(f"predicting new images took over {budget_s:.0f} s ({exc}); "
                                "ask again for the rest") from exc
    version = model_version(studio, project)
    brush, choices = config.control("brushlabels"), config.control("choices")
    out = []
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        index_of = {c.id: c.index for c in project_repo.list_classes(session, row.id)}
        for sha in shas:
            image = image_repo.find_image_by_sha(session, row.id, sha)
            pseudo = label_repo.get_pseudo_label(session, image.id, run_id) if image else None
            if pseudo is None:
                out.append({"result": [], "score": None, "model_version": version})
                continue
            labels, confidence = decode_label_png(pseudo.png), decode_label_png(pseudo.confidence_png)
            result = []
            if brush:
                result += mask_results(labels, classes, from_name=brush, to_name=config.image,
                                       confidence=confidence)
            if choices:
                tags = [index_of[c] for c in label_repo.get_tag_class_ids(session, image.id, "model")]
                result += tag_results([t for t in tags if classes[t] in config.classes], classes,
                                      from_name=choices, to_name=config.image)
            uncertainty = 1.0 - float(confidence.mean(dtype=np.float64)) / 255.0
            out.append({"result": result, "score": round(uncertainty, 4), "model_version": version})
    return out
