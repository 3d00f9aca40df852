"""Labelling services: projects and classes, tags, masks, image pages; bad input changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from services import browse, labeling
from services.context import Studio
from services.errors import UserError
from storage import images as image_repo
from storage.models import TrainingRun


def _add_images(studio: Studio, project_id: int, n: int, width: int = 4, height: int = 3) -> list[int]:
    with studio.Session.begin() as session:
        return [
            image_repo.add_image(session, project_id, name=f"im{i}.jpg", sha256=f"{i:064x}",
                                 path=f"images/{i}", width=width, height=height).id
            for i in range(n)
        ]


def test_create_project_numbers_classes_by_convention(studio: Studio) -> None:
    coco = labeling.create_project(studio, "coco", ["person", "bicycle"], colors=["#ff0000", None])
    assert [(c.index, c.name, c.is_background) for c in coco.classes] == [
        (0, "background", True), (1, "person", False), (2, "bicycle", False)
    ]
    assert coco.classes[1].color == "#ff0000" and coco.classes[0].color == "#000000"
    again = labeling.create_project(studio, "explicit", ["background", "person"])
    assert [c.name for c in again.classes] == ["background", "person"]
    camvid = labeling.create_project(studio, "camvid", ["sky", "road"], has_background=False)
    assert camvid.class_index() == {"sky": 0, "road": 1} and not camvid.has_background
    assert [p.name for p in labeling.list_projects(studio)] == ["camvid", "coco", "explicit"]
    assert labeling.get_project(studio, camvid.id) == labeling.get_project(studio, "camvid")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "coco", "class_names": ["x"]}, "already exists"),
        ({"name": " ", "class_names": ["x"]}, "1 to 200 characters"),
        ({"name": "n", "class_names": ["cat", "cat"]}, "listed twice"),
        ({"name": "n", "class_names": ["cat", " "]}, "must not be empty"),
        ({"name": "n", "class_names": ["cat"], "colors": ["blue"]}, "not #rrggbb"),
        ({"name": "n", "class_names": ["cat"], "colors": []}, "0 colours for 1 classes"),
        ({"name": "n", "class_names": [f"c{i}" for i in range(255)]}, "at most 255"),
    ],
)
def test_create_project_rejects_bad_input(studio: Studio, kwargs: dict, match: str) -> None:
    labeling.create_project(studio, "coco", ["person"])
    with pytest.raises(UserError, match=match):
        labeling.create_project(studio, **kwargs)
    assert [p.name for p in labeling.list_projects(studio)] == ["coco"]


def test_set_classes_renames_and_asks_before_dropping_used_classes(studio: Studio) -> None:
    project = labeling.create_project(studio, "p", ["cat", "dog", "bird"])
    image = _add_images(studio, project.id, 1)[0]
    dog = project.classes[2].id
    labeling.set_image_tags(studio, image, [dog])
    renamed = labeling.set_classes(studio, "p", ["kitten", "puppy", "budgie", "fish"], ["#010203"] * 4,
                                   renames={"cat": "kitten", "dog": "puppy", "bird": "budgie"})
    assert [c.name for c in renamed.classes] == ["background", "kitten", "puppy", "budgie", "fish"]
    assert renamed.classes[2].id == dog and labeling.get_image_tags(studio, image) == [dog]
    assert renamed.classes[1].color == "#010203" and renamed.classes[0].color == "#000000"
    assert labeling.set_classes(studio, "p", ["kitten", "puppy"]).classes[-1].name == "puppy"  # unused
    with pytest.raises(UserError, match="'puppy' still label images"):
        labeling.set_classes(studio, "p", ["kitten"])
    assert [c.name for c in labeling.get_project(studio, "p").classes] == ["background", "kitten", "puppy"]
    kept = labeling.set_classes(studio, "p", ["kitten"], removed_labels="unknown")
    assert kept.classes[-1].name == "kitten"
    assert labeling.get_image_tags(studio, image) == []
    with pytest.raises(UserError, match="renamed to the same name"):
        labeling.set_classes(studio, "p", ["kit"], renames={"kitten": "kit", "background": "kit"})
    with pytest.raises(UserError, match="no project"):
        labeling.set_classes(studio, "missing", ["a"])


def test_image_tags(studio: Studio) -> None:
    project = labeling.create_project(studio, "p", ["cat", "dog"])
    other = labeling.create_project(studio, "q", ["cow"])
    image = _add_images(studio, project.id, 1)[0]
    cat, dog = project.classes[1].id, project.classes[2].id
    assert labeling.set_image_tags(studio, image, [dog, cat, dog]) == sorted([cat, dog])
    assert labeling.set_image_tags(studio, image, [cat]) == [cat]
    assert labeling.get_image_tags(studio, image) == [cat]
    with pytest.raises(UserError, match="not classes of this image's project"):
        labeling.set_image_tags(studio, image, [other.classes[1].id])
    with pytest.raises(UserError, match="tag source"):
        labeling.set_image_tags(studio, image, [cat], source="robot")
    with pytest.raises(UserError, match="no image with id"):
        labeling.set_image_tags(studio, 12345, [cat])
    assert labeling.get_image_tags(studio, image) == [cat]


def test_masks(studio: Studio) -> None:
    project = labeling.create_project(studio, "p", ["cat"])  # classes 0..1
    image = _add_images(studio, project.id, 1, width=5, height=2)[0]
    full = np.array([[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]], np.int64)
    assert labeling.save_mask(studio, image, full).is_partial is False
    assert np.array_equal(labeling.get_mask(studio, image), full)
    partial = full.copy()
    partial[:, :2] = 255
    assert labeling.save_mask(studio, image, partial).is_partial is True
    for bad, match in [
        (np.zeros((5, 2), np.uint8), "mask is 2x5 but its image is 5x2"),
        (np.full((2, 5), 2, np.uint8), r"values \[2\] are not class indices"),
        (np.zeros((2, 5, 3), np.uint8), "single-channel"),
        (np.zeros((2, 5), np.float32), "integers"),
        (np.full((2, 5), 255, np.uint8), "labels no pixel"),
    ]:
        with pytest.raises(UserError, match=match):
            labeling.save_mask(studio, image, bad)
    assert np.array_equal(labeling.get_mask(studio, image), partial)
    assert labeling.delete_mask(studio, image) is True
    assert labeling.get_mask(studio, image) is None and labeling.delete_mask(studio, image) is False


def test_browse_pages_and_counts(studio: Studio) -> None:
    project = labeling.create_project(studio, "p", ["cat"])
    ids = _add_images(studio, project.id, 7)
    labeling.set_image_tags(studio, ids[6], [project.classes[1].id])
    page = browse.browse_page(studio, "p", page=1, page_size=3)
    assert [i.image.name for i in page.items] == ["im3.jpg", "im4.jpg", "im5.jpg"] and page.total == 7
    untagged = browse.browse_page(studio, project.id, "untagged", page_size=100)
    assert untagged.total == 6 and len(untagged.items) == 6
    assert labeling.image_counts(studio, "p")["tagged"] == 1
    assert labeling.get_image(studio, ids[0]).path == "images/0"
    with pytest.raises(UserError, match="unknown image filter"):
        browse.browse_page(studio, "p", "pretty")


def test_a_save_from_a_stale_version_is_refused_and_changes_nothing(studio: Studio) -> None:
    project = labeling.create_project(studio, "p", ["cat"])
    image = _add_images(studio, project.id, 1, width=5, height=2)[0]
    opened = labeling.edit_start(studio, image, "mask")
    assert opened.start == "empty" and opened.labels is None and opened.version == ""
    first = labeling.save_mask(studio, image, np.ones((2, 5), np.uint8), expected_version=opened.version)
    assert first.version and first.version != opened.version and first.labelled == 1.0
    # a second tab that opened the image before the first save tries to save: refused
    with pytest.raises(UserError, match="changed since you opened it"):
        labeling.save_mask(studio, image, np.zeros((2, 5), np.uint8), expected_version=opened.version)
    assert (labeling.get_mask(studio, image) == 1).all()
    # the first tab saves again from the version its save returned: accepted
    again = labeling.save_mask(studio, image, np.zeros((2, 5), np.uint8), expected_version=first.version)
    assert again.version != first.version
    assert labeling.edit_start(studio, image, "mask").version == again.version
    with pytest.raises(UserError, match="changed since you opened it"):
        labeling.delete_mask(studio, image, expected_version=first.version)
    assert labeling.delete_mask(studio, image, expected_version=again.version) is True


def test_low_confidence_filter_uses_the_published_run(studio: Studio) -> None:
    from storage.labels import put_pseudo_label
    from storage.models import utcnow

    project = labeling.create_project(studio, "p", ["cat"])
    ids = _add_images(studio, project.id, 3)
    with studio.Session.begin() as session:
        run = TrainingRun(project_id=project.id, mode="wsss", backbone="b", status="published",
                          published_at=utcnow())
        session.add(run)
        session.flush()
        for image_id, score in zip(ids, [0.8, 0.1, 0.3], strict=True):
            put_pseudo_label(session, image_id, run.id, np.zeros((3, 4), np.uint8),
                             np.full((3, 4), score, np.float32))
    page = browse.browse_page(studio, "p", "low_confidence")
    assert [i.image.id for i in page.items] == [ids[1], ids[2]] and page.total == 2


def test_an_image_saved_with_no_tags_stops_being_untagged(studio: Studio) -> None:
    project = labeling.create_project(studio, "p", ["cat"])
    first, second, third = _add_images(studio, project.id, 3)
    cat = project.classes[1].id

    def untagged() -> list[int]:
        with studio.Session.begin() as session:
            images = image_repo.list_images(session, project.id, image_repo.ImageFilter.UNTAGGED)
            return [i.id for i in images]

    labeling.set_image_tags(studio, first, [])  # checked: none of the classes
    labeling.set_image_tags(studio, second, [cat], source="model")  # a model's tags check nothing
    assert untagged() == [second, third]
    with studio.Session.begin() as session:
        assert image_repo.count_images(session, project.id, image_repo.ImageFilter.UNTAGGED) == 2
        assert image_repo.count_images(session, project.id, image_repo.ImageFilter.TAGGED) == 0
    assert browse.next_image(studio, "p", after=third).id == second  # first is not offered again
    labeling.set_image_tags(studio, third, [cat])
    labeling.set_image_tags(studio, third, [])  # untagging again keeps it checked
    assert untagged() == [second]


def test_schema_v3_database_gets_the_tags_checked_column(tmp_path) -> None:
    import sqlite3

    from sqlalchemy import inspect

    from storage.db import SCHEMA_VERSION, default_database_url, open_database

    url = default_database_url(tmp_path)
    engine, _ = open_database(url)
    engine.dispose()
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # back to what a v3 database looked like
        conn.execute("INSERT INTO projects (name, has_background, created_at) VALUES ('p', 1, '2024-01-01')")
        conn.execute("INSERT INTO images (project_id, name, sha256, path, width, height, created_at) "
                     "VALUES (1, 'a.png', 'x', 'images/x', 2, 2, '2024-01-01')")
        conn.execute("ALTER TABLE images DROP COLUMN tags_checked_at")
        conn.execute("ALTER TABLE images DROP COLUMN tags_version")
        conn.execute("ALTER TABLE masks DROP COLUMN version")
        conn.execute("UPDATE schema_version SET version = 3")
    engine, sessions = open_database(url)
    try:
        assert "tags_checked_at" in {c["name"] for c in inspect(engine).get_columns("images")}
        with sessions.begin() as session:
            assert image_repo.count_images(session, 1, image_repo.ImageFilter.UNTAGGED) == 1
        assert SCHEMA_VERSION == 5
    finally:
        engine.dispose()
