"""UI uploads: one upload is one all-or-nothing import job, same-named files both arrive, the job
deletes its staged copy however it ends, and errors name the uploaded files, not server paths."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from app.tabs import import_ as import_tab
from jobs import queue
from jobs.views import get_job
from services.context import Studio
from services.errors import UserError
from services.importing import import_dataset
from services.uploads import UPLOADS_DIR, discard_stale_uploads, stage_upload
from tests.image_bytes import image_bytes, write
from tests.import_data import images_of, snapshot


@pytest.fixture()
def immediate_jobs() -> Iterator[None]:
    queue.set_immediate(True)
    yield
    queue.set_immediate(False)


def _uploads(studio: Studio) -> list[Path]:
    root = studio.data_dir / UPLOADS_DIR
    return sorted(root.iterdir()) if root.is_dir() else []


def _browser_cache(tmp_path: Path) -> list[Path]:
    """What gradio hands over: each file in its own temporary folder, two of them named a.jpg."""
    files = [write(tmp_path / "cache" / "1" / "a.jpg", image_bytes(32, 24, seed=1)),
             write(tmp_path / "cache" / "2" / "a.jpg", image_bytes(32, 24, seed=2)),
             write(tmp_path / "cache" / "3" / "b.png", image_bytes(16, 16, seed=3, fmt="PNG"))]
    archive = tmp_path / "cache" / "4" / "more.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("z/c.jpg", image_bytes(20, 20, seed=4))
    return [*files, archive]


def test_same_named_uploads_both_arrive_in_one_job(
    studio: Studio, tmp_path: Path, immediate_jobs: None
) -> None:
    files = [str(p) for p in _browser_cache(tmp_path)]
    _status, _bar, job_ids = import_tab.import_uploads(studio, "p", files)
    assert len(job_ids) == 1
    job = get_job(studio, job_ids[0])
    assert job.status == "succeeded", job.error
    assert sorted(i.name for i in images_of(studio, "p")) == ["a-2.jpg", "a.jpg", "b.png", "c.jpg"]
    assert _uploads(studio) == []  # the job removed its staged copy (no poll needed)


def test_a_failing_upload_imports_nothing_and_cleans_up(
    studio: Studio, tmp_path: Path, immediate_jobs: None
) -> None:
    files = _browser_cache(tmp_path)
    files.append(write(tmp_path / "cache" / "5" / "broken.jpg", image_bytes(64, 48, seed=5)[:300]))
    before = snapshot(studio)
    _status, _bar, job_ids = import_tab.import_uploads(studio, "p", [str(p) for p in files])
    job = get_job(studio, job_ids[0])
    assert job.status == "failed"
    assert job.error == "broken.jpg: not an image file"
    assert str(studio.data_dir) not in job.error and str(tmp_path) not in job.error
    assert _uploads(studio) == []
    after = snapshot(studio)
    assert after[1] == before[1]  # no file stored
    assert {**after[0], "jobs": 0} == {**before[0], "jobs": 0}


def test_a_cancelled_upload_import_removes_its_staged_copy(studio: Studio, tmp_path: Path) -> None:
    from services.progress import Cancelled

    staged = stage_upload(studio, _browser_cache(tmp_path))
    with pytest.raises(Cancelled):
        import_dataset(studio, staged, project="p", should_stop=lambda: True)
    assert _uploads(studio) == [] and images_of_count(studio) == 0


def images_of_count(studio: Studio) -> int:
    try:
        return len(images_of(studio, "p"))
    except UserError:
        return 0


def test_a_zip_problem_names_the_uploaded_zip_not_the_staging_path(studio: Studio, tmp_path: Path) -> None:
    bad = tmp_path / "cache" / "x" / "bad.zip"
    bad.parent.mkdir(parents=True)
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.jpg", image_bytes(8, 8, seed=1))
    staged = stage_upload(studio, [bad])
    with pytest.raises(UserError) as info:
        import_dataset(studio, staged, project="p")
    assert str(info.value) == "bad.zip: entry '../evil.jpg' escapes the archive's folder"
    assert _uploads(studio) == []


def test_stale_uploads_are_discarded(studio: Studio, tmp_path: Path) -> None:
    import os

    old = stage_upload(studio, _browser_cache(tmp_path))
    os.utime(old, (1_000_000_000, 1_000_000_000))  # a job cancelled while queued, long ago
    fresh = stage_upload(studio, _browser_cache(tmp_path))  # staging sweeps the stale ones
    assert _uploads(studio) == [fresh]
    assert discard_stale_uploads(studio, older_than_s=0) == 1 and _uploads(studio) == []


def test_server_folder_import_is_refused_without_or_outside_import_roots(
    studio: Studio, tmp_path: Path
) -> None:
    folder = tmp_path / "imgs"
    write(folder / "a.jpg", image_bytes(32, 24, seed=1))
    with pytest.raises(gr.Error, match="off"):
        import_tab.import_folder(studio, "p", str(folder), None, None, None, None)
    (tmp_path / "elsewhere").mkdir()
    studio.import_roots = ((tmp_path / "elsewhere").resolve(),)
    for args in ((str(folder), None), ("../imgs", None), (str(tmp_path / "elsewhere"), "/etc/shadow")):
        with pytest.raises(gr.Error, match="must lie under an import root"):
            import_tab.import_folder(studio, "p", args[0], None, args[1], None, None)
    assert not (studio.data_dir / "jobs").exists() and images_of_count(studio) == 0
