"""Imports that run at the same time share content-addressed files: nobody deletes a file a row
(or another running import) relies on, and files left by a killed import are swept later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.content_store import sweep_unreferenced_files
from services.context import Studio
from services.errors import UserError
from services.import_options import ImportOptions
from services.importing import import_dataset
from storage import images as image_repo
from storage.models import Image
from tests.image_bytes import image_bytes, write
from tests.import_data import import_options_and_rest

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path, n: int) -> Path:
    for i in range(n):
        write(root / f"im{i:03d}.jpg", image_bytes(48, 32, seed=500 + i))
    return root


def _missing_files(studio: Studio) -> list[str]:
    with studio.Session.begin() as session:
        paths = image_repo.referenced_paths(session)
    return sorted(p for p in paths if not studio.images.abspath(p).is_file())


def _rows(studio: Studio) -> int:
    with studio.Session.begin() as session:
        return len(image_repo.referenced_paths(session))


def test_a_failing_import_keeps_the_files_a_concurrent_import_relies_on(
    studio: Studio, tmp_path: Path
) -> None:
    """Import 1 stores the files, import 2 finds them there, import 1 then fails and cleans up,
    import 2 commits: its rows must still have their files (the old clean-up deleted them)."""
    folder = _folder(tmp_path / "imgs", 6)
    classes = write(tmp_path / "classes.txt", b"cat\n")
    bad_tags = write(tmp_path / "tags.csv", b"image,tags\nghost.jpg,cat\n")  # fails after the scan
    second_waits, second_may_write = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def second_progress(fraction: float, message: str, metrics: dict) -> None:
        if message.startswith("writing"):
            second_waits.set()
            assert second_may_write.wait(30)

    def second() -> None:
        try:
            import_dataset(studio, folder, project="p2", progress=second_progress)
        except BaseException as exc:
            errors.append(exc)
            second_waits.set()

    thread = threading.Thread(target=second)

    def first_progress(fraction: float, message: str, metrics: dict) -> None:
        if message == "read 6/6 images":  # every file stored: let the second import scan them
            thread.start()
            assert second_waits.wait(30)

    with pytest.raises(UserError, match=r"ghost\.jpg"):
        import_dataset(studio, folder, ImportOptions(
            classes_file=classes, tags_csv=bad_tags), project="p1", progress=first_progress)
    second_may_write.set()
    thread.join(30)
    assert not errors
    assert _rows(studio) == 6
    assert _missing_files(studio) == []


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_imports_of_one_folder_leave_every_file(
    studio: Studio, tmp_path: Path, round_: int
) -> None:
    """Real threads, no choreography: two projects import the same folder at once while a third
    import of it fails; every row's file exists afterwards."""
    folder = _folder(tmp_path / "imgs", 24)
    classes = write(tmp_path / "classes.txt", b"cat\n")
    bad_tags = write(tmp_path / "tags.csv", b"image,tags\nghost.jpg,cat\n")
    outcomes: dict[str, str] = {}

    def run(project: str, **kwargs: object) -> None:
        try:
            options, rest = import_options_and_rest(kwargs)
            import_dataset(studio, folder, options, project=project, **rest)
            outcomes[project] = "ok"
        except Exception as exc:
            outcomes[project] = f"{type(exc).__name__}: {exc}"

    threads = [
        threading.Thread(target=run, args=("p1",)),
        threading.Thread(target=run, args=("p2",)),
        threading.Thread(target=run, args=("bad",), kwargs={"classes_file": classes, "tags_csv": bad_tags}),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert outcomes["p1"] == outcomes["p2"] == "ok"
    assert "ghost.jpg" in outcomes["bad"]
    with studio.Session.begin() as session:
        assert session.query(Image).count() == 48
    assert _missing_files(studio) == []
    assert len(studio.images.stored_files()) == 24  # shared by content, nothing left over


def test_sweep_removes_only_old_unreferenced_files(studio: Studio, tmp_path: Path) -> None:
    import_dataset(studio, _folder(tmp_path / "imgs", 2), project="p")
    old_orphan = studio.images.put(image_bytes(8, 8, seed=1), "jpg").relpath
    new_orphan = studio.images.put(image_bytes(8, 8, seed=2), "jpg").relpath
    stale_tmp = write(studio.images.abspath(old_orphan).parent / ".tmp-x", b"partial")
    long_ago = (1_000_000_000, 1_000_000_000)
    os.utime(studio.images.abspath(old_orphan), long_ago)
    os.utime(stale_tmp, long_ago)
    referenced = [p for p, _ in studio.images.stored_files() if p not in (old_orphan, new_orphan)]
    for p in referenced:
        os.utime(studio.images.abspath(p), long_ago)  # old, but rows point to them
    assert sweep_unreferenced_files(studio) == 1
    left = {p for p, _ in studio.images.stored_files()}
    assert left == {new_orphan, *referenced}
    assert not stale_tmp.exists()
    assert _missing_files(studio) == []


_KILL_AFTER_TWO = """
import os, signal, sys
from services.context import Studio
from services.importing import import_dataset

studio = Studio.open(sys.argv[1])
def progress(fraction, message, metrics):
    if message == "read 2/5 images":
        os.kill(os.getpid(), signal.SIGKILL)
import_dataset(studio, sys.argv[2], project="p", progress=progress)
"""


def test_orphans_of_a_killed_import_are_swept_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLRNET_DATABASE_URL", raising=False)
    folder = _folder(tmp_path / "imgs", 5)
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", _KILL_AFTER_TWO, str(data), str(folder)], cwd=REPO,
                          capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    studio = Studio.open(data)
    try:
        orphans = [p for p, _ in studio.images.stored_files()]
        assert len(orphans) == 2 and _rows(studio) == 0  # what kill -9 leaves
        for p in orphans:  # as if the killed import had been long ago
            os.utime(studio.images.abspath(p), (1_000_000_000, 1_000_000_000))
        write(tmp_path / "other" / "x.jpg", image_bytes(16, 16, seed=9))
        import_dataset(studio, tmp_path / "other", project="q")
        with studio.Session.begin() as session:
            referenced = image_repo.referenced_paths(session)
        assert {p for p, _ in studio.images.stored_files()} == referenced and len(referenced) == 1
    finally:
        studio.close()
