"""UI handlers of the labelling screens (projects, import, browse, tag, paint) on a temp Studio."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image as PILImage

from app.painter import data_url
from app.tabs import browse as browse_tab
from app.tabs import import_ as import_tab
from app.tabs import paint as paint_tab
from app.tabs import projects as projects_tab
from app.tabs import tag as tag_tab
from jobs import queue
from services import labeling
from services.context import Studio
from slrnet.config import IGNORE_INDEX
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
    names, colors = projects_tab.parse_class_lines("cat #FF8800\n\n  hot dog  \ndog #00ff00\n")
    assert names == ["cat", "hot dog", "dog"]
    assert colors == ["#ff8800", None, "#00ff00"]
    with pytest.raises(Exception, match="not a colour"):
        projects_tab.parse_class_lines("cat #ff88")


def test_create_project_selects_it_and_shows_its_classes(studio: Studio) -> None:
    created = projects_tab.create_project(studio, "birds", "robin #ff0000\ncrow", True)
    chooser, status = created["project"], created["status"]
    assert chooser["value"] == "birds" and chooser["choices"] == ["birds"]
    assert "3 classes" in status
    shown = projects_tab.show_project(studio, "birds")
    text, swatches, summary = shown["classes_text"], shown["swatches"], shown["summary"]
    assert "crow #1818f2" in text  # far from the given red and black, not the dark VOC colour
    assert text.splitlines()[0].startswith("background ")
    assert "robin #ff0000" in text
    assert "unknown" in swatches and "#ff0000" in swatches
    assert "**0** images" in summary


def test_duplicate_project_is_a_visible_error(studio: Studio) -> None:
    projects_tab.create_project(studio, "birds", "robin", True)
    refused = projects_tab.create_project(studio, "birds", "crow", True)  # a toast and the status line
    assert list(refused) == ["status"] and "Not created" in refused["status"]
    assert "already exists" in refused["status"]


def test_save_classes_recolours_and_adds(studio: Studio, project: str) -> None:
    saved = projects_tab.save_classes(
        studio, project, "background #000000\ncat #123456\ndog\nbird #abcdef"
    )
    text, status = saved["classes_text"], saved["status"]
    info = labeling.get_project(studio, project)
    assert [(c.name, c.index) for c in info.classes] == [
        ("background", 0),
        ("cat", 1),
        ("dog", 2),
        ("bird", 3),
    ]
    assert info.classes[1].color == "#123456" and info.classes[3].color == "#abcdef"
    assert "4 classes" in status and "bird #abcdef" in text


def test_removing_a_used_class_asks_what_its_labels_become(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    cat = labeling.get_project(studio, project).classes[1]
    labeling.set_image_tags(studio, ids["img0.png"], [cat.id])
    with pytest.raises(gr.Error, match="still label images"):
        projects_tab.save_classes(studio, project, "background\ndog")
    saved = projects_tab.save_classes(studio, project, "background\ndog", "unknown")
    assert "2 classes" in saved["status"] and labeling.get_image_tags(studio, ids["img0.png"]) == []


def test_load_projects_keeps_the_current_choice(studio: Studio) -> None:
    for name in ("a", "b"):
        projects_tab.create_project(studio, name, "x", True)
    assert projects_tab.load_projects(studio, "b")["project"]["value"] == "b"
    assert projects_tab.load_projects(studio, "gone")["project"]["value"] == "a"
    # after a reload the page asks for the project and tab it had: the tab comes back too
    restored = projects_tab.load_projects(studio, "b", "train")
    assert restored["tabs"].selected == "train" and "tabs" not in projects_tab.load_projects(
        studio, "b", "x"
    )


# --- import ------------------------------------------------------------------------------------


def test_uploaded_images_and_zips_are_imported(studio: Studio, tmp_path: Path, immediate_jobs: None) -> None:
    labeling.create_project(studio, PROJECT, ["cat"])
    loose = write_images(tmp_path / "loose", 2)
    zipped = write_images(tmp_path / "zipped", 5)[2:]  # different colours from the loose ones
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in zipped:
            zf.write(path, f"z/{path.name}")
    _status, _bar, job_ids = import_tab.import_uploads(studio, PROJECT, [*map(str, loose), str(archive)])
    assert len(job_ids) == 1  # one upload, one all-or-nothing job
    assert labeling.image_counts(studio, PROJECT)["all"] == 5
    polled = import_tab.poll_imports(studio, PROJECT, job_ids, None)
    assert polled[0].count("succeeded") == 1 and 'aria-valuenow="100"' in polled[1]
    assert "**5** images" in polled[3]
    assert import_tab.poll_imports(studio, PROJECT, job_ids, polled[2])[0] == gr.skip()
    assert list((studio.data_dir / "uploads").iterdir()) == []  # staged copies removed once imported


def test_upload_of_other_files_is_refused(studio: Studio, tmp_path: Path) -> None:
    labeling.create_project(studio, PROJECT, ["cat"])
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(gr.Error, match=r"not an image or a \.zip"):
        import_tab.import_uploads(studio, PROJECT, [str(notes)])
    with pytest.raises(gr.Error, match="choose some images"):
        import_tab.import_uploads(studio, PROJECT, [])


def test_server_folder_import_with_tags(studio: Studio, tmp_path: Path, immediate_jobs: None) -> None:
    labeling.create_project(studio, PROJECT, ["cat", "dog"])
    folder = write_images(tmp_path / "photos", 3)[0].parent
    tags = tmp_path / "tags.csv"
    tags.write_text("image,tags\nimg0.png,cat;dog\nimg2.png,dog\n")
    studio.import_roots = (tmp_path.resolve(),)  # serve --import-root
    status, _, _ = import_tab.import_folder(studio, PROJECT, str(folder), "", str(tags), "", "")
    assert "succeeded" in status
    counts = labeling.image_counts(studio, PROJECT)
    assert (counts["all"], counts["tagged"]) == (3, 2)


# --- browse ------------------------------------------------------------------------------------


def test_gallery_pages_show_cached_thumbnails_not_full_images(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(studio, tmp_path, count=5, size=(600, 900))
    monkeypatch.setattr(browse_tab, "PAGE_SIZE", 2)
    shown = browse_tab.show_page(studio, PROJECT, "all", 2)
    tiles, ids, label, page, filters = (
        shown[k] for k in ("gallery", "page_ids", "page_label", "page", "filter")
    )
    assert (len(tiles), page) == (1, 2) and "page 3/3" in label
    path, caption = tiles[0]
    assert Path(path).is_relative_to(studio.images.thumbs_dir)
    with PILImage.open(path) as thumb:
        assert max(thumb.size) <= 256
    assert caption.endswith("img4.png") and "unlabelled" in caption
    assert ids == [image_ids(studio)["img4.png"]]
    assert ("Untagged (5)", "untagged") in filters["choices"]
    # past the end: clamped to the last page
    assert browse_tab.show_page(studio, PROJECT, "all", 9)["page"] == 2


def test_gallery_filters_and_captions_follow_labels(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    cat = labeling.get_project(studio, project).classes[1].id
    labeling.set_image_tags(studio, ids["img1.png"], [cat])
    publish_pseudo_labels(studio, {"img1.png": 0.3, "img3.png": 0.9})
    labeling.save_mask(studio, ids["img3.png"], np.zeros((30, 40), np.uint8))
    tagged = browse_tab.show_page(studio, project, "tagged", 0)
    assert tagged["page_ids"] == [ids["img1.png"]]
    assert tagged["gallery"][0][1] == "🏷 1 ◐ 0.30 · img1.png"  # per-image status on the tile
    assert (
        browse_tab.show_page(studio, project, "has_mask", 0)["gallery"][0][1]
        == "▣ mask ◐ 0.90 · img3.png"
    )
    assert browse_tab.show_page(studio, project, "low_confidence", 0)["page_ids"] == [ids["img1.png"]]
    empty = browse_tab.show_page(studio, project, "untagged", 9)
    assert len(empty["page_ids"]) == 4


def test_clicking_a_tile_chooses_its_image(studio: Studio, project: str) -> None:
    event = gr.SelectData(None, {"index": 1, "value": None})
    assert browse_tab.select_image([11, 12, 13], event) == 12
    text = browse_tab.describe_image(studio, image_ids(studio)["img0.png"])
    assert "img0.png" in text and "no mask" in text


# --- tag ---------------------------------------------------------------------------------------


def test_tag_view_starts_at_the_first_untagged_image_without_background(studio: Studio, project: str) -> None:
    shown = tag_tab.show(studio, project, None)
    assert shown["current_image"] == image_ids(studio)["img0.png"]
    assert Path(shown["picture"]).is_file() and "not tagged" in shown["title"]
    # keys 1-9 are shown on the boxes
    assert [name for name, _ in shown["classes"]["choices"]] == ["1 · cat", "2 · dog"]
    assert shown["classes"]["value"] == []


def test_save_and_next_stores_tags_and_moves_on(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    dog = labeling.get_project(studio, project).classes[2].id
    opened = tag_tab.show(studio, project, ids["img0.png"])["shown"]
    shown = tag_tab.save(studio, project, ids["img0.png"], opened, [dog], move="next_untagged")
    assert labeling.get_image_tags(studio, ids["img0.png"]) == [dog]
    assert shown["current_image"] == ids["img1.png"] and shown["classes"]["value"] == []
    assert shown["status"] == "Saved 1 tag(s) to img0.png."  # names the image: another one shows
    assert shown["shown"]["image_id"] == ids["img1.png"]
    assert tag_tab.show(studio, project, ids["img1.png"], "next")["status"] == ""  # no stale line

    def moved(name: str, move: str) -> int:
        return tag_tab.show(studio, project, ids[name], move)["current_image"]

    # skipping img1 leads to img2; from the last untagged image it wraps around
    assert moved("img1.png", "next_untagged") == ids["img2.png"]
    assert moved("img4.png", "next_untagged") == ids["img1.png"]
    # previous goes back by name, whatever the tags
    assert moved("img1.png", "previous") == ids["img0.png"]


def test_an_image_saved_with_no_tags_is_not_offered_again(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    cat = labeling.get_project(studio, project).classes[1].id
    for name in ("img1.png", "img2.png", "img3.png"):
        labeling.set_image_tags(studio, ids[name], [cat])
    # img0 and img4 untagged: saving img0 with nothing checked moves to img4, and from img4 with a
    # tag the old code came back to img0 for ever
    shown = tag_tab.save(studio, project, ids["img0.png"], None, [], move="next_untagged")
    assert "checked, no tags" in shown["status"] and shown["current_image"] == ids["img4.png"]
    last = tag_tab.save(studio, project, ids["img4.png"], shown["shown"], [cat], move="next_untagged")
    assert "Every other image is tagged" in last["status"]
    assert labeling.get_image_tags(studio, ids["img0.png"]) == []
    # the check is stored, not kept by one page: a fresh page (no state) does not offer img0 either
    fresh = tag_tab.show(studio, project, ids["img3.png"], "next_untagged")
    assert fresh["current_image"] == ids["img3.png"]  # nothing untagged is left
    # its title says it was checked, and the header counts it
    assert "checked: no tags" in tag_tab.show(studio, project, ids["img0.png"])["title"]
    assert "5 tagged" in projects_tab.project_summary(studio, project)


def test_tags_saved_from_an_older_view_are_refused(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    cat, dog = (c.id for c in labeling.get_project(studio, project).classes[1:3])
    first = tag_tab.show(studio, project, ids["img0.png"])["shown"]
    second = tag_tab.show(studio, project, ids["img0.png"])["shown"]  # another tab, same image
    tag_tab.save(studio, project, ids["img0.png"], first, [cat])
    refused = tag_tab.save(studio, project, ids["img0.png"], second, [dog])
    assert refused == {"status": refused["status"]} and "Not saved" in refused["status"]
    assert labeling.get_image_tags(studio, ids["img0.png"]) == [cat]
    # a view of another image than the chosen one saves nothing
    other = tag_tab.save(studio, project, ids["img1.png"], first, [dog])
    assert "another image" in other["status"] and labeling.get_image_tags(studio, ids["img1.png"]) == []


# --- paint -------------------------------------------------------------------------------------


def _save(*args: object) -> dict:
    return paint_tab.save_painting(*args)


def _refused(result: dict, why: str) -> None:
    """A refused save: nothing but the status line, which says why."""
    assert list(result) == ["status"] and "Not saved" in result["status"]
    assert re.search(why, result["status"]), result["status"]


def _sent(opened: dict, rows: slice, cols: slice, value: int) -> str:
    """What the editor's Save sends after painting a rectangle with class ``value``."""
    doc = json.loads(opened["load"])
    labels = np.zeros((doc["height"], doc["width"]), np.uint8)
    painted = np.zeros_like(labels, dtype=bool)
    labels[rows, cols], painted[rows, cols] = value, True
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 3] = labels, np.where(painted, 255, 0), 255
    return json.dumps(
        {"token": doc["token"], "image_id": doc["image_id"], "version": doc["version"], "png": data_url(rgba)}
    )


