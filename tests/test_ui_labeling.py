"""UI handlers of the labelling screens (projects, import, browse, tag, paint) on a temp Studio."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image as PILImage

from app import (
    handlers_browse,
    handlers_import,
    handlers_paint,
    handlers_projects,
    handlers_tag,
)
from jobs import queue
from services import labeling
from services.context import Studio
from storage.label_maps import hex_to_rgb
from storage.models import IGNORE_INDEX
from tests.ui_support import PROJECT, image_ids, make_project, publish_pseudo_labels, write_images


@pytest.fixture()
def immediate_jobs() -> Iterator[None]:
    """Queued jobs run at once, in this process."""
    queue.set_immediate(True)
    yield
    queue.set_immediate(False)


@pytest.fixture()
def project(studio: Studio, tmp_path: Path) -> str:
    return make_project(studio, tmp_path)


# --- projects ----------------------------------------------------------------------------------


def test_class_lines_parse_names_and_optional_colours() -> None:
    names, colors = handlers_projects.parse_class_lines("cat #FF8800\n\n  hot dog  \ndog #00ff00\n")
    assert names == ["cat", "hot dog", "dog"]
    assert colors == ["#ff8800", None, "#00ff00"]
    with pytest.raises(Exception, match="not a colour"):
        handlers_projects.parse_class_lines("cat #ff88")


def test_create_project_selects_it_and_shows_its_classes(studio: Studio) -> None:
    chooser, status = handlers_projects.create_project(studio, "birds", "robin #ff0000\ncrow", True)
    assert chooser["value"] == "birds" and chooser["choices"] == ["birds"]
    assert "3 classes" in status
    text, swatches, summary = handlers_projects.show_project(studio, "birds")
    assert text.splitlines()[0].startswith("background ")
    assert "robin #ff0000" in text
    assert "unknown" in swatches and "#ff0000" in swatches
    assert "**0** images" in summary


def test_duplicate_project_is_a_visible_error(studio: Studio) -> None:
    handlers_projects.create_project(studio, "birds", "robin", True)
    with pytest.raises(gr.Error, match="already exists"):
        handlers_projects.create_project(studio, "birds", "crow", True)


def test_save_classes_recolours_and_adds(studio: Studio, project: str) -> None:
    text, _, status = handlers_projects.save_classes(
        studio, project, "background #000000\ncat #123456\ndog\nbird #abcdef"
    )
    info = labeling.get_project(studio, project)
    assert [(c.name, c.index) for c in info.classes] == [
        ("background", 0),
        ("cat", 1),
        ("dog", 2),
        ("bird", 3),
    ]
    assert info.classes[1].color == "#123456" and info.classes[3].color == "#abcdef"
    assert "4 classes" in status and "bird #abcdef" in text


def test_load_projects_keeps_the_current_choice(studio: Studio) -> None:
    for name in ("a", "b"):
        handlers_projects.create_project(studio, name, "x", True)
    assert handlers_projects.load_projects(studio, "b")[0]["value"] == "b"
    assert handlers_projects.load_projects(studio, "gone")[0]["value"] == "a"


# --- import ------------------------------------------------------------------------------------


def test_uploaded_images_and_zips_are_imported(studio: Studio, tmp_path: Path, immediate_jobs: None) -> None:
    labeling.create_project(studio, PROJECT, ["cat"])
    loose = write_images(tmp_path / "loose", 2)
    zipped = write_images(tmp_path / "zipped", 5)[2:]  # different colours from the loose ones
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in zipped:
            zf.write(path, f"z/{path.name}")
    _status, _bar, job_ids = handlers_import.import_uploads(studio, PROJECT, [*map(str, loose), str(archive)])
    assert len(job_ids) == 1  # one upload, one all-or-nothing job
    assert labeling.image_counts(studio, PROJECT)["all"] == 5
    polled = handlers_import.poll_imports(studio, PROJECT, job_ids, None)
    assert polled[0].count("succeeded") == 1 and 'aria-valuenow="100"' in polled[1]
    assert "**5** images" in polled[3]
    assert handlers_import.poll_imports(studio, PROJECT, job_ids, polled[2])[0] == gr.skip()
    assert list((studio.data_dir / "uploads").iterdir()) == []  # staged copies removed once imported


def test_upload_of_other_files_is_refused(studio: Studio, tmp_path: Path) -> None:
    labeling.create_project(studio, PROJECT, ["cat"])
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(gr.Error, match=r"not an image or a \.zip"):
        handlers_import.import_uploads(studio, PROJECT, [str(notes)])
    with pytest.raises(gr.Error, match="choose some images"):
        handlers_import.import_uploads(studio, PROJECT, [])


def test_server_folder_import_with_tags(studio: Studio, tmp_path: Path, immediate_jobs: None) -> None:
    labeling.create_project(studio, PROJECT, ["cat", "dog"])
    folder = write_images(tmp_path / "photos", 3)[0].parent
    tags = tmp_path / "tags.csv"
    tags.write_text("image,tags\nimg0.png,cat;dog\nimg2.png,dog\n")
    studio.import_roots = (tmp_path.resolve(),)  # serve --import-root
    status, _, _ = handlers_import.import_folder(studio, PROJECT, str(folder), "", str(tags), "", "")
    assert "succeeded" in status
    counts = labeling.image_counts(studio, PROJECT)
    assert (counts["all"], counts["tagged"]) == (3, 2)


# --- browse ------------------------------------------------------------------------------------


def test_gallery_pages_show_cached_thumbnails_not_full_images(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(studio, tmp_path, count=5, size=(600, 900))
    monkeypatch.setattr(handlers_browse, "PAGE_SIZE", 2)
    tiles, ids, label, page, filters = handlers_browse.show_page(studio, PROJECT, "all", 2)
    assert (len(tiles), page) == (1, 2) and "page 3/3" in label
    path, caption = tiles[0]
    assert Path(path).is_relative_to(studio.images.thumbs_dir)
    with PILImage.open(path) as thumb:
        assert max(thumb.size) <= 256
    assert caption.startswith("img4.png")
    assert ids == [image_ids(studio)["img4.png"]]
    assert ("Untagged (5)", "untagged") in filters["choices"]
    # past the end: clamped to the last page
    assert handlers_browse.show_page(studio, PROJECT, "all", 9)[3] == 2


def test_gallery_filters_and_captions_follow_labels(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    cat = labeling.get_project(studio, project).classes[1].id
    labeling.set_image_tags(studio, ids["img1.png"], [cat])
    publish_pseudo_labels(studio, {"img1.png": 0.3, "img3.png": 0.9})
    tiles, page_ids, *_ = handlers_browse.show_page(studio, project, "tagged", 0)
    assert page_ids == [ids["img1.png"]]
    assert "tags: cat" in tiles[0][1] and "conf 0.30" in tiles[0][1]
    _, low_ids, *_ = handlers_browse.show_page(studio, project, "low_confidence", 0)
    assert low_ids == [ids["img1.png"]]
    _, none_ids, label, *_ = handlers_browse.show_page(studio, project, "has_mask", 0)
    assert none_ids == [] and "No image" in label


def test_clicking_a_tile_chooses_its_image(studio: Studio, project: str) -> None:
    event = gr.SelectData(None, {"index": 1, "value": None})
    assert handlers_browse.select_image([11, 12, 13], event) == 12
    text = handlers_browse.describe_image(studio, image_ids(studio)["img0.png"])
    assert "img0.png" in text and "no mask" in text


# --- tag ---------------------------------------------------------------------------------------


def test_tag_view_starts_at_the_first_untagged_image_without_background(studio: Studio, project: str) -> None:
    image_id, picture, title, boxes = handlers_tag.load_tag_view(studio, project, None)
    assert image_id == image_ids(studio)["img0.png"]
    assert Path(picture).is_file() and "not tagged" in title
    assert [name for name, _ in boxes["choices"]] == ["cat", "dog"]
    assert boxes["value"] == []


def test_save_and_next_stores_tags_and_moves_on(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    dog = labeling.get_project(studio, project).classes[2].id
    image_id, _, _title, boxes, status = handlers_tag.save_and_next(studio, project, ids["img0.png"], [dog])
    assert labeling.get_image_tags(studio, ids["img0.png"]) == [dog]
    assert image_id == ids["img1.png"] and boxes["value"] == []
    assert "1 tag" in status
    # skipping img1 leads to img2; from the last untagged image it wraps around
    assert handlers_tag.next_untagged(studio, project, ids["img1.png"])[0] == ids["img2.png"]
    assert handlers_tag.next_untagged(studio, project, ids["img4.png"])[0] == ids["img1.png"]


def test_saving_no_tags_untags(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    cat = labeling.get_project(studio, project).classes[1].id
    handlers_tag.save_tags(studio, ids["img0.png"], [cat])
    assert "untagged" in handlers_tag.save_tags(studio, ids["img0.png"], [])
    assert labeling.get_image_tags(studio, ids["img0.png"]) == []


# --- paint -------------------------------------------------------------------------------------


def _stroke(editor_update: dict, rows: slice, cols: slice, color: str) -> dict:
    """The editor value after painting a rectangle in ``color`` on its (one) layer."""
    h, w = editor_update["value"]["background"].shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    layer[rows, cols] = (*hex_to_rgb(color), 255)
    return {"background": editor_update["value"]["background"], "layers": [layer], "composite": None}


def test_editor_brushes_are_the_class_colours(studio: Studio, project: str) -> None:
    editor, legend, title, session = handlers_paint.load_editor(studio, project, None, None)
    brush = editor["brush"]
    info = labeling.get_project(studio, project)
    assert brush.color_mode == "fixed"
    assert brush.colors[:3] == [c.color for c in info.classes] and len(brush.colors) == 4
    assert brush.default_color == info.classes[1].color  # the first non-background class
    assert "unknown" in legend and "starting from nothing" in title
    assert session["image_id"] == image_ids(studio)["img0.png"]


def test_painted_stroke_is_stored_as_mask_pixels(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img2.png"]
    editor, _, _, session = handlers_paint.load_editor(studio, project, image_id, handlers_paint.START_EMPTY)
    dog = labeling.get_project(studio, project).classes[2].color
    value = _stroke(editor, slice(5, 10), slice(0, 40), dog)
    status = handlers_paint.save_painting(studio, project, session, value, False)
    mask = labeling.get_mask(studio, image_id)
    assert (mask[5:10] == 2).all()
    assert (mask[:5] == IGNORE_INDEX).all() and (mask[10:] == IGNORE_INDEX).all()
    assert "16.7%" in status and "unknown" in status
    handlers_paint.save_painting(studio, project, session, value, True)
    mask = labeling.get_mask(studio, image_id)
    assert (mask[5:10] == 2).all() and (mask[10:] == 0).all()


def test_saving_twice_applies_the_painting_to_the_same_start(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    start = np.full((30, 40), 1, np.uint8)
    labeling.save_mask(studio, image_id, start)
    editor, _, _, session = handlers_paint.load_editor(studio, project, image_id, handlers_paint.START_MASK)
    dog = labeling.get_project(studio, project).classes[2].color
    handlers_paint.save_painting(
        studio, project, session, _stroke(editor, slice(0, 10), slice(0, 40), dog), False
    )
    # the user erases the stroke and saves again: the pixels go back to the starting mask
    handlers_paint.save_painting(
        studio, project, session, _stroke(editor, slice(0, 0), slice(0, 0), dog), False
    )
    np.testing.assert_array_equal(labeling.get_mask(studio, image_id), start)


def test_correcting_a_pseudo_label_starts_from_it(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img1.png"]
    publish_pseudo_labels(studio, {"img1.png": 0.6})
    editor, _, title, session = handlers_paint.load_editor(
        studio, project, image_id, handlers_paint.START_PSEUDO
    )
    assert "pseudo-label" in title
    cat = labeling.get_project(studio, project).classes[1].color
    handlers_paint.save_painting(
        studio, project, session, _stroke(editor, slice(0, 5), slice(0, 40), cat), False
    )
    mask = labeling.get_mask(studio, image_id)
    assert (mask[:5] == 1).all() and (mask[5:15] == 2).all() and (mask[15:] == 1).all()


def test_large_image_is_painted_downscaled_and_saved_full_size(studio: Studio, tmp_path: Path) -> None:
    make_project(studio, tmp_path, count=1, size=(1536, 2048))
    image_id = image_ids(studio)["img0.png"]
    editor, _, title, session = handlers_paint.load_editor(studio, PROJECT, image_id, None)
    assert editor["value"]["background"].shape == (768, 1024, 3)
    assert "saved at full size" in title
    cat = labeling.get_project(studio, PROJECT).classes[1].color
    handlers_paint.save_painting(
        studio, PROJECT, session, _stroke(editor, slice(100, 110), slice(0, 512), cat), False
    )
    mask = labeling.get_mask(studio, image_id)
    assert mask.shape == (1536, 2048)
    rows, cols = np.nonzero(mask == 1)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (200, 219, 0, 1023)


def test_saving_with_nothing_painted_is_a_visible_error(studio: Studio, project: str) -> None:
    editor, _, _, session = handlers_paint.load_editor(studio, project, None, handlers_paint.START_EMPTY)
    empty = {"background": editor["value"]["background"], "layers": [], "composite": None}
    with pytest.raises(gr.Error, match="labels no pixel"):
        handlers_paint.save_painting(studio, project, session, empty, False)


def test_next_without_mask_skips_masked_images(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    labeling.save_mask(studio, ids["img1.png"], np.zeros((30, 40), np.uint8))
    assert handlers_paint.next_without_mask(studio, project, ids["img0.png"]) == ids["img2.png"]


def test_returning_to_the_paint_tab_keeps_unsaved_strokes(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    _, _, _, session = handlers_paint.load_editor(studio, project, image_id, None)
    kept = handlers_paint.open_editor(studio, project, image_id, None, session)
    assert kept[:3] == (gr.skip(),) * 3 and kept[3] is session
    other = handlers_paint.open_editor(studio, project, image_ids(studio)["img1.png"], None, session)
    assert other[3]["image_id"] == image_ids(studio)["img1.png"]
