"""The export service and CLI on a small synthetic project: sources, layouts, errors, atomicity."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

import launch
from services.context import Studio
from services.errors import UserError
from services.exporting import ExportOptions, export_project
from services.formats.exporters import coco_results_path as results_path
from services.progress import Cancelled
from storage.images import add_image
from storage.labels import put_mask, put_pseudo_label
from storage.models import TrainingRun
from storage.projects import create_project, get_project_by_name, list_classes, set_classes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 6, 8
CLASSES = ["background", "cat", "dog"]


def _map(value: int, ignore: bool = False) -> np.ndarray:
    lm = np.zeros((H, W), np.uint8)
    lm[1:4, 2:6] = value
    if ignore:
        lm[5, :] = 255
    return lm


# image name -> (human mask, current pseudo-label); None = absent
LABELS: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {
    "both.jpg": (_map(1, ignore=True), _map(2)),
    "model_only.jpg": (None, _map(2, ignore=True)),
    "human_only.jpg": (_map(2), None),
    "none.jpg": (None, None),
}


@pytest.fixture()
def labelled(studio: Studio) -> Studio:
    """The conftest studio with project "p": the images of LABELS, three training runs."""
    with studio.Session.begin() as session:
        project = create_project(session, "p")
        set_classes(session, project, CLASSES)
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        old = TrainingRun(project_id=project.id, version=1, mode="ssss", backbone="b", status="published",
                          published_at=t0)
        current = TrainingRun(project_id=project.id, version=2, mode="ssss", backbone="b",
                              status="published", published_at=t0 + timedelta(days=1))
        unpublished = TrainingRun(project_id=project.id, version=3, mode="ssss", backbone="b",
                                  status="trained")
        session.add_all([old, current, unpublished])
        session.flush()
        conf = np.full((H, W), 204, np.uint8)
        for i, (name, (mask, pseudo)) in enumerate(LABELS.items()):
            image = add_image(session, project.id, name=name, sha256=f"{i:064x}", path=f"images/{i}.jpg",
                              width=W, height=H)
            if mask is not None:
                put_mask(session, image.id, mask)
            if pseudo is not None:
                put_pseudo_label(session, image.id, current.id, pseudo, conf)
            # labels of other runs must never be exported
            put_pseudo_label(session, image.id, old.id, _map(1), conf)
            put_pseudo_label(session, image.id, unpublished.id, _map(1), conf)
    return studio


def _coco_maps(path: Path) -> dict[str, np.ndarray]:
    """file_name -> label map rebuilt from the annotations (0 where none)."""
    coco = COCO(str(path))
    maps = {}
    for image_id, img in coco.imgs.items():
        lm = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            lm[coco.annToMask(ann).astype(bool)] = ann["category_id"]
        maps[img["file_name"]] = lm
    return maps


def _no_ignore(lm: np.ndarray) -> np.ndarray:
    return np.where(lm == 255, 0, lm)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("best", {"both.jpg": "human", "model_only.jpg": "model", "human_only.jpg": "human"}),
        ("human", {"both.jpg": "human", "human_only.jpg": "human"}),
        ("model", {"both.jpg": "model", "model_only.jpg": "model"}),
    ],
)
def test_source_picks_labels(labelled: Studio, tmp_path: Path, source: str, expected: dict[str, str]) -> None:
    out = tmp_path / "labels.json"
    report = export_project(labelled, "p", out, ExportOptions(source=source))
    assert report.exported == len(expected)
    assert report.skipped == len(LABELS) - len(expected)
    assert report.from_model == list(expected.values()).count("model")
    maps = _coco_maps(out)
    assert set(maps) == set(expected)
    for name, origin in expected.items():
        mask, pseudo = LABELS[name]
        want = mask if origin == "human" else pseudo
        np.testing.assert_array_equal(maps[name], _no_ignore(want))
    data = json.loads(out.read_text())
    names = {img["id"]: img["file_name"] for img in data["images"]}
    for ann in data["annotations"]:
        if expected[names[ann["image_id"]]] == "model":
            assert ann["model_version"] == 2 and ann["score"] == 0.8
        else:
            assert "model_version" not in ann and "score" not in ann
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def test_results_file_matches_dataset(labelled: Studio, tmp_path: Path) -> None:
    out = tmp_path / "labels.json"
    report = export_project(labelled, "p", out, ExportOptions(source="model"))
    assert report.results == results_path(out) == tmp_path / "labels_results.json"
    results = json.loads(report.results.read_text())
    dataset = json.loads(out.read_text())
    assert len(results) == len(dataset["annotations"]) == report.annotations == 2
    for res, ann in zip(results, dataset["annotations"], strict=True):
        assert res == {k: ann[k] for k in ("image_id", "category_id", "segmentation", "score")}


def test_model_source_needs_a_published_model(labelled: Studio, tmp_path: Path) -> None:
    with labelled.Session.begin() as session:
        session.query(TrainingRun).update({"status": "trained"})
    out = tmp_path / "labels.json"
    with pytest.raises(UserError, match="no published model"):
        export_project(labelled, "p", out, ExportOptions(source="model"))
    assert not out.exists()
    report = export_project(labelled, "p", out, ExportOptions(source="best"))
    assert (report.exported, report.from_model) == (2, 0)


def test_voc_layout(labelled: Studio, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    out.mkdir()  # an empty folder is fine
    report = export_project(labelled, "p", out, ExportOptions(fmt="voc", source="best"))
    assert report.results is None and report.exported == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "both.png", "classes.txt", "human_only.png", "model_only.png"
    ]
    assert (out / "classes.txt").read_text().splitlines() == CLASSES
    np.testing.assert_array_equal(np.array(Image.open(out / "both.png")), LABELS["both.jpg"][0])
    np.testing.assert_array_equal(np.array(Image.open(out / "model_only.png")), LABELS["model_only.jpg"][1])
    assert Image.open(out / "both.png").mode == "L"


def test_voc_palette(labelled: Studio, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    export_project(labelled, "p", out, ExportOptions(fmt="voc", source="human", palette=True))
    image = Image.open(out / "both.png")
    assert image.mode == "P"
    np.testing.assert_array_equal(np.array(image), LABELS["both.jpg"][0])
    with labelled.Session() as session:
        cat = list_classes(session, get_project_by_name(session, "p").id)[1]
    assert "#{:02x}{:02x}{:02x}".format(*image.convert("RGB").getpixel((2, 1))) == cat.color


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmt": "yolo"}, "unknown export format"),
        ({"source": "gold"}, "unknown label source"),
        ({"project": "nope"}, "no project named 'nope'"),
    ],
)
def test_bad_input(labelled: Studio, tmp_path: Path, kwargs: dict[str, str], match: str) -> None:
    project = kwargs.pop("project", "p")
    with pytest.raises(UserError, match=match):
        export_project(labelled, project, tmp_path / "x.json", ExportOptions(**kwargs))
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]


def test_bad_destinations(labelled: Studio, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not an empty folder"):
        export_project(labelled, "p", busy, ExportOptions(fmt="voc"))
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(UserError, match="is a folder"):
        export_project(labelled, "p", busy, ExportOptions(fmt="coco"))
    with pytest.raises(UserError, match="does not exist"):
        export_project(labelled, "p", tmp_path / "missing" / "x.json")


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_cancelled_export_leaves_nothing(labelled: Studio, tmp_path: Path, fmt: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("labels.json" if fmt == "coco" else "voc")
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        export_project(labelled, "p", out, ExportOptions(fmt=fmt), should_stop=lambda: next(calls) >= 2)
    assert list(out_dir.iterdir()) == []


def test_failed_coco_export_keeps_the_previous_file(labelled: Studio, tmp_path: Path) -> None:
    out = tmp_path / "labels.json"
    out.write_text("previous")
    with pytest.raises(Cancelled):
        export_project(labelled, "p", out, should_stop=lambda: True)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "labels.json"]


def test_voc_name_clash_fails_cleanly(labelled: Studio, tmp_path: Path) -> None:
    with labelled.Session.begin() as session:
        project = get_project_by_name(session, "p")
        image = add_image(session, project.id, name="both.png", sha256="f" * 64, path="images/x.png",
                          width=W, height=H)
        put_mask(session, image.id, _map(1))
    out = tmp_path / "voc"
    with pytest.raises(UserError, match=r"both be written as both\.png"):
        export_project(labelled, "p", out, ExportOptions(fmt="voc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_progress_reaches_one(labelled: Studio, tmp_path: Path) -> None:
    seen: list[tuple[float, dict]] = []
    export_project(labelled, "p", tmp_path / "x.json", progress=lambda f, m, x: seen.append((f, x)))
    assert seen[-1] == (1.0, {"exported": 3, "skipped": 1})


def test_cli_export(labelled: Studio, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.json"
    data = ["--data", str(labelled.data_dir), "--project", "p"]
    assert launch.main(["export", str(out), *data, "--source", "human"]) == 0
    line = capsys.readouterr().out.strip()
    assert "exported 2 images" in line and "skipped 2" in line and "\n" not in line
    assert len(COCO(str(out)).getImgIds()) == 2

    assert launch.main(["export", str(tmp_path / "v"), *data, "--format", "voc", "--palette"]) == 0
    assert Image.open(tmp_path / "v" / "both.png").mode == "P"

    assert launch.main(["export", str(tmp_path / "v"), *data, "--format", "voc"]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_export_does_not_import_torch() -> None:
    code = "import sys, services.exporting, launch; sys.exit('torch' in sys.modules)"
    repo_root = Path(launch.__file__).resolve().parent
    assert subprocess.run([sys.executable, "-c", code], cwd=repo_root).returncode == 0


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exports_get_the_permissions_of_the_umask(labelled: Studio, tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        export_project(labelled, "p", tmp_path / "out.json", ExportOptions(fmt="coco", source="best"))
        export_project(labelled, "p", tmp_path / "voc", ExportOptions(fmt="voc", source="best"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "voc").stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "voc").iterdir()} == {0o666 & ~umask}
