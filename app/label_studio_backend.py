"""A Label Studio ML backend: Label Studio's own HTTP protocol, answered by our services.

``launch.py label-studio-backend --port 9090`` serves it; in Label Studio, Settings -> Model ->
Connect model, URL ``http://<this host>:9090``. Routes (all JSON):

* ``GET /health`` (and ``/``) — ``{"status": "UP"}``.
* ``POST /setup`` — the project's labelling config arrives (``schema``); our project is made to
  match it; answers ``{"model_version": ...}``.
* ``POST /predict`` — ``{"tasks": [...], "label_config": ..., "project": "<id>.<ts>"}``: one
  prediction per task (brush regions per class with scores, the task's score = the model's
  uncertainty); no predictions before a model is trained.
* ``POST /webhook`` — Label Studio's events: ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` (and
  ``ANNOTATIONS_CREATED``, in bulk) make that annotation the image's labels, ``ANNOTATIONS_DELETED``
  removes them (both in order on one background thread: Label Studio waits only a second for a
  webhook), ``START_TRAINING`` queues
  our training job and answers at once with its id (``train_every``: also after every N synced
  annotations); other events are acknowledged and ignored.
* ``POST /train`` — the older training call with every annotated task: synced, then trained.

With ``auth`` (``user:pass``) every route wants HTTP basic auth (Label Studio's "Basic
Authentication" option of the model connection). Handlers call services (and jobs.submit to queue
training, as the UI does); predictions run one at a time.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from jobs.submit import submit_train_on_my_labels
from services import label_studio as ls
from services.context import Studio
from services.errors import UserError
from services.formats.label_studio import LabelConfig, LabelStudioError, parse_label_config
from services.train_options import TrainOptions

logger = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENTS = ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED")


@dataclass
class BackendSettings:
    """``project``: our project for every Label Studio project (default: ``label-studio-<id>``);
    ``link``: Label Studio's URL and API key (default: what /setup tells); ``auth``: "user:pass"."""

    project: str | None = None
    link: ls.LabelStudioLink = field(default_factory=ls.LabelStudioLink)
    auth: str | None = None
    train_minutes: float | None = None
    device: str = "auto"
    train_every: int | None = None  # also queue training after every N synced annotations


