"""Helpers of the job tests: a small project in the database, and torch-free stand-ins for
``services.training`` and ``services.publishing`` that keep their contract (runs, per-epoch
checkpoints, resume, publish on predict).
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.context import Studio
from services.errors import UserError
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from services.train_options import TrainOptions
from storage import runs as run_repo
from storage.images import add_image, all_images
from storage.labels import add_tags, put_pseudo_label
from storage.models import Job
from storage.projects import create_project, list_classes, set_classes

H, W = 4, 6


def make_project(studio: Studio, name: str = "p", images: int = 3, tagged: int = 2) -> int:
    """A project with classes background/cat/dog and ``images`` image rows (no files), the first
    ``tagged`` of them tagged "cat"; returns its id."""
    with studio.Session.begin() as session:
        project = create_project(session, name)
        classes = set_classes(session, project, ["background", "cat", "dog"])
        for i in range(images):
            sha = hashlib.sha256(f"{name}/{i}".encode()).hexdigest()
            image = add_image(session, project.id, name=f"{name}-{i}.png", sha256=sha,
                              path=f"images/{name}-{i}.png", width=W, height=H)
            if i < tagged:
                add_tags(session, image.id, [classes[1].id])
        return project.id


class SimulatedCrash(BaseException):
    """Stands for the process dying: nothing below the service gets to clean up."""


@dataclass
class FakeTraining:
    """Behaviour of the stand-in: epochs of ``steps`` steps taking ``step_s`` each; optional
    failure, crash points, and a gate that holds the first training step until it is set."""

    steps: int = 2
    step_s: float = 0.0
    default_epochs: int = 3
    fail: BaseException | None = None
    crash_after_epoch: int | None = None
    crash_in_predict_after: int | None = None
    gate: threading.Event | None = None
    last_image_gate: threading.Event | None = None  # holds the last pseudo-label until set
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seen: list[tuple[str, float, str]] = field(default_factory=list)  # (phase, progress, message) of the row

    def modules(self) -> dict[str, types.ModuleType]:
        """Stand-ins for ``services.training`` (train) and ``services.publishing`` (predict), to
        put in ``sys.modules``."""
        training = types.ModuleType("services.training")
        training.train = self.train  # type: ignore[attr-defined]
        publishing = types.ModuleType("services.publishing")
        publishing.predict = self.predict  # type: ignore[attr-defined]
        return {"services.training": training, "services.publishing": publishing}

    def install(self, monkeypatch: Any) -> None:
        """Put the stand-ins in ``sys.modules`` for the test (``monkeypatch``: pytest's)."""
        for name, module in self.modules().items():
            monkeypatch.setitem(sys.modules, name, module)

    def _observe(self, studio: Studio, job_id: int | None) -> None:
        if job_id is None:
            return
        with studio.Session() as session:
            job = session.get(Job, job_id)
            self.seen.append((job.metrics.get("phase", ""), job.progress, job.message))

    def train(self, studio: Studio, project: int | str = "default", options: TrainOptions | None = None, *,
              resume: bool = True, job_id: int | None = None, progress: ProgressFn = no_progress,
              should_stop: StopFn = never_stop) -> Any:
        options = options or TrainOptions()
        self.calls.append(("train", {"project": project, "mode": options.mode, "epochs": options.epochs,
                                     "resume": resume, "job_id": job_id}))
        if self.fail is not None:
            raise self.fail
        epochs = options.epochs or self.default_epochs
        with studio.Session.begin() as session:
            proj = resolve_project(session, project)
            run = run_repo.latest_resumable_run(session, proj.id) if resume else None
            if run is not None:
                run.status, run.job_id = "running", job_id or run.job_id
            else:
                run = run_repo.create_run(session, proj.id, mode="wsss", backbone="fake", config={},
                                          job_id=job_id)
                run_repo.set_checkpoint_path(session, run, f"checkpoints/run-{run.id}.pt")
            run_id, start = run.id, run.epoch
        progress(0.0, "2 image(s) with tags and no masks: weakly supervised from tags",
                 {"mode": "wsss", "run_id": run_id})
        total = epochs * self.steps
        for epoch in range(start, epochs):
            for step in range(self.steps):
                if self.gate is not None:
                    self.gate.wait(30)
                if should_stop():
                    with studio.Session.begin() as session:
                        run_repo.mark_ended(session, run_repo.get_run(session, run_id), "cancelled")
                    raise Cancelled(f"training cancelled after {epoch} completed epoch(s)")
                time.sleep(self.step_s)
                done = epoch * self.steps + step + 1
                loss = 1.0 / done
                message = f"epoch {epoch + 1}/{epochs}, step {step + 1}/{self.steps}, loss {loss:.3f}"
                losses = {"total": loss, "cls": loss / 2, "bad": float("nan")}
                progress(done / total, message, {"epoch": epoch + 1, "step": step + 1, "steps": self.steps,
                                                  "losses": losses})
                self._observe(studio, job_id)
            with studio.Session.begin() as session:  # the checkpoint of this epoch
                run_repo.record_epoch(session, run_repo.get_run(session, run_id), epoch + 1, {})
            if self.crash_after_epoch is not None and epoch + 1 == self.crash_after_epoch:
                raise SimulatedCrash(f"killed after epoch {epoch + 1}")
        with studio.Session.begin() as session:
            version = run_repo.mark_trained(session, run_repo.get_run(session, run_id))
        progress(1.0, f"trained model version {version}", {"run_id": run_id, "version": version})
        return types.SimpleNamespace(run_id=run_id, version=version, mode="wsss", reason="tags only",
                                     epochs=epochs, resumed_from_epoch=start)

    def predict(self, studio: Studio, project: int | str = "default", *, run_id: int | None = None,
                device: str = "auto", config: Any = None, job_id: int | None = None,
                progress: ProgressFn = no_progress, should_stop: StopFn = never_stop) -> Any:
        self.calls.append(("predict", {"project": project, "run_id": run_id, "job_id": job_id}))
        with studio.Session.begin() as session:
            proj = resolve_project(session, project)
            run = (run_repo.get_run(session, run_id) if run_id
                   else run_repo.latest_trained_run(session, proj.id))
            if run is None or run.status not in ("trained", "published"):
                raise UserError(f"project {project!r} has no trained model to predict with; run train first")
            run_id, version = run.id, run.version
            ids = [i.id for i in all_images(session, proj.id)]
            n_classes = len(list_classes(session, proj.id))
        for done, image_id in enumerate(ids):
            if should_stop():
                raise Cancelled("predict cancelled; model not published")
            if self.crash_in_predict_after is not None and done == self.crash_in_predict_after:
                raise SimulatedCrash(f"killed after {done} pseudo-labels")
            if self.last_image_gate is not None and done == len(ids) - 1:
                self.last_image_gate.wait(30)
            time.sleep(self.step_s)
            with studio.Session.begin() as session:
                labels = np.full((H, W), image_id % n_classes, np.uint8)
                put_pseudo_label(session, image_id, run_id, labels, np.full((H, W), 0.75, np.float32))
            progress((done + 1) / len(ids), f"pseudo-labels {done + 1}/{len(ids)}", {"images": done + 1})
            self._observe(studio, job_id)
        with studio.Session.begin() as session:
            run_repo.mark_published(session, run_repo.get_run(session, run_id))
        return types.SimpleNamespace(run_id=run_id, version=version, images=len(ids), mean_score=0.75)


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def worker_main(data_dir: str, step_s: float, epochs: int) -> None:
    """Entry point of a worker subprocess: ``launch.py worker`` with the stand-in training."""
    from jobs import consumers, runner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    fake = FakeTraining(step_s=step_s, default_epochs=epochs)
    sys.modules.update(fake.modules())
    runner.SETTINGS = runner.RunnerSettings(heartbeat_s=0.2, write_interval_s=0.05)
    studio = Studio.open(Path(data_dir))
    try:
        consumers.run_worker(studio)
    finally:
        studio.close()
