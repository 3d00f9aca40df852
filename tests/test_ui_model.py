"""UI handlers of the model screens (train, review, export) on a temp Studio."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from app import polling, ui
from app.job_display import loss_frame
from app.tabs import export as export_tab
from app.tabs import review as review_tab
from app.tabs import train as train_tab
from app.tabs.paint import START_PSEUDO
from jobs import queue
from jobs.views import get_job
from services import labeling
from services.context import Studio
from slrnet.config import IGNORE_INDEX
from tests.ui_support import image_ids, make_project, publish_pseudo_labels


@pytest.fixture()
def project(studio: Studio, tmp_path: Path) -> str:
    return make_project(studio, tmp_path)


@pytest.fixture()
def queued_jobs(studio: Studio) -> Iterator[None]:
    """Jobs go to the studio's queue and stay there: no consumer runs."""
    queue.set_immediate(False)
    queue.bind(studio)
    yield
    queue.unbind()


@pytest.fixture()
def immediate_jobs() -> Iterator[None]:
    queue.set_immediate(True)
    yield
    queue.set_immediate(False)


def _tag(studio: Studio, project: str, name: str, class_index: int) -> None:
    class_id = labeling.get_project(studio, project).classes[class_index].id
    labeling.set_image_tags(studio, image_ids(studio)[name], [class_id])


# --- train -------------------------------------------------------------------------------------


def test_plan_says_why_it_cannot_train_without_labels(studio: Studio, project: str) -> None:
    assert "no labels yet" in train_tab.plan_markdown(studio, project, "auto")


def test_plan_names_the_mode_and_the_reason(studio: Studio, project: str) -> None:
    _tag(studio, project, "img0.png", 1)
    assert "**wsss**" in train_tab.plan_markdown(studio, project, "auto")
    labeling.save_mask(studio, image_ids(studio)["img1.png"], np.zeros((30, 40), np.uint8))
    text = train_tab.plan_markdown(studio, project, "auto")
    assert "**ssss_tags**" in text and "1 image(s) with masks and 1 with tags" in text
    assert "needs images with masks and images with tags" not in text
    assert "mode wsss chosen by hand" in train_tab.plan_markdown(studio, project, "wsss")


def test_train_button_queues_a_job_and_the_timer_follows_it(
    studio: Studio, project: str, queued_jobs: None
) -> None:
    _tag(studio, project, "img0.png", 1)
    shown = train_tab.start_training(studio, project, "auto", "tiny", 1, 64, "cpu")
    status, cancel, seen = shown["status"], shown["cancel"], shown["seen"]
    assert "queued" in status and "Train on my labels" in status
    assert cancel["interactive"] is True
    job = polling.latest_model_job(studio, project)
    options = job.params["options"]
    assert (options["mode"], options["backbone"], options["epochs"], options["image_size"]) == (
        "auto",
        "tiny",
        1,
        64,
    )
    assert options["device"] == "cpu"
    assert train_tab.poll_training(studio, project, seen) == {}  # nothing changed: no redraw
    with pytest.raises(gr.Error, match="already queued"):
        train_tab.start_training(studio, project, "auto", "", None, None)
    cancelled = train_tab.cancel_training(studio, project)
    assert "cancelled" in cancelled["status"] and cancelled["cancel"]["interactive"] is False
    assert get_job(studio, job.id).status == "cancelled"


