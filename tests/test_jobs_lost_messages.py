"""A job whose queue message is lost (Redis restarted without persistence, a queue file deleted)
stayed 'queued' for ever and blocked its project's trainings: the sweep queues it again, on the
SQLite queue and on a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import queue, recovery
from jobs.submit import submit_train_on_my_labels
from jobs.views import get_job
from services.context import Studio
from services.train_options import TrainOptions
from tests import servers
from tests.jobs_support import make_project

redis_url = servers.redis_url  # the fixture
QUEUES = ["sqlite", pytest.param("redis", marks=pytest.mark.multimachine)]


@pytest.fixture(params=QUEUES)
def queued_studio(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    monkeypatch.delenv(queue.QUEUE_URL_ENV, raising=False)
    if request.param == "redis":
        monkeypatch.setenv(queue.QUEUE_URL_ENV, request.getfixturevalue("redis_url"))
    studio = Studio.open(tmp_path / "data")
    make_project(studio, "p")
    queue.bind(studio)
    queue.compute.flush()
    yield studio
    queue.compute.flush()
    queue.unbind()
    studio.close()


def test_a_queued_job_whose_message_was_lost_is_queued_again(queued_studio: Studio) -> None:
    job = submit_train_on_my_labels(queued_studio, "p", TrainOptions(epochs=1))
    assert recovery.pending_job_ids()["compute"] == {job.id}
    assert recovery.requeue_lost(queued_studio, lost_after_s=0) == []  # its message is there
    assert queue.compute.pending_count() == 1

    queue.compute.flush()  # what a queue server restarted without persistence leaves
    assert queue.compute.pending_count() == 0
    assert recovery.requeue_lost(queued_studio, lost_after_s=3600) == []  # not waiting long enough
    assert recovery.requeue_lost(queued_studio, lost_after_s=0) == [job.id]
    assert recovery.pending_job_ids()["compute"] == {job.id}
    view = get_job(queued_studio, job.id)
    assert view.status == "queued" and "queued again" in view.message
    # the message a worker now takes is this job's
    task = queue.compute.dequeue()
    assert task is not None and task.args == (job.id,)
