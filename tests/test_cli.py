"""launch.py as a CLI: choices come from the layers that define them, errors are one line with exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

import launch
from services import training_lock
from services.context import Studio
from services.errors import UserError
from services.exporting import SOURCES
from services.formats.exporters import FORMATS
from slrnet.config import DEVICES, MODES
from storage import runs as run_repo
from storage.models import TrainingRun, utcnow
from tests.test_train_service import write_dataset


def test_choices_are_the_lists_the_layers_define() -> None:
    parser = launch.build_parser()
    for mode in ("auto", *MODES):
        assert parser.parse_args(["train", "--mode", mode]).mode == mode
    for device in DEVICES:
        assert parser.parse_args(["predict", "--device", device]).device == device
    for fmt in FORMATS:
        for source in SOURCES:
            args = parser.parse_args(["export", "out", "--format", fmt, "--source", source])
            assert (args.format, args.source) == (fmt, source)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--mode", "fully_supervised"])


def test_studio_open_is_a_context_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[Studio] = []
    monkeypatch.setattr(Studio, "close", lambda self: closed.append(self))
    with pytest.raises(RuntimeError), Studio.open(tmp_path / "data") as studio:
        assert closed == []
        raise RuntimeError("the command failed")
    assert closed == [studio]


# --- one training per project, across processes (issue 11 item 4) --------------------------------

TRAIN = ["--backbone", "tiny", "--epochs", "1", "--image-size", "32", "--device", "cpu"]


@pytest.fixture()
def tagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """A tags-only project "p" imported with the CLI; returns the ``--data/--project`` arguments."""
    files = write_dataset(tmp_path / "src", masks=0)
    data = ["--data", str(tmp_path / "data"), "--project", "p"]
    assert launch.main(["import", str(files["images"]), *data, "--classes", str(files["classes"]),
                        "--tags", str(files["tags"])]) == 0
    capsys.readouterr()
    return data


def _studio(data: list[str]) -> Studio:
    return Studio.open(data[1])


def _runs(data: list[str]) -> list[tuple[int, str, str | None]]:
    with _studio(data) as studio, studio.Session() as session:
        runs = session.scalars(select(TrainingRun).order_by(TrainingRun.id))
        return [(r.id, r.status, r.owner) for r in runs]


def _add_running_run(data: list[str], owner: str, *, beat_s_ago: float = 0.0) -> int:
    with _studio(data) as studio, studio.Session.begin() as session:
        run = run_repo.create_run(session, 1, mode="wsss", backbone="tiny", config={}, owner=owner)
        run.heartbeat_at = utcnow() - timedelta(seconds=beat_s_ago)
        run_repo.set_checkpoint_path(session, run, f"checkpoints/run-{run.id}.pt")
        return run.id


def _exited_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_second_train_of_a_project_exits_2_naming_the_running_training(
    tagged: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Another live process (here: pytest's parent) trains the project. The old code counted a
    # live 'running' run as resumable and trained the same run a second time.
    owner = f"{socket.gethostname()}:{os.getppid()}"
    run_id = _add_running_run(tagged, owner)
    assert launch.main(["train", *tagged, *TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: project 'p' is already training: run {run_id} (epoch 0 done) on {owner}; "
                   "wait for it to finish or cancel it")
    assert _runs(tagged) == [(run_id, "running", owner)]


@pytest.mark.parametrize("owner", ["dead local", "silent remote"])
def test_a_training_whose_owner_is_gone_is_taken_over(tagged: list[str], owner: str) -> None:
    if owner == "dead local":
        stale = _add_running_run(tagged, f"{socket.gethostname()}:{_exited_pid()}")
    else:
        stale = _add_running_run(tagged, "gpu-9:4242", beat_s_ago=training_lock.STALE_AFTER_S + 5)
    assert launch.main(["train", *tagged, *TRAIN]) == 0
    (old_id, old_status, _), (_, new_status, new_owner) = _runs(tagged)
    assert (old_id, old_status) == (stale, "interrupted")
    assert new_status == "trained" and new_owner == f"{socket.gethostname()}:{os.getpid()}"


def test_two_trainings_of_a_project_at_once_one_refused(
    tagged: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first training holds the lock while it is inside fit; the second (same process, as two
    # jobs of the embedded consumer would be) is refused, and the first then finishes.
    from services import training

    inside, release = threading.Event(), threading.Event()
    real_fit = training.fit

    def slow_fit(**kwargs: object) -> object:
        inside.set()
        release.wait(60)
        return real_fit(**kwargs)

    monkeypatch.setattr(training, "fit", slow_fit)
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(launch.main(["train", *tagged, *TRAIN])))
    first.start()
    try:
        assert inside.wait(60)
        assert launch.main(["train", *tagged, *TRAIN, "--seed", "1"]) == 2
        assert "is already training: run 1" in capsys.readouterr().err
    finally:
        release.set()
        first.join(120)
    assert codes == [0] and [status for _, status, _ in _runs(tagged)] == ["trained"]


def test_the_database_allows_one_running_run_per_project(tagged: list[str]) -> None:
    _add_running_run(tagged, "a:1")
    with pytest.raises(IntegrityError):
        _add_running_run(tagged, "b:2")


def test_a_job_is_not_queued_while_the_cli_trains_the_project(tagged: list[str]) -> None:
    from jobs import queue
    from jobs.submit import submit_train_on_my_labels

    run_id = _add_running_run(tagged, f"{socket.gethostname()}:{os.getppid()}")
    with _studio(tagged) as studio:
        try:
            with pytest.raises(UserError, match=f"is already training: run {run_id}"):
                submit_train_on_my_labels(studio, "p")
            assert queue.compute.pending_count() == 0
        finally:
            queue.unbind()


# --- environment failures (issue 11 item 8): one line, exit 2, the run never left running --------


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_full_disk_while_training_is_one_line_and_the_run_failed(
    tagged: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from slrnet import train as slrnet_train

    def full(path: Path, state: dict) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(slrnet_train, "save_checkpoint", full)
    assert launch.main(["train", *tagged, *TRAIN]) == 2
    assert "error: the disk is full" in _one_line_error(capsys)
    [(_, status, _)] = _runs(tagged)
    assert status == "failed"


def test_an_image_deleted_behind_the_database_is_one_line(
    tagged: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with _studio(tagged) as studio, studio.Session() as session:
        from storage.models import Image as ImageRow

        gone = studio.images.abspath(session.scalars(select(ImageRow.path).limit(1)).one())
    gone.unlink()
    assert launch.main(["train", *tagged, *TRAIN]) == 2
    assert str(gone) in _one_line_error(capsys)
    assert [status for _, status, _ in _runs(tagged)] == ["failed"]


def test_an_unwritable_export_destination_is_one_line(
    tagged: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc refuses new files even to root, which chmod would not stop.
    assert launch.main(["export", "/proc/slrnet-studio-export.json", *tagged, "--source", "human"]) == 2
    _one_line_error(capsys)


def test_a_truncated_checkpoint_restarts_the_run_with_a_message(
    tagged: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert launch.main(["train", *tagged, *TRAIN]) == 0
    with _studio(tagged) as studio, studio.Session.begin() as session:
        run = session.get(TrainingRun, 1)
        run.status, run.version = "interrupted", None  # as if killed after its last epoch
        checkpoint = studio.data_dir / str(run.checkpoint_path)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="services.training"):
        assert launch.main(["train", *tagged, *TRAIN]) == 0
    assert "the checkpoint to resume from is unusable" in caplog.text
    assert "starting the run afresh" in caplog.text
    [(run_id, status, _)] = _runs(tagged)
    assert (run_id, status) == (1, "trained")
    assert checkpoint.with_name(checkpoint.name + ".unreadable").is_file()


def test_predicting_with_a_truncated_checkpoint_is_one_line(
    tagged: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch.main(["train", *tagged, *TRAIN]) == 0
    with _studio(tagged) as studio, studio.Session() as session:
        checkpoint = studio.data_dir / str(session.get(TrainingRun, 1).checkpoint_path)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    assert launch.main(["predict", *tagged, "--device", "cpu"]) == 2
    assert "cannot be read" in _one_line_error(capsys)