def test_poll_draws_the_loss_curve_and_eta(studio: Studio, project: str, queued_jobs: None) -> None:
    from storage import jobs as job_rows

    _tag(studio, project, "img0.png", 1)
    train_tab.start_training(studio, project, "auto", "", None, None)
    job = polling.latest_model_job(studio, project)
    with studio.Session.begin() as session:
        row = job_rows.get_job(session, job.id)
        row.status, row.progress, row.message = "running", 0.5, "epoch 1/2"
        row.metrics = {
            "eta_s": 125.0,
            "loss_curve": [
                {"fraction": 0.1, "step": 1, "total": 2.0, "cls": 1.5},
                {"fraction": 0.5, "step": 2, "total": 1.0, "cls": 0.7},
            ],
        }
    shown = ui.poll_jobs(studio, project, None, [], None, None, None)
    assert "running" in shown["train_status"] and "epoch 1/2" in shown["train_status"]
    assert "about 2 min left" in shown["train_status"]
    assert 'aria-valuenow="50"' in shown["train_progress"]
    # the chart is plain SVG, one drawn path per loss term, in the very tick that got the points
    lines = re.findall(
        r'<path class="loss-line" data-term="(\w+)" d="M([\d.]+),([\d.]+) L([\d.]+),([\d.]+)"',
        shown["train_loss"],
    )
    assert sorted(term for term, *_ in lines) == ["cls", "total"]
    total = next(points for term, *points in lines if term == "total")
    assert float(total[1]) < float(total[3])  # the loss fell: the line goes down (larger y)
    assert "**5** images" in shown["summary"] and shown["timer"].active is True
    curve = loss_frame(polling.latest_model_job(studio, project))
    assert curve[curve.term == "total"]["loss"].tolist() == [2.0, 1.0]


def test_train_refuses_bad_options(studio: Studio, project: str, queued_jobs: None) -> None:
    _tag(studio, project, "img0.png", 1)
    with pytest.raises(gr.Error, match="positive whole number"):
        train_tab.start_training(studio, project, "auto", "", 1.5, None)


# --- review ------------------------------------------------------------------------------------


