"""Loading a project for training and predicting costs a few joined queries, not some per image.

SQL statements are counted with SQLAlchemy's ``before_cursor_execute`` event on the studio's engine;
each count is taken for a 10- and a 30-image project and must not grow with the images.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import pytest
from sqlalchemy import event

from services import publishing, training
from services.context import Studio
from services.errors import UserError
from services.lookups import resolve_project
from storage import labels as label_repo
from storage import runs as run_repo
from storage.images import add_image, iter_images_with_labels
from storage.label_maps import decode_label_png
from storage.projects import create_project, set_classes

MAX_STATEMENTS = 8  # a handful per load whatever the project's size (per-image code: 2-3 per image)


@contextmanager
def count_statements(studio: Studio) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(studio.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(studio.engine, "before_cursor_execute", record)


def make_project(studio: Studio, name: str, n: int) -> list[int]:
    """``n`` images named im00.. in reverse insertion order; image i tagged with class 1 + i % 2
    (every third also with class 2), every third image untagged instead, every fourth with a mask."""
    ids = []
    with studio.Session.begin() as session:
        project = create_project(session, name)
        classes = set_classes(session, project, ["background", "red", "blue"])
        for i in reversed(range(n)):
            image = add_image(session, project.id, name=f"im{i:02d}.png", sha256=f"{name}{i:060d}",
                              path=f"images/{name}/{i}.png", width=8, height=6)
            ids.append(image.id)
            if i % 3 == 2:
                pass
            elif i % 3 == 1:
                label_repo.set_tags(session, image.id, [classes[1].id, classes[2].id])
            else:
                label_repo.set_tags(session, image.id, [classes[1 + i % 2].id])
            label_repo.set_tags(session, image.id, [classes[2].id], "model")  # not a human tag
            if i % 4 == 0:
                label_repo.put_mask(session, image.id, np.full((6, 8), i % 3, np.uint8))
    return ids[::-1]  # by name


def expected_tags(i: int) -> list[int]:
    """Class indices of image i's human tags (see make_project)."""
    return [] if i % 3 == 2 else [1, 2] if i % 3 == 1 else [1 + i % 2]


def add_trained_run(studio: Studio, name: str) -> int:
    with studio.Session.begin() as session:
        project = resolve_project(session, name)
        run = run_repo.create_run(session, project.id, mode="wsss", backbone="tiny", config={})
        run.checkpoint_path = f"checkpoints/{name}.pt"
        run_repo.mark_trained(session, run)
        return run.id


class StubPredictor:
    """What predict uses of a Predictor; records the known tags it was given per image size."""

    model_config = types.SimpleNamespace(has_background=True, head="paper", backbone="stub")
    num_classes = 3
    class_names: ClassVar[list[str]] = ["background", "red", "blue"]  # make_project's; predict checks them
    size = None  # reads the image at its own size

    def __init__(self) -> None:
        self.known: list[list[int]] = []

    def predict(self, image: np.ndarray, known_tags: np.ndarray | None = None,
                output_size: tuple[int, int] | None = None, stored: object = None) -> types.SimpleNamespace:
        self.known.append([] if known_tags is None else np.flatnonzero(known_tags).tolist())
        h, w = output_size or image.shape[:2]
        return types.SimpleNamespace(labels=np.ones((h, w), np.uint8),
                                     confidence=np.full((h, w), 0.5, np.float32),
                                     present=np.array([True, True, False]),
                                     presence_scores=np.array([0.9, 0.8, 0.1], np.float32))


@pytest.fixture()
def stub_predictor(monkeypatch: pytest.MonkeyPatch, studio: Studio) -> StubPredictor:
    stub = StubPredictor()
    monkeypatch.setattr(publishing.Predictor, "from_checkpoint", classmethod(lambda cls, *a, **k: stub))
    monkeypatch.setattr(studio.images, "read_rgb", lambda path: np.zeros((6, 8, 3), np.uint8))
    (studio.data_dir / "checkpoints").mkdir(exist_ok=True)
    return stub


