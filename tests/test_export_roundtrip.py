"""Round trips on real data: import gold masks, export COCO/VOC, decode or re-import, compare pixels."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.context import Studio
from services.exporting import ExportOptions, export_project
from services.import_options import ImportOptions
from services.importing import import_dataset
from storage.images import all_images
from storage.labels import get_mask_array, put_pseudo_label
from storage.models import TrainingRun
from storage.projects import get_project_by_name

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _open_studio(root: Path) -> Studio:
    return Studio.open(root / "data", database_url=f"sqlite:///{root / 'data' / 'studio.db'}")


@pytest.fixture(scope="module")
def gold(coco128: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A studio whose project "gold" holds coco128 with its gold masks."""
    studio = _open_studio(tmp_path_factory.mktemp("roundtrip"))
    import_dataset(studio, coco128 / "images", ImportOptions(
        classes_file=coco128 / "classes.txt", masks_dir=coco128 / "masks"), project="gold")
    yield studio
    studio.close()


def _masks(studio: Studio, project: str) -> dict[str, np.ndarray]:
    with studio.Session() as session:
        project_id = get_project_by_name(session, project).id
        return {im.name: get_mask_array(session, im.id) for im in all_images(session, project_id)}


def _source_mask(masks_dir: Path, image_name: str) -> np.ndarray:
    return np.array(Image.open(masks_dir / (Path(image_name).stem + ".png")))


def test_coco_export_decodes_to_the_source_masks(gold: Studio, coco128: Path, tmp_path: Path) -> None:
    out = tmp_path / "gold.json"
    report = export_project(gold, "gold", out, ExportOptions(source="human"))
    assert (report.exported, report.skipped) == (128, 0)
    coco = COCO(str(out))
    names = (coco128 / "classes.txt").read_text().splitlines()
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(names))[1:]
    assert len(coco.imgs) == 128
    for image_id, img in coco.imgs.items():
        source = _source_mask(coco128 / "masks", img["file_name"])
        assert source.shape == (img["height"], img["width"])
        coverage = np.zeros(source.shape, np.uint8)
        rebuilt = np.zeros(source.shape, np.uint8)  # background = no annotation
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            binary = coco.annToMask(ann).astype(bool)
            assert ann["area"] == binary.sum() > 0
            coverage += binary
            rebuilt[binary] = ann["category_id"]
        assert coverage.max() <= 1  # one annotation per class, no overlaps
        known = source != 255
        np.testing.assert_array_equal(rebuilt[known], source[known], err_msg=img["file_name"])


def test_coco_export_reimports_identically(gold: Studio, coco128: Path, tmp_path: Path) -> None:
    out = tmp_path / "gold.json"
    export_project(gold, "gold", out, ExportOptions(source="human"))
    import_dataset(gold, coco128 / "images", ImportOptions(coco_json=out), project="from_coco")
    expected, got = _masks(gold, "gold"), _masks(gold, "from_coco")
    assert got.keys() == expected.keys()
    for name, mask in expected.items():
        np.testing.assert_array_equal(got[name], mask, err_msg=name)


@pytest.mark.parametrize("palette", [False, True])
def test_voc_export_matches_sources_and_reimports(
    gold: Studio, coco128: Path, tmp_path: Path, palette: bool
) -> None:
    out = tmp_path / "voc"
    report = export_project(gold, "gold", out, ExportOptions(fmt="voc", source="human", palette=palette))
    assert report.exported == 128
    assert (out / "classes.txt").read_text() == (coco128 / "classes.txt").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(p.name for p in (coco128 / "masks").glob("*.png"))
    for name in pngs:
        np.testing.assert_array_equal(_source_mask(out, name), _source_mask(coco128 / "masks", name))
    project = f"from_voc_{palette}"
    import_dataset(gold, coco128 / "images", ImportOptions(
        classes_file=out / "classes.txt", masks_dir=out), project=project)
    expected, got = _masks(gold, "gold"), _masks(gold, project)
    assert got.keys() == expected.keys()
    for name, mask in expected.items():
        np.testing.assert_array_equal(got[name], mask, err_msg=name)


def _eroded(label_map: np.ndarray, r: int = 3) -> np.ndarray:
    """Pixels within ``r`` of another class become ignore: a plausible, imperfect prediction."""
    padded = np.pad(label_map, r, mode="edge")
    h, w = label_map.shape
    keep = np.ones(label_map.shape, bool)
    for dy, dx in ((-r, 0), (r, 0), (0, -r), (0, r)):
        keep &= padded[r + dy : r + dy + h, r + dx : r + dx + w] == label_map
    return np.where(keep, label_map, 255).astype(np.uint8)


def _segm_ap(gt_path: Path, results_path: Path) -> float:
    gt = COCO(str(gt_path))
    evaluator = COCOeval(gt, gt.loadRes(str(results_path)), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def test_cocoeval_of_exported_pseudo_labels(gold: Studio, tmp_path: Path) -> None:
    with gold.Session.begin() as session:
        project_id = get_project_by_name(session, "gold").id
        run = TrainingRun(project_id=project_id, version=1, mode="wsss", backbone="test",
                          status="published", published_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        for image in all_images(session, project_id):
            pseudo = _eroded(get_mask_array(session, image.id))
            put_pseudo_label(session, image.id, run.id, pseudo, np.full(pseudo.shape, 0.9, np.float32))

    human = export_project(gold, "gold", tmp_path / "gold.json", ExportOptions(source="human"))
    model = export_project(gold, "gold", tmp_path / "model.json", ExportOptions(source="model"))
    assert model.from_model == 128 and model.model_version == 1

    assert _segm_ap(human.out, human.results) == pytest.approx(1.0)  # gold against itself
    ap = _segm_ap(human.out, model.results)
    assert 0.3 < ap < 1.0


def test_camvid_without_background_keeps_ignore_through_coco(camvid: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((camvid / "val" / "images").glob("*.jpg"))[:6]:
        shutil.copy(path, images / path.name)
    studio = _open_studio(tmp_path)
    try:
        import_dataset(studio, images, ImportOptions(
            classes_file=camvid / "classes.txt", has_background=False,
            masks_dir=camvid / "val" / "masks"), project="cam")
        out = tmp_path / "cam.json"
        report = export_project(studio, "cam", out, ExportOptions(source="human"))
        coco = COCO(str(out))
        assert coco.cats[0]["name"] == "sky" and len(coco.cats) == 11  # no background: ids from 0
        assert report.exported == 6
        import_dataset(studio, images, ImportOptions(
            coco_json=out, has_background=False), project="cam_again")
        expected, got = _masks(studio, "cam"), _masks(studio, "cam_again")
        assert any((m == 255).any() for m in expected.values())  # the test is about ignore pixels
        for name, mask in expected.items():
            np.testing.assert_array_equal(got[name], mask, err_msg=name)
    finally:
        studio.close()
