"""Publishing a trained model: the pseudo-label (and model tags) of every image, then the run
becomes the project's current model. Painted pixels win over the model's (`respect_painting`);
a photo is read reduced to what the model needs and its label map filled in bands, so memory
does not grow with classes x photo pixels.

* :func:`predict` — pseudo-labels of every image with a trained run, then marks it published.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from services.context import Studio
from services.devices import open_device
from services.errors import UserError
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from services.train_plan import predict_throughput_key, record_throughput
from slrnet.config import IGNORE_INDEX, MODE_FACTS, InferenceConfig
from slrnet.feature_spec import FeatureSpec
from slrnet.inference import Predictor
from storage import labels as label_repo
from storage import runs as run_repo
from storage.images import iter_images_with_labels
from storage.projects import list_classes

logger = logging.getLogger(__name__)

# The inference settings of a CPU predict (RESULTS.md, "CPU defaults").
CPU_INFERENCE = InferenceConfig(pamr_scale=0.5)
# a predict of at least this many images is timed for the plans that follow (fewer: too noisy)
TIMED_PREDICT_IMAGES = 8


def default_inference(device_type: str) -> InferenceConfig:
    """What predict reads images with when not told (the presence rule is learnt under it)."""
    return CPU_INFERENCE if device_type == "cpu" else InferenceConfig()


def respect_painting(labels: np.ndarray, confidence: np.ndarray,
                     mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The published pseudo-label never contradicts the image's mask: its labelled pixels (not
    IGNORE_INDEX) take the mask's class with full confidence (255)."""
    if mask is None:
        return labels, confidence
    if mask.shape != labels.shape:  # a mask saved at another size: nearest-neighbour to the map's
        mask = np.asarray(PILImage.fromarray(mask).resize(labels.shape[::-1], PILImage.NEAREST))
    painted = mask != IGNORE_INDEX
    return np.where(painted, mask, labels), np.where(painted, np.uint8(255), confidence)


@dataclass(frozen=True)
class PredictResult:
    run_id: int
    version: int
    images: int
    mean_score: float


def predict(
    studio: Studio,
    project: str = "default",
    *,
    run_id: int | None = None,
    device: str = "auto",
    config: InferenceConfig | None = None,
    job_id: int | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> PredictResult:
    """Write the pseudo-label of every image with a trained run (default: the newest), then mark
    the run published. Images already done for that run are skipped, so a cancelled predict
    resumes where it stopped. ``job_id`` only labels the log lines."""
    with studio.Session.begin() as session:
        proj = resolve_project(session, project)
        run = run_repo.get_run(session, run_id) if run_id is not None \
            else run_repo.latest_trained_run(session, proj.id)
        if run is None or run.project_id != proj.id or run.status not in ("trained", "published"):
            raise UserError(f"project {proj.name!r} has no trained model to predict with; run train first")
        run_id, version, mode = run.id, int(run.version or 0), run.mode
        checkpoint = studio.data_dir / str(run.checkpoint_path)
        classes = list_classes(session, proj.id)
        index_of = {c.id: c.index for c in classes}
        todo = [(image.image_id, image.path, image.sha256, [index_of[t] for t in image.tag_class_ids])
                for image in iter_images_with_labels(session, proj.id, without_pseudo_label_of=run_id)]
    if not checkpoint.is_file():
        raise UserError(f"the checkpoint of model version {version} is missing ({checkpoint})")
    torch_device = open_device(device)
    config = config or default_inference(torch_device.type)
    try:
        predictor = Predictor.from_checkpoint(checkpoint, config=config, device=torch_device)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if predictor.class_names != [c.name for c in classes]:  # its outputs would mean other classes
        raise UserError(f"the classes of project {proj.name!r} changed since model version {version} "
                        "was trained; train again before predicting")
    background = 1 if predictor.model_config.has_background else 0
    logger.info("job %s: pseudo-labels of %d image(s) with model version %d", job_id, len(todo), version)
    started = time.monotonic()
    # a light head reads the stored levels of its images instead of running the backbone again
    spec_key = FeatureSpec.of_model(predictor.model_config).key if predictor.model_config.head == "light" \
        else None
    for done, (image_id, path, sha256, tag_indices) in enumerate(todo):
        if should_stop():
            raise Cancelled(f"predict cancelled after {done} of {len(todo)} images; model not published")
        known = None
        if tag_indices:
            known = np.zeros(predictor.num_classes, dtype=np.float32)
            known[tag_indices] = 1.0
        image, size = studio.images.read_rgb_reduced(path, 2 * (predictor.size or 0)) if predictor.size \
            else (studio.images.read_rgb(path), None)
        stored = studio.features.get(sha256, spec_key) if spec_key is not None else None
        pred = predictor.predict(image, known_tags=known, output_size=size, stored=stored)
        del stored
        del image
        with studio.Session.begin() as session:
            labels, confidence = respect_painting(pred.labels, pred.confidence,
                                                  label_repo.get_mask_array(session, image_id))
            label_repo.put_pseudo_label(session, image_id, run_id, labels, confidence)
            if MODE_FACTS[mode].uses_tags:  # the model predicts tags too
                present = [c.id for c in classes if c.index >= background and pred.present[c.index]]
                scores = {c.id: float(pred.presence_scores[c.index]) for c in classes}
                label_repo.set_tags(session, image_id, present, "model", scores=scores, run_id=run_id)
        progress((done + 1) / len(todo), f"pseudo-labels {done + 1}/{len(todo)}", {"images": done + 1})
    spent = time.monotonic() - started
    if len(todo) >= TIMED_PREDICT_IMAGES and spent > 0:  # the next plan's predict estimate
        key = predict_throughput_key(torch_device.type, predictor.model_config, predictor.size or 0)
        record_throughput(studio.data_dir, key, len(todo) / spent)
    with studio.Session.begin() as session:
        run = run_repo.get_run(session, run_id)
        run_repo.mark_published(session, run)
        labelled, mean_score = label_repo.pseudo_label_score_summary(session, run.project_id, run_id)
    progress(1.0, f"model version {version} published", {"run_id": run_id, "version": version})
    return PredictResult(run_id=run_id, version=version, images=labelled,
                         mean_score=mean_score if mean_score is not None else 0.0)
