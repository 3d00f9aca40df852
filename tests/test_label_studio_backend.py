"""The Label Studio ML backend over HTTP (FastAPI's TestClient): health, setup, webhooks that sync
annotations, training queued at once, predictions in Label Studio's RLE, basic auth."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.label_studio_backend import BackendSettings, create_app
from jobs.views import get_job, list_jobs
from services import label_studio as ls
from services.context import Studio
from services.errors import UserError
from services.formats.label_studio import labelling_config, parse_label_config
from services.formats.label_studio_rle import decode_mask, encode_mask
from slrnet.config import IGNORE_INDEX
from storage.images import all_images
from storage.labels import put_pseudo_label
from storage.models import TrainingRun
from storage.projects import get_project_by_name, list_classes
from tests.image_bytes import image_bytes
from tests.label_studio_support import project_labels

CONFIG = labelling_config(["background", "cat", "dog"])
W, H = 48, 32
IMAGES = {"/data/upload/5/aaaaaaaa-one.jpg": image_bytes(W, H, seed=1),
          "/data/upload/5/bbbbbbbb-two.jpg": image_bytes(W, H, seed=2)}
LS_PROJECT = {"id": 5, "label_config": CONFIG}


@pytest.fixture()
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Task images come from IMAGES instead of a Label Studio; the URLs asked for are listed."""
    asked: list[str] = []

    def fetch(link: ls.LabelStudioLink, url: str) -> bytes:
        asked.append(url)
        assert link.api_key == "key"
        return IMAGES[url]

    monkeypatch.setattr(ls, "fetch_image", fetch)
    return asked


@pytest.fixture()
def client(studio: Studio) -> TestClient:
    settings = BackendSettings(link=ls.LabelStudioLink("http://ls.test", "key"))
    return TestClient(create_app(studio, settings))


def _annotation(annotation_id: int, cat: np.ndarray | None, tags: list[str]) -> dict:
    result = []
    if cat is not None:
        result.append({"from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": W,
                       "original_height": H,
                       "value": {"format": "rle", "rle": encode_mask(cat), "brushlabels": ["cat"]}})
    if tags:
        result.append({"from_name": "tags", "to_name": "image", "type": "choices",
                       "value": {"choices": tags}})
    return {"id": annotation_id, "result": result}


def _event(action: str, task_id: int, url: str, annotation: dict) -> dict:
    return {"action": action, "project": LS_PROJECT, "task": {"id": task_id, "data": {"image": url}},
            "annotation": annotation}


def test_health_and_setup_make_the_project(client: TestClient, studio: Studio):
    assert client.get("/health").json()["status"] == "UP"
    answer = client.post("/setup", json={"project": "5.1700000000", "schema": CONFIG})
    assert answer.status_code == 200 and answer.json() == {"model_version": "slrnet-untrained"}
    with studio.Session() as session:
        row = get_project_by_name(session, "label-studio-5")
        assert [c.name for c in list_classes(session, row.id)] == ["background", "cat", "dog"]


def test_annotation_events_sync_labels(client: TestClient, studio: Studio, fetched: list[str]):
    url = "/data/upload/5/aaaaaaaa-one.jpg"
    cat = np.zeros((H, W), bool)
    cat[4:20, 8:30] = True
    answer = client.post("/webhook", json=_event("ANNOTATION_CREATED", 1, url, _annotation(11, cat, ["dog"])))
    assert answer.status_code == 201
    client.app.state.backend.drain(30)
    expected = np.full((H, W), IGNORE_INDEX, np.uint8)
    expected[cat] = 1
    (mask, tags), = project_labels(studio, "label-studio-5").values()
    assert np.array_equal(mask, expected) and tags == {"dog"}

    client.post("/webhook", json=_event("ANNOTATION_UPDATED", 1, url, _annotation(11, None, ["cat"])))
    client.app.state.backend.drain(30)
    assert list(project_labels(studio, "label-studio-5").values()) == [(None, {"cat"})]
    assert fetched == [url, url]  # fetched each time, stored once by content
    client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": LS_PROJECT,
                                  "annotations": [{"id": 11}]})
    client.app.state.backend.drain(30)
    assert list(project_labels(studio, "label-studio-5").values()) == [(None, set())]