def test_editor_opens_with_the_palette_and_resets_per_image_options(studio: Studio, project: str) -> None:
    opened = paint_tab.load_editor(studio, project, None, None)
    doc = json.loads(opened["load"])
    info = labeling.get_project(studio, project)
    assert [c["color"] for c in doc["classes"][:3]] == [c.color for c in info.classes]
    assert [c["key"] for c in doc["classes"]] == ["1", "2", "3", "u"]
    assert doc["background"] == 0 and all(r.startswith("data:image/png") for r in doc["regions"])
    assert "starting from nothing" in opened["title"]
    assert opened["session"]["image_id"] == image_ids(studio)["img0.png"] == doc["image_id"]
    assert opened["rest_background"] is False  # "unpainted pixels are background" starts unticked


def test_painted_stroke_is_stored_as_mask_pixels(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img2.png"]
    opened = paint_tab.load_editor(studio, project, image_id, paint_tab.START_EMPTY)
    sent = _sent(opened, slice(5, 10), slice(0, 40), 2)
    saved = _save(studio, project, opened["session"], sent, False)
    mask = labeling.get_mask(studio, image_id)
    assert (mask[5:10] == 2).all()
    assert (mask[:5] == IGNORE_INDEX).all() and (mask[10:] == IGNORE_INDEX).all()
    assert "16.7%" in saved["status"] and "unknown" in saved["status"]
    # saving again from the same page is fine: the session took the new version
    _save(studio, project, saved["session"], sent, True)
    mask = labeling.get_mask(studio, image_id)
    assert (mask[5:10] == 2).all() and (mask[10:] == 0).all()


def test_saving_twice_applies_the_painting_to_the_same_start(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    start = np.full((30, 40), 1, np.uint8)
    labeling.save_mask(studio, image_id, start)
    opened = paint_tab.load_editor(studio, project, image_id, paint_tab.START_MASK)
    saved = _save(studio, project, opened["session"], _sent(opened, slice(0, 10), slice(0, 40), 2), False)
    # the user erases the stroke and saves again: the pixels go back to the starting mask
    _save(studio, project, saved["session"], _sent(opened, slice(0, 0), slice(0, 0), 2), False)
    np.testing.assert_array_equal(labeling.get_mask(studio, image_id), start)


def test_correcting_a_pseudo_label_starts_from_it(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img1.png"]
    publish_pseudo_labels(studio, {"img1.png": 0.6})
    opened = paint_tab.load_editor(studio, project, image_id, paint_tab.START_PSEUDO)
    assert "pseudo-label" in opened["title"]
    _save(studio, project, opened["session"], _sent(opened, slice(0, 5), slice(0, 40), 1), False)
    mask = labeling.get_mask(studio, image_id)
    assert (mask[:5] == 1).all() and (mask[5:15] == 2).all() and (mask[15:] == 1).all()


def test_large_image_is_painted_downscaled_and_saved_full_size(studio: Studio, tmp_path: Path) -> None:
    make_project(studio, tmp_path, count=1, size=(1536, 2048))
    image_id = image_ids(studio)["img0.png"]
    opened = paint_tab.load_editor(studio, PROJECT, image_id, None)
    doc = json.loads(opened["load"])
    assert (doc["height"], doc["width"]) == (768, 1024) and "saved at full size" in opened["title"]
    _save(studio, PROJECT, opened["session"], _sent(opened, slice(100, 110), slice(0, 512), 1), False)
    mask = labeling.get_mask(studio, image_id)
    assert mask.shape == (1536, 2048)
    rows, cols = np.nonzero(mask == 1)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (200, 219, 0, 1023)


def test_saving_with_nothing_painted_is_a_visible_error(studio: Studio, project: str) -> None:
    opened = paint_tab.load_editor(studio, project, None, paint_tab.START_EMPTY)
    sent = _sent(opened, slice(0, 0), slice(0, 0), 1)
    _refused(_save(studio, project, opened["session"], sent, False), "labels no pixel")


def test_a_save_while_the_editor_loads_or_shows_another_image_is_refused(
    studio: Studio, project: str
) -> None:
    ids = image_ids(studio)
    first = paint_tab.load_editor(studio, project, ids["img0.png"], None)
    second = paint_tab.load_editor(studio, project, ids["img1.png"], None)
    loading = json.dumps({"loading": True, "token": "x"})
    _refused(_save(studio, project, second["session"], loading, True), "still loading")
    # the canvas still holds img0 while the page's session is already img1's (the old trap)
    sent = _sent(first, slice(0, 5), slice(0, 5), 1)
    _refused(_save(studio, project, second["session"], sent, True), "another image")
    assert (
        labeling.get_mask(studio, ids["img0.png"]) is None
        and labeling.get_mask(studio, ids["img1.png"]) is None
    )


def test_an_image_opened_twice_at_once_saves_the_copy_the_editor_shows(
    studio: Studio, project: str
) -> None:
    """Review's "Correct in editor" and the Paint tab's own select both load the image: the
    page keeps whichever session came last while the canvas may show the other copy (the e2e
    failed on "another image" at that step)."""
    image_id = image_ids(studio)["img0.png"]
    shown = paint_tab.load_editor(studio, project, image_id, paint_tab.START_EMPTY)
    late = paint_tab.load_editor(studio, project, image_id, paint_tab.START_EMPTY)
    assert json.loads(shown["load"])["opened"] != json.loads(late["load"])["opened"]  # both reopen
    _save(studio, project, late["session"], _sent(shown, slice(0, 5), slice(0, 40), 2), False)
    assert (labeling.get_mask(studio, image_id)[:5] == 2).all()
    # from another start (or after the mask changed) it is another painting: refused
    labeled = paint_tab.load_editor(studio, project, image_id, paint_tab.START_MASK)
    again = paint_tab.load_editor(studio, project, image_id, paint_tab.START_EMPTY)
    sent = _sent(labeled, slice(0, 5), slice(0, 40), 1)
    _refused(_save(studio, project, again["session"], sent, False), "another image")


def test_two_pages_painting_one_image_the_later_save_is_refused(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    page_a = paint_tab.load_editor(studio, project, image_id, None)
    page_b = paint_tab.load_editor(studio, project, image_id, None)
    _save(studio, project, page_b["session"], _sent(page_b, slice(0, 5), slice(0, 40), 2), False)
    sent = _sent(page_a, slice(5, 9), slice(0, 40), 1)
    _refused(_save(studio, project, page_a["session"], sent, False), "changed since you opened it")
    mask = labeling.get_mask(studio, image_id)
    assert (mask[:5] == 2).all() and (mask[5:] == IGNORE_INDEX).all()  # page b's save stands


def test_clear_mask_deletes_it_and_reopens_the_image_empty(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    labeling.save_mask(studio, image_id, np.ones((30, 40), np.uint8))
    opened = paint_tab.load_editor(studio, project, image_id, None)
    cleared = paint_tab.clear_mask(studio, project, opened["session"])
    assert "Deleted" in cleared["status"] and labeling.get_mask(studio, image_id) is None
    assert json.loads(cleared["load"])["labels"] is None


def test_next_without_mask_skips_masked_images(studio: Studio, project: str) -> None:
    ids = image_ids(studio)
    labeling.save_mask(studio, ids["img1.png"], np.zeros((30, 40), np.uint8))
    assert (
        paint_tab.next_without_mask(studio, project, ids["img0.png"])["current_image"] == ids["img2.png"]
    )


def test_returning_to_the_paint_tab_keeps_unsaved_strokes(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    opened = paint_tab.load_editor(studio, project, image_id, None)
    assert paint_tab.open_editor(studio, project, image_id, None, opened["session"]) == {}
    other = paint_tab.open_editor(
        studio, project, image_ids(studio)["img1.png"], None, opened["session"]
    )
    assert other["session"]["image_id"] == image_ids(studio)["img1.png"]


def test_server_folder_import_of_a_label_studio_export(studio: Studio, tmp_path: Path,
                                                       immediate_jobs: None) -> None:
    from app.tabs import export as export_tab

    labeling.create_project(studio, PROJECT, ["cat", "dog"])
    folder = write_images(tmp_path / "photos", 2)[0].parent
    export = tmp_path / "ls.json"
    choices = {"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}
    export.write_text(json.dumps([{"id": 1, "data": {"image": "/data/upload/1/abcdef12-img1.png"},
                                   "annotations": [{"id": 3, "result": [choices]}]}]))
    studio.import_roots = (tmp_path.resolve(),)
    status, _, _ = import_tab.import_folder(studio, PROJECT, str(folder), "", "", "", "", str(export))
    assert "succeeded" in status
    assert labeling.image_counts(studio, PROJECT)["tagged"] == 1
    shown = export_tab.start_export(studio, "label-studio", PROJECT, "best")
    names = sorted(Path(p).name for p in shown["download"])
    assert names[0].endswith(".json") and names[1].endswith("_config.xml")
    tasks = json.loads(Path(sorted(shown["download"])[0]).read_text())
    tagged = {t["data"]["slrnet_name"]: t["annotations"][0]["result"][0]["value"]["choices"]
              for t in tasks if "annotations" in t}
    assert tagged == {"img1.png": ["dog"]} and len(tasks) == 2