def test_load_labels_reads_tags_and_masks_in_name_order(studio: Studio) -> None:
    make_project(studio, "p", 30)
    data = training._load_labels(studio, "p")
    assert [s.name for s in data.samples] == [f"im{i:02d}.png" for i in range(30)]
    for i, sample in enumerate(data.samples):
        tags = [] if sample.tags is None else np.flatnonzero(sample.tags).tolist()
        assert tags == expected_tags(i), sample.name
        if i % 4 == 0:
            np.testing.assert_array_equal(sample.mask(), np.full((6, 8), i % 3, np.uint8))
        else:
            assert sample.mask is None
    assert (data.tagged, data.masked) == (20, 8)
    assert data.unlabelled == sum(1 for i in range(30) if i % 3 == 2 and i % 4 != 0)


def test_images_with_labels_pages_keep_every_image_once(studio: Studio) -> None:
    ids = make_project(studio, "p", 30)
    with studio.Session.begin() as session:
        project = resolve_project(session, "p")
        for batch_size in (1, 7, 30, 100):
            rows = list(iter_images_with_labels(session, project.id, mask_png=True, batch_size=batch_size))
            assert [r.image_id for r in rows] == ids
            assert [r.has_mask for r in rows] == [i % 4 == 0 for i in range(30)]
            assert [decode_label_png(r.mask_png)[0, 0] if r.mask_png else None for r in rows] == \
                [i % 3 if i % 4 == 0 else None for i in range(30)]
        class_index = {c.id: c.index for c in project.classes}
        rows = list(iter_images_with_labels(session, project.id, batch_size=4))
        tags = [[class_index[c] for c in r.tag_class_ids] for r in rows]
        assert tags == [expected_tags(i) for i in range(30)]
        assert all(r.mask_png is None for r in rows)  # bytes only when asked for


def test_load_labels_statements_do_not_grow_with_images(studio: Studio) -> None:
    counts = []
    for name, n in (("small", 10), ("big", 30)):
        make_project(studio, name, n)
        with count_statements(studio) as statements:
            training._load_labels(studio, name)
        counts.append(len(statements))
    assert counts[0] == counts[1] <= MAX_STATEMENTS, counts


def test_predict_loading_statements_do_not_grow_with_images(studio: Studio) -> None:
    counts = []
    for name, n in (("small", 10), ("big", 30)):
        make_project(studio, name, n)
        add_trained_run(studio, name)  # its checkpoint file is missing: predict stops after loading
        with count_statements(studio) as statements, pytest.raises(UserError, match="checkpoint"):
            publishing.predict(studio, name, device="cpu")
        counts.append(len(statements))
    assert counts[0] == counts[1] <= MAX_STATEMENTS, counts


def test_predict_skips_done_images_and_summarises_in_constant_statements(
        studio: Studio, stub_predictor: StubPredictor) -> None:
    ids = make_project(studio, "p", 30)
    run_id = add_trained_run(studio, "p")
    (studio.data_dir / "checkpoints" / "p.pt").write_bytes(b"stub")
    done = set(ids[::3])
    with studio.Session.begin() as session:
        for image_id in done:  # already predicted by an earlier, cancelled predict
            label_repo.put_pseudo_label(session, image_id, run_id, np.zeros((6, 8), np.uint8),
                                        np.full((6, 8), 1.0, np.float32))
    result = publishing.predict(studio, "p", device="cpu")
    # the 20 others were predicted, in name order, with their human tags as known classes
    assert stub_predictor.known == [expected_tags(i) for i in range(30) if ids[i] not in done]
    assert result.images == 30
    # confidence 0.5 -> 128; the 5 predicted images with a mask (i % 4 == 0) are painted: 1.0
    assert result.mean_score == pytest.approx((10 * 1.0 + 5 * 1.0 + 15 * 128 / 255) / 30)
    with studio.Session.begin() as session:
        assert run_repo.get_run(session, run_id).status == "published"
    # everything done: predicting again reads, publishes and summarises in a few statements
    counts = []
    for name, n in (("small", 10), ("big", 30)):
        project_ids = make_project(studio, name, n)
        other_run = add_trained_run(studio, name)
        (studio.data_dir / "checkpoints" / f"{name}.pt").write_bytes(b"stub")
        with studio.Session.begin() as session:
            for image_id in project_ids:
                label_repo.put_pseudo_label(session, image_id, other_run, np.zeros((6, 8), np.uint8),
                                            np.full((6, 8), 0.25, np.float32))
        with count_statements(studio) as statements:
            again = publishing.predict(studio, name, device="cpu")
        assert (again.images, again.mean_score) == (n, pytest.approx(64 / 255))  # confidence 0.25 -> 64
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 2 * MAX_STATEMENTS, counts