class _Backend:
    """The state behind the routes: settings, what /setup said per Label Studio project, and the
    one thread that applies annotation events in order."""

    def __init__(self, studio: Studio, settings: BackendSettings) -> None:
        self.studio = studio
        self.settings = settings
        self.links: dict[str, ls.LabelStudioLink] = {}
        self.events = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ls-sync")
        self.pending: list[concurrent.futures.Future] = []
        self.synced: dict[str, int] = {}  # annotations synced per project since training was queued

    def sync(self, project: str, config: LabelConfig, task: dict, annotation: dict, link: ls.LabelStudioLink
             ) -> None:
        """Apply one annotation (on the event thread); with ``train_every``, queue training when
        that many annotations have come in."""
        ls.sync_annotation(self.studio, project, config, task, annotation, link)
        every = self.settings.train_every
        if every:
            self.synced[project] = self.synced.get(project, 0) + 1
            if self.synced[project] >= every:
                self.synced[project] = 0
                try:
                    _queue_training(self, project)
                except UserError as exc:  # one is running already, say
                    logger.info("not training %r after %d annotations: %s", project, every, exc)

    def project_for(self, ls_project: Any) -> str:
        return ls.project_name_for(ls_project, self.settings.project)

    def link_for(self, ls_project: Any) -> ls.LabelStudioLink:
        if self.settings.link.url:
            return self.settings.link
        key = str(ls_project.get("id") if isinstance(ls_project, dict) else ls_project or "").split(".")[0]
        return self.links.get(key) or next(iter(self.links.values()), self.settings.link)

    def submit(self, fn: Any, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except (UserError, LabelStudioError) as exc:
                logger.warning("Label Studio event not applied: %s", exc)
            except Exception:
                logger.exception("Label Studio event failed")

        self.pending = [f for f in self.pending if not f.done()]
        self.pending.append(self.events.submit(run))

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued annotation event is applied (tests)."""
        concurrent.futures.wait(list(self.pending), timeout=timeout)


def _config(xml: Any) -> LabelConfig:
    if not isinstance(xml, str) or not xml.strip():
        raise UserError("the request has no labelling config")
    try:
        return parse_label_config(xml)
    except LabelStudioError as exc:
        raise UserError(str(exc)) from exc


def _authorised(request: Request, auth: str | None) -> bool:
    if not auth:
        return True
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), auth.encode())


def create_app(studio: Studio, settings: BackendSettings) -> FastAPI:
    """The backend's ASGI app (see the module docstring)."""
    app = FastAPI(title="SLRNet Studio - Label Studio ML backend", docs_url=None, redoc_url=None,
                  openapi_url=None)
    backend = _Backend(studio, settings)
    app.state.backend = backend

    @app.middleware("http")
    async def basic_auth(request: Request, call_next: Any) -> Any:
        if not _authorised(request, settings.auth):
            return JSONResponse({"error": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="slrnet"'})
        return await call_next(request)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as exc:
            raise UserError("the request body is not JSON") from exc
        if not isinstance(data, dict):
            raise UserError("the request body is not a JSON object")
        return data

    @app.get("/")
    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "SLRNet", "v2": True}

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        data = await body(request)
        config = _config(data.get("schema") or data.get("label_config"))
        project = backend.project_for(data.get("project"))
        if data.get("hostname"):
            key = str(data.get("project", "")).split(".")[0]
            token = str(data.get("access_token") or "")
            backend.links[key] = ls.LabelStudioLink(str(data["hostname"]), token)
        ls.ensure_project(studio, project, config)
        return {"model_version": ls.model_version(studio, project)}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        data = await body(request)
        config = _config(data.get("label_config"))
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise UserError("'tasks' is not a list of tasks")
        project = backend.project_for(data.get("project"))
        link = backend.link_for(data.get("project"))
        results = await _in_thread(ls.predict_tasks, studio, project, config, tasks, link,
                                   device=settings.device)
        return {"results": results, "model_version": ls.model_version(studio, project)}

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        data = await body(request)
        action = data.get("action")
        ls_project = data.get("project") if isinstance(data.get("project"), dict) else {}
        if action in ANNOTATION_EVENTS:
            task, annotation = data.get("task"), data.get("annotation")
            if not isinstance(task, dict) or not isinstance(annotation, dict):
                raise UserError(f"{action} without its task and annotation")
            config = _config(ls_project.get("label_config"))
            project = backend.project_for(ls_project or task.get("project"))
            backend.submit(backend.sync, project, config, task, annotation,
                           backend.link_for(ls_project or task.get("project")))
            return JSONResponse({"status": "queued"}, status_code=201)
        if action == "ANNOTATIONS_CREATED":  # in bulk: lists of annotations and of their tasks
            tasks = {t.get("id"): t for t in data.get("task") or [] if isinstance(t, dict)}
            config = _config(ls_project.get("label_config"))
            project = backend.project_for(ls_project)
            for annotation in data.get("annotation") or []:
                task = tasks.get(annotation.get("task")) if isinstance(annotation, dict) else None
                if task is not None:
                    backend.submit(backend.sync, project, config, task, annotation,
                                   backend.link_for(ls_project))
            return JSONResponse({"status": "queued"}, status_code=201)
        if action in DELETE_EVENTS:
            annotations = data.get("annotations") or [data.get("annotation")]
            ids = [a.get("id") for a in annotations if isinstance(a, dict)]
            backend.submit(ls.delete_annotations, studio, backend.project_for(ls_project), ids)
            return JSONResponse({"status": "queued"}, status_code=201)
        if action == "START_TRAINING":
            queued = await _in_thread(_train, backend, backend.project_for(ls_project))
            return JSONResponse(queued, status_code=201)
        return JSONResponse({"status": "ignored", "action": action})

    @app.post("/train")
    async def train(request: Request) -> JSONResponse:
        data = await body(request)
        config = _config(data.get("label_config"))
        project = backend.project_for(data.get("project"))
        link = backend.link_for(data.get("project"))
        for item in data.get("annotations") or []:
            for annotation in item.get("annotations") or [] if isinstance(item, dict) else []:
                if isinstance(annotation, dict) and not annotation.get("was_cancelled"):
                    backend.submit(backend.sync, project, config, item, annotation, link)
        return JSONResponse(await _in_thread(_train, backend, project), status_code=201)

    return app


def _train(backend: _Backend, project: str) -> dict[str, Any]:
    """Queue a training job (then predictions) for ``project`` after the queued events are in."""
    backend.drain()
    backend.synced[project] = 0
    return _queue_training(backend, project)


def _queue_training(backend: _Backend, project: str) -> dict[str, Any]:
    minutes = backend.settings.train_minutes
    job = submit_train_on_my_labels(backend.studio, project, TrainOptions(
        device=backend.settings.device, budget_s=minutes * 60 if minutes else None))
    logger.info("Label Studio asked to train %r: job %d queued", project, job.id)
    return {"job": str(job.id), "status": "queued"}


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args, **kwargs)