def test_review_without_a_model_says_so(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    shown = review_tab.show(studio, project, image_id, 0.5)
    assert shown["picture"].shape == (768, 1024, 3) and shown["legend"] == ""  # 40x30 scaled up to the view
    assert "no pseudo-label yet" in shown["title"]


def _rgb(color: str) -> tuple[int, ...]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def test_review_overlays_the_pseudo_label_with_a_legend(studio: Studio, project: str) -> None:
    publish_pseudo_labels(studio, {"img0.png": 0.8})
    image_id = image_ids(studio)["img0.png"]
    shown = review_tab.show(studio, project, image_id, 1.0)
    info = labeling.get_project(studio, project)
    picture = shown["picture"]
    assert tuple(picture[0, 0]) == _rgb(info.classes[2].color)
    assert tuple(picture[-1, 0]) == _rgb(info.classes[1].color)
    assert "dog" in shown["legend"] and "cat" in shown["legend"] and "80%" in shown["legend"]
    assert "model v1" in shown["title"] and "0.80" in shown["title"]
    # the opacity slider blends the cached picture again, reading nothing
    faint = review_tab.reblend(shown["cache"], 0.0)["picture"]
    assert not np.array_equal(faint, picture) and faint.shape == picture.shape


def test_background_is_not_painted_over_the_photo(studio: Studio, project: str) -> None:
    image_id = image_ids(studio)["img0.png"]
    with studio.Session.begin() as session:
        from storage import runs as run_repo
        from storage.labels import put_pseudo_label

        run = run_repo.create_run(session, 1, mode="wsss", backbone="tiny", config={})
        run_repo.mark_trained(session, run)
        put_pseudo_label(
            session, image_id, run.id, np.zeros((30, 40), np.uint8), np.full((30, 40), 0.9, np.float32)
        )
        run_repo.mark_published(session, run)
    shown = review_tab.show(studio, project, image_id, 1.0)
    photo = review_tab.show(studio, project, image_id, 0.0)["picture"]
    np.testing.assert_array_equal(shown["picture"], photo)  # all background: the photo as it is


def test_accept_turns_the_pseudo_label_into_a_mask(studio: Studio, project: str) -> None:
    publish_pseudo_labels(studio, {"img0.png": 0.8})
    image_id = image_ids(studio)["img0.png"]
    shown = review_tab.accept(studio, project, image_id, 0.5)
    assert "Accepted" in shown["status"] and "accepted" in shown["title"]
    mask = labeling.get_mask(studio, image_id)
    assert (mask[:15] == 2).all() and (mask[15:] == 1).all() and not (mask == IGNORE_INDEX).any()


def test_accept_the_confident_pixels_leaves_the_rest_unknown(studio: Studio, project: str) -> None:
    from services import review
    from services.errors import UserError
    from slrnet.config import CONFIDENT_FROM
    from storage.labels import put_pseudo_label

    run_id = publish_pseudo_labels(studio, {"img0.png": 0.8, "img1.png": CONFIDENT_FROM / 2})
    ids = image_ids(studio)
    with studio.Session.begin() as session:  # img0: confident on its left half only
        confidence = np.full((30, 40), CONFIDENT_FROM - 0.1, np.float32)
        confidence[:, :20] = CONFIDENT_FROM
        labels = np.full((30, 40), 1, np.uint8)
        labels[:15] = 2
        put_pseudo_label(session, ids["img0.png"], run_id, labels, confidence)
    shown = review_tab.accept(studio, project, ids["img0.png"], 0.5, confident_only=True)
    assert "confident pixels" in shown["status"]
    mask = labeling.get_mask(studio, ids["img0.png"])
    np.testing.assert_array_equal(mask[:, :20], labels[:, :20])
    assert (mask[:, 20:] == IGNORE_INDEX).all()
    with pytest.raises(UserError, match="no confident pixel"):  # below the cut-off everywhere
        review.accept_pseudo_label(studio, ids["img1.png"], confident_only=True)
    assert labeling.get_mask(studio, ids["img1.png"]) is None


def test_accept_over_a_painted_mask_needs_an_explicit_overwrite(studio: Studio, project: str) -> None:
    from services import review
    from services.errors import UserError

    publish_pseudo_labels(studio, {"img0.png": 0.8})
    image_id = image_ids(studio)["img0.png"]
    painted = np.full((30, 40), IGNORE_INDEX, np.uint8)
    painted[:5] = 1
    labeling.save_mask(studio, image_id, painted)
    with pytest.raises(UserError, match="has a painted mask"):
        review.accept_pseudo_label(studio, image_id)
    np.testing.assert_array_equal(labeling.get_mask(studio, image_id), painted)  # kept as painted
    assert review.accept_pseudo_label(studio, image_id, overwrite=True) is False
    assert (labeling.get_mask(studio, image_id)[:15] == 2).all()
    assert review.accept_pseudo_label(studio, image_id) is False  # an accepted mask: no question
    labeling.save_mask(studio, image_id, painted)
    asked = review_tab.accept(studio, project, image_id, 0.5)  # the Review tab asks, with a button
    assert "has a painted mask" in asked["status"] and asked["replace"]["visible"] is True
    np.testing.assert_array_equal(labeling.get_mask(studio, image_id), painted)
    replaced = review_tab.accept(studio, project, image_id, 0.5, overwrite=True)
    assert "Accepted" in replaced["status"] and replaced["replace"]["visible"] is False


def test_suggest_next_walks_the_confidence_order_instead_of_flipping(studio: Studio, project: str) -> None:
    publish_pseudo_labels(studio, {"img0.png": 0.9, "img1.png": 0.2, "img2.png": 0.4, "img3.png": 0.1})
    ids = image_ids(studio)
    labeling.save_mask(studio, ids["img3.png"], np.zeros((30, 40), np.uint8))
    # with no image chosen the review screen opens on the suggestion
    first = review_tab.show(studio, project, None, 0.5)["current_image"]
    assert first == ids["img1.png"]
    seen = [first]
    for _ in range(3):
        seen.append(review_tab.show(studio, project, seen[-1], 0.5, move="suggest")["current_image"])
    # the old code flipped img1 -> img2 -> img1 -> img2; now: every unmasked image, then around
    assert seen == [ids["img1.png"], ids["img2.png"], ids["img0.png"], ids["img1.png"]]


def test_review_previous_and_next_go_by_name(studio: Studio, project: str) -> None:
    publish_pseudo_labels(studio, {"img0.png": 0.9, "img2.png": 0.4, "img4.png": 0.1})
    ids = image_ids(studio)
    assert (
        review_tab.show(studio, project, ids["img2.png"], 0.5, move="next")["current_image"]
        == ids["img4.png"]
    )
    assert (
        review_tab.show(studio, project, ids["img0.png"], 0.5, move="previous")["current_image"]
        == (ids["img4.png"])
    )


def test_correct_in_editor_opens_the_paint_tab_on_the_pseudo_label() -> None:
    shown = review_tab.correct_in_editor(7)
    assert shown["tab"].selected == "paint" and shown["start"] == START_PSEUDO and shown["current_image"] == 7
    with pytest.raises(gr.Error):
        review_tab.correct_in_editor(None)


# --- export ------------------------------------------------------------------------------------


def test_coco_export_gives_a_json_download(studio: Studio, project: str, immediate_jobs: None) -> None:
    labeling.save_mask(studio, image_ids(studio)["img0.png"], np.full((30, 40), 2, np.uint8))
    shown = export_tab.start_export(studio, "coco", project, "human")
    dataset, results = shown["download"]
    assert "succeeded" in shown["status"] and dataset.endswith(".json")
    assert results == dataset[: -len(".json")] + "_results.json"  # the results file is offered too
    data = json.loads(Path(dataset).read_text())
    assert [a["category_id"] for a in data["annotations"]] == [2]
    assert isinstance(json.loads(Path(results).read_text()), list)
    assert export_tab.poll_export(studio, shown["job"], shown["seen"]) == {}


def test_voc_export_is_zipped(studio: Studio, project: str, immediate_jobs: None) -> None:
    labeling.save_mask(studio, image_ids(studio)["img0.png"], np.full((30, 40), 1, np.uint8))
    shown = export_tab.start_export(studio, "voc", project, "best")
    (download,), job_id = shown["download"], shown["job"]
    assert download.endswith(".zip")
    with zipfile.ZipFile(download) as zf:
        names = set(zf.namelist())
    assert {"img0.png", "classes.txt"} <= names
    # polling again after the zip exists hands out the same file
    assert export_tab.poll_export(studio, job_id, None)["download"] == [download]


def test_export_needs_a_project(studio: Studio) -> None:
    with pytest.raises(gr.Error, match="choose a project"):
        export_tab.start_export(studio, "coco", None, "best")


# --- following jobs ----------------------------------------------------------------------------


def test_timer_runs_only_while_a_followed_job_is_active(
    studio: Studio, project: str, queued_jobs: None
) -> None:
    idle = polling.follow_jobs(studio, project, [], None)
    assert not isinstance(idle, gr.Timer)  # leaves the timer as it is: a click may have started it
    _tag(studio, project, "img0.png", 1)
    train_tab.start_training(studio, project, "auto", "", None, None)
    assert polling.follow_jobs(studio, project, [], None).active is True
    outputs = ui.poll_jobs(studio, project, None, [], None, None, None)
    assert "queued" in outputs["train_status"] and "**5** images" in outputs["summary"]
    assert "import_status" not in outputs and "export_status" not in outputs  # none followed
    assert outputs["timer"].active is True
    train_tab.cancel_training(studio, project)
    assert ui.poll_jobs(studio, project, None, [], None, None, None)["timer"].active is False


def test_loss_legend_entries_do_not_overlap() -> None:
    from app.job_display import CHART_PAD, CHART_W, LEGEND_CHAR_W, legend_places

    terms = ["cls", "mask_ce", "mask_consistency", "code_consistency", "pseudo", "total", "pseudo_labelled"]
    places = legend_places(terms)
    assert len({y for _, y in places}) == 2 and max(y for _, y in places) < CHART_PAD  # above the plot
    for (x, y), term, (nx, ny) in zip(places, terms, places[1:], strict=False):
        if ny == y:
            assert nx >= x + LEGEND_CHAR_W * (len(term) + 2)
    assert all(x + LEGEND_CHAR_W * (len(t) + 2) <= CHART_W for (x, _), t in zip(places, terms, strict=True))
