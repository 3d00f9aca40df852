"""Repository functions: projects/classes, images with filters, tags, masks, pseudo-labels."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy.orm import Session

from services.context import Studio
from storage import images as image_repo
from storage import labels as label_repo
from storage import projects as project_repo
from storage.images import ImageFilter
from storage.label_maps import class_colors
from storage.models import ImageTag, Project, TrainingRun, utcnow


def _project(session: Session, names: list[str]) -> Project:
    project = project_repo.create_project(session, "p")
    project_repo.set_classes(session, project, names)
    return project


def _images(session: Session, project: Project, n: int) -> list[int]:
    return [
        image_repo.add_image(
            session, project.id, name=f"im{i}.jpg", sha256=f"{i:064x}", path=f"images/{i}", width=4, height=3
        ).id
        for i in range(n)
    ]


def _run(session: Session, project: Project, status: str, published_minutes_ago: float | None) -> int:
    published = None if published_minutes_ago is None else utcnow() - timedelta(minutes=published_minutes_ago)
    run = TrainingRun(project_id=project.id, mode="wsss", backbone="mobilenet_v2", status=status,
                      published_at=published)
    session.add(run)
    session.flush()
    return run.id


def test_projects_and_classes(studio: Studio) -> None:
    with studio.Session.begin() as session:
        project = _project(session, ["background", "cat", "dog"])
        classes = project_repo.list_classes(session, project.id)
        assert [(c.index, c.name, c.is_background) for c in classes] == [
            (0, "background", True), (1, "cat", False), (2, "dog", False)
        ]
        assert [c.color for c in classes] == class_colors(["background", "cat", "dog"], [None] * 3, 0)
        cat_color = classes[1].color
        cat_id = classes[1].id
        image_id = _images(session, project, 1)[0]
        label_repo.add_tags(session, image_id, [cat_id])
        # Swap two lines and add a class: each class keeps its row (and tags) by name, no unique
        # clash midway.
        project_repo.set_classes(session, project, ["background", "dog", "cat", "bird"],
                                 [None, "#123456", None, None])
        classes = project_repo.list_classes(session, project.id)
        assert [(c.name, c.color) for c in classes] == [
            ("background", "#000000"), ("dog", "#123456"), ("cat", cat_color), ("bird", classes[3].color)
        ]
        assert classes[3].color not in {"#000000", "#123456", cat_color}  # a new, distinct colour
        assert classes[2].id == cat_id and label_repo.get_tag_class_ids(session, image_id) == [cat_id]
        project_repo.set_classes(session, project, ["background"])
        assert len(project_repo.list_classes(session, project.id)) == 1
        assert session.query(ImageTag).count() == 0  # the removed class's tags went with it
        assert project_repo.get_project_by_name(session, "p").id == project.id
        assert project_repo.get_project_by_name(session, "nope") is None
        assert [p.name for p in project_repo.list_projects(session)] == ["p"]


def test_image_lookup_and_filters(studio: Studio) -> None:
    with studio.Session.begin() as session:
        project = _project(session, ["background", "cat"])
        cat = project_repo.list_classes(session, project.id)[1].id
        ids = _images(session, project, 5)
        assert image_repo.find_image_by_sha(session, project.id, f"{3:064x}").id == ids[3]
        assert image_repo.find_image_by_name(session, project.id, "im2.jpg").id == ids[2]
        assert image_repo.find_image_by_name(session, project.id, "none.jpg") is None
        label_repo.add_tags(session, ids[0], [cat])
        label_repo.set_tags(session, ids[1], [cat], "model", scores={cat: 0.9})  # not a human tag
        label_repo.put_mask(session, ids[2], np.zeros((3, 4), np.uint8))

        def names(f: str, **kw: object) -> list[str]:
            return [i.name for i in image_repo.list_images(session, project.id, f, **kw)]

        assert names("all") == [f"im{i}.jpg" for i in range(5)]
        assert names("all", offset=1, limit=2) == ["im1.jpg", "im2.jpg"]
        assert names("tagged") == ["im0.jpg"]
        assert names("untagged") == ["im1.jpg", "im2.jpg", "im3.jpg", "im4.jpg"]
        assert names("has_mask") == ["im2.jpg"]
        assert len(names("no_mask")) == 4
        assert names("has_pseudo_label") == [] and names("low_confidence") == []

        old = _run(session, project, "published", published_minutes_ago=60)
        new = _run(session, project, "published", published_minutes_ago=1)
        _run(session, project, "trained", published_minutes_ago=None)  # newer, but not published
        assert label_repo.current_run_id(session, project.id) == new
        conf = np.ones((3, 4), np.float32)
        label_repo.put_pseudo_label(session, ids[0], old, np.ones((3, 4), np.uint8), conf * 0.1)
        for i, score in [(1, 0.2), (3, 0.9), (4, 0.4)]:
            label_repo.put_pseudo_label(session, ids[i], new, np.ones((3, 4), np.uint8), conf * score)
        assert names("has_pseudo_label") == ["im1.jpg", "im3.jpg", "im4.jpg"]
        assert names("low_confidence") == ["im1.jpg", "im4.jpg"]  # least confident first
        assert names("low_confidence", low_confidence_below=0.3) == ["im1.jpg"]
        counts = image_repo.image_counts(session, project.id)
        assert counts == {"all": 5, "untagged": 4, "tagged": 1, "has_mask": 1, "no_mask": 4,
                          "has_pseudo_label": 3, "low_confidence": 2}
        assert image_repo.count_images(session, project.id, ImageFilter.LOW_CONFIDENCE) == 2


def test_tags_masks_and_pseudo_labels(studio: Studio) -> None:
    with studio.Session.begin() as session:
        project = _project(session, ["a", "b", "c"])
        a, b, c = (x.id for x in project_repo.list_classes(session, project.id))
        image = _images(session, project, 1)[0]
        assert label_repo.add_tags(session, image, [a, b]) == 2
        assert label_repo.add_tags(session, image, [b, c]) == 1  # b already there
        assert label_repo.get_tag_class_ids(session, image) == [a, b, c]
        label_repo.set_tags(session, image, [c])
        label_repo.set_tags(session, image, [a], "model", scores={a: 0.7}, run_id=None)
        assert label_repo.get_tag_class_ids(session, image) == [c]
        assert label_repo.get_tag_class_ids(session, image, "model") == [a]

        assert label_repo.get_mask(session, image) is None
        full = np.array([[0, 1, 2, 2]] * 3, np.uint8)
        assert label_repo.put_mask(session, image, full).is_partial is False
        partial = full.copy()
        partial[0, 0] = 255
        mask = label_repo.put_mask(session, image, partial)
        assert mask.is_partial and np.array_equal(label_repo.get_mask_array(session, image), partial)
        assert label_repo.delete_mask(session, image) is True
        assert label_repo.delete_mask(session, image) is False

        run = _run(session, project, "published", published_minutes_ago=0)
        labels = np.array([[0, 1, 2, 255]] * 3, np.uint8)
        confidence = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
        label_repo.put_pseudo_label(session, image, run, labels, confidence)
        row = label_repo.current_pseudo_label(session, project.id, image)
        assert row is not None and row.score == pytest.approx(confidence.mean(), abs=1 / 255)
        got_labels, got_conf = label_repo.pseudo_label_arrays(row)
        assert np.array_equal(got_labels, labels)
        assert np.abs(got_conf - confidence).max() <= 0.5 / 255 + 1e-6
        label_repo.put_pseudo_label(session, image, run, labels, confidence, score=0.25)  # replaces
        assert label_repo.get_pseudo_label(session, image, run).score == 0.25


def test_masks_and_referenced_paths_across_projects(studio: Studio) -> None:
    with studio.Session.begin() as session:
        project = _project(session, ["background", "cat"])
        ids = _images(session, project, 3)
        label_repo.put_mask(session, ids[1], np.zeros((3, 4), np.uint8))
        other = project_repo.create_project(session, "q")
        image_repo.add_image(session, other.id, name="x.jpg", sha256="f" * 64, path="images/1",
                             width=4, height=3)
        assert label_repo.image_ids_with_mask(session, project.id) == {ids[1]}
        assert label_repo.image_ids_with_mask(session, other.id) == set()
        assert image_repo.referenced_paths(session) == {"images/0", "images/1", "images/2"}
        assert image_repo.referenced_paths(session, ["images/1", "images/9"]) == {"images/1"}
        assert image_repo.referenced_paths(session, []) == set()


def test_a_uniqueness_conflict_is_raised_as_concurrent_change(studio: Studio) -> None:
    from storage.errors import ConcurrentChange, concurrent_changes

    with studio.Session.begin() as session:
        project_repo.create_project(session, "p")
    with pytest.raises(ConcurrentChange), concurrent_changes(), studio.Session.begin() as session:
        project_repo.create_project(session, "p")


def test_import_service_holds_no_sql() -> None:
    """Issue 10: SQL lives in storage/ only; the import service calls repository functions."""
    from pathlib import Path

    for module in ("importing.py", "import_sources.py"):
        text = (Path(__file__).resolve().parents[1] / "services" / module).read_text()
        assert "sqlalchemy" not in text, module