def test_pseudo_label_score_summary_counts_only_the_projects_images(studio: Studio) -> None:
    ids = make_project(studio, "p", 4)
    other = make_project(studio, "q", 2)
    run_id = add_trained_run(studio, "p")
    with studio.Session.begin() as session:
        project = resolve_project(session, "p")
        assert label_repo.pseudo_label_score_summary(session, project.id, run_id) == (0, None)
        for image_id, score in zip([*ids[:2], *other], (0.2, 0.4, 0.9, 0.9), strict=True):
            label_repo.put_pseudo_label(session, image_id, run_id, np.zeros((2, 2), np.uint8),
                                        np.zeros((2, 2), np.float32), score=score)
        count, mean = label_repo.pseudo_label_score_summary(session, project.id, run_id)
    assert count == 2 and mean == pytest.approx(0.3)


def test_a_browse_page_costs_the_same_statements_whatever_its_size(studio: Studio) -> None:
    """The gallery's page reads the tiles' tags, masks and scores joined, not per tile."""
    from services.browse import browse_page

    make_project(studio, "p", 30)
    run_id = add_trained_run(studio, "p")
    with studio.Session.begin() as session:
        run_repo.mark_published(session, run_repo.get_run(session, run_id))
        for image_id in [i for i, _ in zip(iter_ids(session, "p"), range(5), strict=False)]:
            label_repo.put_pseudo_label(session, image_id, run_id, np.ones((6, 8), np.uint8),
                                        np.full((6, 8), 0.5, np.float32), 0.5)
    counts = {}
    for size in (5, 30):
        with count_statements(studio) as statements:
            page = browse_page(studio, "p", page_size=size)
        counts[size] = len(statements)
        assert len(page.items) == size
    assert counts[5] == counts[30] <= MAX_STATEMENTS
    first = browse_page(studio, "p", page_size=30).items
    assert [s.image.name for s in first[:2]] == ["im00.png", "im01.png"]
    assert first[0].tags == ("red",) and first[0].mask_source == "human" and first[0].score == 0.5
    assert first[1].tags == ("blue", "red") and first[1].mask_source is None
    assert first[2].tags == () and first[29].score is None


def iter_ids(session: object, name: str) -> list[int]:
    project = resolve_project(session, name)
    return [i.image_id for i in iter_images_with_labels(session, project.id)]


def test_a_poll_reads_the_jobs_once(studio: Studio) -> None:
    """The 1 s timer tick reads the followed jobs (model job, imports, export, feature fills) in
    one statement when they are among the project's newest, however many displays use them."""
    from app.ui import poll_jobs
    from storage import jobs as job_rows

    make_project(studio, "p", 3)
    with studio.Session.begin() as session:
        project = resolve_project(session, "p")
        ids = {kind: job_rows.create_job(session, kind, project.id, {"project_id": project.id}).id
               for kind in ("import", "train", "export")}
    with count_statements(studio) as statements:
        out = poll_jobs(studio, "p", None, [ids["import"]], None, ids["export"], None)
    assert out["timer"].active  # queued jobs: keep ticking
    assert sum(" jobs" in s.split("FROM", 1)[-1][:6] for s in statements) == 1


def test_a_train_click_is_one_transaction(studio: Studio) -> None:
    """Queueing "Train on my labels" checks the labels and the running jobs, adds the job row and
    reads it back in one transaction."""
    from jobs import queue
    from jobs.submit import submit_train_on_my_labels

    make_project(studio, "p", 3)
    begins: list[object] = []

    def begin(conn: object) -> None:
        begins.append(conn)

    queue.bind(studio)
    event.listen(studio.engine, "begin", begin)
    try:
        view = submit_train_on_my_labels(studio, "p")
    finally:
        event.remove(studio.engine, "begin", begin)
        queue.unbind()
    assert view.status == "queued" and view.kind == "train"
    assert len(begins) == 1
