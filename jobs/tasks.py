"""The huey tasks, one per job kind of :data:`jobs.kinds.KINDS`, on that kind's queue.

Each message carries only a job id; the job row holds everything else. Training and prediction
go on the ``compute`` queue (any worker), imports and exports on the ``local`` queue (the app's
own consumer); see :mod:`jobs.queue`. A task looks its service up in the table when it runs (so
tests can swap services) and runs it against the studio the queues are bound to.
"""

from __future__ import annotations

from typing import Any

from jobs import kinds, queue, runner


def _register(name: str) -> Any:
    def run(job_id: int) -> None:
        runner.run_job(queue.bound_studio(), job_id, kinds.KINDS[name].service)

    run.__name__ = run.__qualname__ = f"run_{name}"
    return queue.QUEUES[kinds.KINDS[name].queue].task(name=name)(run)


TASKS = {name: _register(name) for name in kinds.KINDS}


def enqueue(kind: str, job_id: int) -> None:
    """Put job ``job_id`` of ``kind`` on its queue (in immediate mode: run it now)."""
    TASKS[kind](job_id)