def test_unknown_labels_are_not_applied(client: TestClient, studio: Studio, fetched: list[str]):
    annotation = _annotation(12, None, ["zebra"])
    event = _event("ANNOTATION_CREATED", 2, "/data/upload/5/bbbbbbbb-two.jpg", annotation)
    client.post("/webhook", json=event)
    client.app.state.backend.drain(30)
    assert all(tags == set() for _, tags in project_labels(studio, "label-studio-5").values())


def test_start_training_queues_a_job_at_once(client: TestClient, studio: Studio, fetched: list[str]):
    client.post("/webhook", json=_event("ANNOTATION_CREATED", 1, "/data/upload/5/aaaaaaaa-one.jpg",
                                        _annotation(11, None, ["cat"])))
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": LS_PROJECT})
    assert answer.status_code == 201
    job = get_job(studio, int(answer.json()["job"]))
    assert (job.kind, job.status, job.project) == ("train", "queued", "label-studio-5")
    other = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": LS_PROJECT})
    assert other.status_code == 200 and other.json()["status"] == "ignored"


def test_predict_returns_rle_regions_with_scores(client: TestClient, studio: Studio, fetched: list[str]):
    tasks = [{"id": 1, "data": {"image": "/data/upload/5/aaaaaaaa-one.jpg"}}]
    answer = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "5.17"})
    assert answer.status_code == 200 and answer.json()["results"] == []  # no model yet: no predictions
    pseudo = np.zeros((H, W), np.uint8)
    pseudo[:, W // 2:] = 2
    pseudo[0, :] = IGNORE_INDEX
    with studio.Session.begin() as session:
        row = get_project_by_name(session, "label-studio-5")
        run = TrainingRun(project_id=row.id, version=3, mode="ssss", backbone="b", status="published",
                          published_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        image = all_images(session, row.id)[0]
        put_pseudo_label(session, image.id, run.id, pseudo, np.full((H, W), 0.6, np.float32))
    answer = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "5.17"}).json()
    assert answer["model_version"] == "slrnet-v3"
    (prediction,) = answer["results"]
    assert prediction["score"] == pytest.approx(0.4, abs=0.01)  # uncertainty: 1 - confidence
    regions = {r["value"]["brushlabels"][0]: r for r in prediction["result"]}
    assert set(regions) == {"background", "dog"}
    for name, value in (("background", 0), ("dog", 2)):
        assert regions[name]["from_name"] == "mask" and regions[name]["score"] == pytest.approx(0.6, abs=0.01)
        assert np.array_equal(decode_mask(regions[name]["value"]["rle"], W, H), pseudo == value)


def test_basic_auth(studio: Studio):
    client = TestClient(create_app(studio, BackendSettings(auth="ls:secret")))
    assert client.get("/health").status_code == 401
    good = base64.b64encode(b"ls:secret").decode()
    bad = base64.b64encode(b"ls:wrong").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/health", headers={"Authorization": f"Basic {good}"}).status_code == 200


def test_bad_requests_answer_one_line(client: TestClient):
    answer = client.post("/setup", json={"project": "5.1", "schema": "<View/>"})
    assert answer.status_code == 400 and "no <Image" in answer.json()["error"]
    assert client.post("/predict", content=b"not json").status_code == 400


def test_bulk_annotations_created(client: TestClient, studio: Studio, fetched: list[str]):
    urls = list(IMAGES)
    tasks = [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(urls)]
    annotations = [{**_annotation(20 + i, None, ["dog"]), "task": i + 1} for i in range(2)]
    answer = client.post("/webhook", json={"action": "ANNOTATIONS_CREATED", "project": LS_PROJECT,
                                           "annotation": annotations, "task": tasks})
    assert answer.status_code == 201
    client.app.state.backend.drain(30)
    assert sorted(tags for _, tags in project_labels(studio, "label-studio-5").values()) == [{"dog"}, {"dog"}]


