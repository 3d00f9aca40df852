"""The job queues (huey), bound to a studio's settings.

Two queues, so a quick import or export never waits behind hours of training:

* ``compute`` — training, prediction and the feature store's fill. Consumed by the app's embedded
  consumer (``serve``, unless ``--no-worker``) and by every ``launch.py worker``, e.g. one per GPU
  machine.
* ``local`` — imports and exports. They read uploads and write downloads on the app machine, so
  only the app's embedded consumer runs them.

A message only carries a job id; the job's state lives in the ``jobs`` table.

Where the queues live: ``$SLRNET_QUEUE_URL`` when set — ``redis://...`` (``pip install redis``) or
``postgresql://...`` (``pip install psycopg``; the ``$SLRNET_DATABASE_URL`` database will do) —
else huey's SQLite storage in ``<data dir>/queue.db`` (one machine). :func:`bind` points both
queues at a studio's storage and remembers the studio, which is what the tasks run against.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from huey import Huey
from huey.storage import BaseStorage, BlackHoleStorage, PostgresStorage, RedisStorage, SqliteStorage

from services.errors import UserError

if TYPE_CHECKING:
    from services.context import Studio

logger = logging.getLogger(__name__)

QUEUE_URL_ENV = "SLRNET_QUEUE_URL"
QUEUE_FILE = "queue.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
SCHEMA_LOCK_KEY = 7271002  # pg advisory lock serializing huey's table creation (storage.db uses 7271001)

# Unbound until bind(): a message enqueued before that would be lost, so enqueue_job refuses.
compute = Huey("slrnet-compute", results=False, storage_class=BlackHoleStorage)
local = Huey("slrnet-local", results=False, storage_class=BlackHoleStorage)
QUEUES = {"compute": compute, "local": local}

_lock = threading.Lock()
_studio: Studio | None = None


class LockedPostgresStorage(PostgresStorage):
    """huey's PostgreSQL storage, creating its tables under an advisory lock.

    ``CREATE TABLE IF NOT EXISTS`` is not safe against itself: when ``serve`` and two workers start
    together, all but one can fail with a UniqueViolation (on ``huey_kv``'s type). The lock makes
    the others wait, then find the tables there.
    """

    def initialize_schema(self) -> None:
        with self.db(commit=True, close=True) as cursor:
            cursor.execute("select pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            for statement in self.ddl:
                cursor.execute(statement)


def make_storage(name: str, data_dir: Path, url: str | None) -> BaseStorage:
    """The huey storage for queue ``name``: ``url`` when given, else SQLite in ``data_dir``."""
    if not url:
        return SqliteStorage(name, filename=str(Path(data_dir) / QUEUE_FILE), timeout=SQLITE_BUSY_TIMEOUT_S)
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        _require("redis", "redis", url)
        return RedisStorage(name, url=url)
    if scheme.startswith("postgres"):
        _require("psycopg", "psycopg", url)
        return LockedPostgresStorage(name, dsn=re.sub(r"^[a-z]+(\+\w+)?://", "postgresql://", url))
    raise UserError(f"{QUEUE_URL_ENV}={url!r}: expected a redis://... or postgresql://... URL")


def _require(module: str, package: str, url: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{QUEUE_URL_ENV}={url!r} needs the {package!r} package: pip install {package}")


def bind(studio: Studio) -> None:
    """Point both queues at ``studio``'s queue storage and run tasks against ``studio``.

    Idempotent for the same studio. Queues in immediate mode (tests) keep their in-memory storage.
    """
    global _studio
    with _lock:
        if _studio is studio:
            return
        url = os.environ.get(QUEUE_URL_ENV) or None
        for huey in QUEUES.values():
            if not huey.immediate:
                old = huey.storage
                huey.storage = make_storage(huey.name, studio.data_dir, url)
                old.close()
        _studio = studio
        logger.debug("job queues bound to %s (%s)", studio.data_dir, url or QUEUE_FILE)


def bound_studio() -> Studio:
    """The studio tasks run against (set by :func:`bind`)."""
    if _studio is None:
        raise RuntimeError("the job queues are not bound to a studio; call jobs.queue.bind(studio)")
    return _studio


def unbind() -> None:
    """Forget the studio and close queue storage (tests, and a consumer shutting down)."""
    global _studio
    with _lock:
        for huey in QUEUES.values():
            if not huey.immediate:
                huey.storage.close()
                huey.storage = BlackHoleStorage(huey.name)
        _studio = None


def runs_at_enqueue(queue_name: str) -> bool:
    """Whether queue ``queue_name`` runs a task as it is enqueued (immediate mode: tests)."""
    return bool(QUEUES[queue_name].immediate)


def set_immediate(immediate: bool) -> None:
    """Run tasks synchronously at enqueue (huey's immediate mode), for tests; unbinds the queues."""
    unbind()
    for huey in QUEUES.values():
        huey.immediate = immediate
