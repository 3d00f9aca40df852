"""The several-machines path of the README on real servers: PostgreSQL (app database, and queue) and
Redis (queue) started on loopback ports in a temporary folder, then ``launch.py serve --no-worker``
and two ``launch.py worker`` processes started together (huey's table creation used to race on
PostgreSQL). Import through serve, train on one worker, kill -9 it mid-training, the sweep marks the
job interrupted, resume it on the other worker, export through serve.

The servers come from the Debian packages (``make test`` installs them); the tests skip, saying why,
only when they are missing or do not start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from services.exporting import ExportOptions
from services.import_options import ImportOptions
from services.train_options import TrainOptions
from tests import servers
from tests.conftest import REPO_ROOT
from tests.jobs_support import wait_for
from tests.servers import Postgres, free_port

pytestmark = pytest.mark.multimachine
postgres, redis_url = servers.postgres, servers.redis_url  # the fixtures

TRAIN = {"backbone": "tiny", "epochs": 6, "image_size": 32, "device": "cpu"}
SWEEP_S = 0.5  # the sweep interval of every process here


def _write_images(root: Path, n: int = 6) -> dict[str, Path]:
    """Tiny photos with a red or blue top half, tagged red / blue."""
    images = root / "images"
    images.mkdir(parents=True)
    rows = ["image,tags"]
    for i in range(n):
        pixels = np.random.default_rng(i).integers(110, 146, (40, 48, 3), dtype=np.uint8)
        pixels[:20] = (220, 30, 30) if i % 2 == 0 else (30, 30, 220)
        Image.fromarray(pixels).save(images / f"im{i}.png")
        rows.append(f"im{i}.png,{'red' if i % 2 == 0 else 'blue'}")
    (root / "classes.txt").write_text("red\nblue\n")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return {"images": images, "classes": root / "classes.txt", "tags": root / "tags.csv"}


class Process:
    """A ``launch.py`` subprocess with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "launch.py", *args], cwd=REPO_ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.name = f"{socket.gethostname()}:{self.proc.pid}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)
        finally:
            self._log.close()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()


def test_queue_tables_are_created_once_when_many_processes_start_together(
    postgres: Postgres, tmp_path: Path
) -> None:
    # huey's own PostgresStorage: CREATE TABLE IF NOT EXISTS from several connections at once
    # failed with UniqueViolation (pg_type of huey_kv) in all but one.
    from jobs import queue

    url = postgres.createdb("queue_race")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            queue.make_storage("slrnet-compute", tmp_path, url).close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


@pytest.mark.parametrize("queue_on", ["redis", "postgres"])
def test_serve_and_two_workers_import_train_kill_resume_export(
    queue_on: str, postgres: Postgres, request: pytest.FixtureRequest, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobs import queue
    from jobs.submit import resume_job, submit_export, submit_import, submit_train_on_my_labels
    from jobs.views import get_job
    from services.context import Studio
    from storage.models import TrainingRun

    database_url = postgres.createdb(f"studio_{queue_on}")
    queue_url = request.getfixturevalue("redis_url") if queue_on == "redis" else database_url
    env = {**os.environ, "SLRNET_DATABASE_URL": database_url, "SLRNET_QUEUE_URL": queue_url,
           "SLRNET_SWEEP_INTERVAL_S": str(SWEEP_S), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("SLRNET_DATABASE_URL", "SLRNET_QUEUE_URL", "SLRNET_SWEEP_INTERVAL_S"):
        monkeypatch.setenv(key, env[key])
    data = tmp_path / "data"
    data_args = ["--data", str(data)]

    # All three start together: on PostgreSQL huey's CREATE TABLE used to crash one of them.
    serve_args = ["serve", *data_args, "--no-worker", "--port", str(free_port())]
    serve = Process(serve_args, env, tmp_path / "serve.log")
    workers = [Process(["worker", *data_args], env, tmp_path / f"worker{i}.log") for i in range(2)]
    processes = [serve, *workers]
    killed: list[Process] = []
    studio = Studio.open(data)
    try:
        files = _write_images(tmp_path / "src")
        imported = submit_import(studio, files["images"], "p", ImportOptions(
            classes_file=files["classes"], tags_csv=files["tags"]))

        def ended(job_id: int, timeout: float = 120) -> object:
            def check() -> object:
                for p in processes:
                    assert p.proc.poll() is None or p in killed, f"{p.name} exited:\n{p.log()}"
                view = get_job(studio, job_id)
                return not view.active and view

            return wait_for(check, timeout, 0.1)

        done = ended(imported.id)
        assert done.status == "succeeded", done.error
        assert done.result["images_added"] == 6 and done.worker == serve.name  # the local queue: serve

        job = submit_train_on_my_labels(studio, "p", TrainOptions(**TRAIN))

        def first_epoch_done() -> object:
            with studio.Session() as session:
                run = session.scalars(select(TrainingRun).where(TrainingRun.job_id == job.id)).one_or_none()
                view = get_job(studio, job.id)
                assert view.status in ("queued", "running"), view.error
                return run is not None and run.epoch >= 1 and run.status == "running" and view

        running = wait_for(first_epoch_done, 180, 0.05)
        victim = next(w for w in workers if w.name == running.worker)
        survivor = next(w for w in workers if w is not victim)
        victim.kill9()
        killed.append(victim)
        killed_at = time.monotonic()
        interrupted = wait_for(lambda: (v := get_job(studio, job.id)).status == "interrupted" and v, 30, 0.05)
        recovery_s = time.monotonic() - killed_at
        print(f"\n[{queue_on}] killed worker's job marked interrupted {recovery_s:.2f} s after kill -9 "
              f"(sweep interval {SWEEP_S} s): {interrupted.message}")
        assert "is gone" in interrupted.message

        resume_job(studio, job.id)
        done = ended(job.id, 240)
        assert done.status == "succeeded", done.error
        assert done.worker == survivor.name
        assert done.result["resumed_from_epoch"] >= 1 and done.result["images"] == 6
        with studio.Session() as session:
            runs = session.scalars(select(TrainingRun)).all()
            assert [(r.status, r.epoch) for r in runs] == [("published", TRAIN["epochs"])]

        out = tmp_path / "export.json"
        exported = submit_export(studio, "p", out, ExportOptions(source="model"))
        done = ended(exported.id)
        assert done.status == "succeeded", done.error
        coco = json.loads(out.read_text())
        assert len(coco["images"]) == 6  # the model's labels (what they hold depends on 6 tiny epochs)
        assert {"red", "blue"} <= {c["name"] for c in coco["categories"]}
    finally:
        queue.unbind()
        studio.close()
        codes = {p.name: p.stop() for p in processes if p not in killed}
        logs = "\n".join(f"--- {p.name}\n{p.log()}" for p in processes)
    assert all(code == 0 for code in codes.values()), (codes, logs)
