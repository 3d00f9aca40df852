"""The huey tasks. Each message carries only a job id; the job row holds everything else.

Training and prediction go on the ``compute`` queue (any worker), imports and exports on the
``local`` queue (the app's own consumer); see :mod:`jobs.queue`. Tasks look their service up in
:data:`jobs.kinds.JOB_SERVICES` when they run, and run it against the studio the queues are
bound to.
"""

from __future__ import annotations

from huey import crontab

from jobs import kinds as job_services
from jobs import queue, recovery, runner


def _run(kind: str, job_id: int) -> None:
    runner.run_job(queue.bound_studio(), job_id, job_services.JOB_SERVICES[kind])


@queue.compute.task(name="train")
def train(job_id: int) -> None:
    """Train (and, for "Train on my labels", predict) a project."""
    _run("train", job_id)


@queue.compute.task(name="predict")
def predict(job_id: int) -> None:
    """Write pseudo-labels of every image with a trained model, then publish it."""
    _run("predict", job_id)


@queue.local.task(name="import")
def import_(job_id: int) -> None:
    """Import images (and labels) into a project."""
    _run("import", job_id)


@queue.local.task(name="export")
def export(job_id: int) -> None:
    """Export a project's labels."""
    _run("export", job_id)


@queue.compute.periodic_task(crontab(minute="*"), name="recover-orphaned-jobs")
def recover_orphaned_jobs() -> None:
    """Mark jobs of dead workers interrupted, every minute."""
    recovery.recover_jobs(queue.bound_studio())


TASKS = {"train": train, "predict": predict, "import": import_, "export": export}


def enqueue(kind: str, job_id: int) -> None:
    """Put job ``job_id`` of ``kind`` on its queue (in immediate mode: run it now)."""
    TASKS[kind](job_id)
