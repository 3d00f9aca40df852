"""Predict never contradicts what the user painted: painted pixels win in the published
pseudo-label, after every round (cold or warm start) in every mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from services import publishing, training
from services.context import Studio
from services.import_options import ImportOptions
from services.importing import import_dataset
from services.train_options import TrainOptions
from slrnet.config import IGNORE_INDEX
from slrnet.inference import Predictor
from storage import labels as label_repo
from storage.images import all_images
from storage.projects import get_project_by_name
from tests.test_train_service import FAST, write_dataset


def test_painted_pixels_win_with_full_confidence() -> None:
    labels = np.array([[1, 1, 2], [2, 2, 2]], np.uint8)
    confidence = np.full((2, 3), 100, np.uint8)
    mask = np.array([[2, 255, 255], [255, 0, 255]], np.uint8)
    out_labels, out_conf = publishing.respect_painting(labels, confidence, mask)
    np.testing.assert_array_equal(out_labels, [[2, 1, 2], [2, 0, 2]])
    np.testing.assert_array_equal(out_conf, [[255, 100, 100], [100, 255, 100]])
    same = publishing.respect_painting(labels, confidence, None)
    assert same[0] is labels and same[1] is confidence


@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[Studio]:
    s = Studio.open(tmp_path / "data")
    yield s
    s.close()


def painted_iou(studio: Studio) -> dict[tuple[int, int], float]:
    """(image, class) -> IoU of the current pseudo-label against the painting, over painted pixels."""
    out = {}
    with studio.Session.begin() as session:
        project = get_project_by_name(session, "p")
        for image in all_images(session, project.id):
            paint = label_repo.get_mask_array(session, image.id)
            row = label_repo.current_pseudo_label(session, project.id, image.id)
            if paint is None:
                continue
            pred, _ = label_repo.pseudo_label_arrays(row)
            painted = paint != IGNORE_INDEX
            for c in np.unique(paint[painted]):
                inter = ((pred == c) & (paint == c)).sum()
                union = (((pred == c) | (paint == c)) & painted).sum()
                out[(image.id, int(c))] = inter / union
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["wsss", "ssss", "ssss_tags"])
def test_painted_classes_survive_every_round(studio: Studio, tmp_path: Path, mode: str) -> None:
    files = write_dataset(tmp_path / "src", n=6, masks=2)
    for name in ("im0.png", "im1.png"):  # scribbles: a partial painting, the rest unknown
        mask = np.array(PILImage.open(files["masks"] / name))
        mask[30:, :24] = IGNORE_INDEX
        PILImage.fromarray(mask).save(files["masks"] / name)
    import_dataset(studio, files["images"], ImportOptions(
        classes_file=files["classes"], tags_csv=files["tags"], masks_dir=files["masks"]), project="p")
    for warm in (False, True):
        trained = training.train(studio, "p", TrainOptions(mode=mode, warm_start=warm, **FAST))
        publishing.predict(studio, "p", device="cpu")
        ious = painted_iou(studio)
        assert len(ious) >= 4, ious  # background and a colour on each of the two painted images
        assert min(ious.values()) >= 0.9, (mode, warm, ious)
        if mode != "ssss":  # the run learnt a presence rule from its labelled images, in its checkpoint
            assert trained.metrics["presence"] is not None
            assert Predictor.from_checkpoint(studio.data_dir / trained.checkpoint_path).presence is not None