def _transport(seen: list[httpx.Request], image: bytes = b"png") -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/token/refresh/":
            assert json.loads(request.content) == {"refresh": "a.b.c"}
            return httpx.Response(200, json={"access": "fresh"})
        return httpx.Response(200, content=image)
    return httpx.MockTransport(handle)


def test_fetching_images_from_label_studio():
    seen: list[httpx.Request] = []
    legacy = ls.LabelStudioLink("http://ls.test:8080", "tok")
    assert ls.fetch_image(legacy, "/data/upload/1/x.png", transport=_transport(seen)) == b"png"
    assert str(seen[-1].url) == "http://ls.test:8080/data/upload/1/x.png"
    assert seen[-1].headers["authorization"] == "Token tok"
    ls.fetch_image(legacy, "https://elsewhere.test/x.png", transport=_transport(seen))
    assert "authorization" not in seen[-1].headers  # the key goes to Label Studio only
    personal = ls.LabelStudioLink("http://ls.test:8080", "a.b.c")  # a personal access token (JWT)
    ls.fetch_image(personal, "/data/upload/1/x.png", transport=_transport(seen))
    assert seen[-1].headers["authorization"] == "Bearer fresh"
    with pytest.raises(UserError, match="give its URL"):
        ls.fetch_image(ls.LabelStudioLink(), "/data/upload/1/x.png")


def test_oversized_images_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ls, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(UserError, match="larger than"):
        ls.fetch_image(ls.LabelStudioLink("http://ls.test"), "/x.png", transport=_transport([], b"x" * 11))


def test_training_after_every_n_annotations(studio: Studio, fetched: list[str]):
    client = TestClient(create_app(studio, BackendSettings(link=ls.LabelStudioLink("http://ls.test", "key"),
                                                           train_every=2)))
    for i, url in enumerate(IMAGES):
        event = _event("ANNOTATION_CREATED", i + 1, url, _annotation(30 + i, None, ["cat"]))
        client.post("/webhook", json=event)
        client.app.state.backend.drain(30)
        trains = [j for j in list_jobs(studio) if j.kind == "train"]
        assert len(trains) == i  # none after the first annotation, one after the second


def test_predict_stops_at_its_time_budget_and_says_so(studio: Studio, fetched: list[str]):
    config = parse_label_config(CONFIG)
    tasks = [{"id": 1, "data": {"image": url}} for url in IMAGES]
    with pytest.raises(UserError, match=r"stored 0 of 2 task images .* ask again"):
        ls.predict_tasks(studio, "p", config, tasks, ls.LabelStudioLink("http://ls.test", "key"), budget_s=-1)
    assert fetched == []


def test_a_tags_only_project_gets_its_predicted_tags(studio: Studio, fetched: list[str]):
    from storage.labels import set_tags

    config_xml = labelling_config(["cat", "dog"], masks=False)
    client = TestClient(create_app(studio, BackendSettings(link=ls.LabelStudioLink("http://ls.test", "key"))))
    tasks = [{"id": 1, "data": {"image": "/data/upload/5/aaaaaaaa-one.jpg"}}]
    client.post("/predict", json={"tasks": tasks, "label_config": config_xml, "project": "6.1"})
    with studio.Session.begin() as session:
        row = get_project_by_name(session, "label-studio-6")
        run = TrainingRun(project_id=row.id, version=1, mode="wsss", backbone="b", status="published",
                          published_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        image = all_images(session, row.id)[0]
        confidence = np.full((H, W), 0.9, np.float32)
        put_pseudo_label(session, image.id, run.id, np.zeros((H, W), np.uint8), confidence)
        dog = next(c for c in list_classes(session, row.id) if c.name == "dog")
        set_tags(session, image.id, [dog.id], "model", scores={dog.id: 0.8}, run_id=run.id)
    answer = client.post("/predict", json={"tasks": tasks, "label_config": config_xml, "project": "6.1"})
    (prediction,) = answer.json()["results"]
    (result,) = prediction["result"]
    assert (result["from_name"], result["type"], result["value"]) == ("tags", "choices", {"choices": ["dog"]})
