"""Which supervision mode "Train on my labels" will use, and why, and how long it will take,
without importing torch.

The UI and ``launch.py train`` show this before training starts, and the training service
(``services.training``, which imports torch) makes its decision with the same ``plan_for_counts``
and the CPU defaults and throughput file defined here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from services.context import Studio
from services.errors import UserError
from services.lookups import resolve_project
from slrnet.config import MODES, ModelConfig, default_mask_repeat
from storage import images as image_repo
from storage import runs as run_repo

logger = logging.getLogger(__name__)

# The CPU default run (what `launch.py train` and "Train on my labels" pick with no options):
# sized to a wall-time budget, the CPU-sized model. services.training imports these.
CPU_TRAIN_BUDGET_S = 240.0
WARM_START_BUDGET_SHARE = 0.5  # a warm-started round trains for half the default budget
CPU_IMAGE_SIZE = 160  # MSRC-21: 5 epochs at 160 px beat 5 at 224 px per CPU-minute (RESULTS.md)
CPU_BACKBONE = "mobilenet_v2"
CPU_FEATURE_CHANNELS = 64
# modes whose CPU model keeps the ImageNet backbone as it is (ModelConfig.freeze_backbone): with
# tags only, 6 epochs of a frozen backbone beat 4 fine-tuned ones in the same 4 minutes by 2-8
# mIoU points on MSRC-21; with masks (CamVid@20) it did not help, so those modes fine-tune (RESULTS.md)
CPU_FROZEN_BACKBONE_MODES = ("wsss",)
GPU_IMAGE_SIZE = 448
MAX_EPOCHS = 30  # slrnet.train.epochs_for_budget's clamp

# Measured training speeds, {throughput_key(...): images per second}, under the data dir.
THROUGHPUT_FILE = "throughput.json"
# Guesses when nothing was measured yet: conservative CPU training speed at GUESS_SIZE px
# (scaled by (GUESS_SIZE / size)²), and the prediction speed.
GUESS_TRAIN_IMAGES_PER_S = 3.0
GUESS_SIZE = 224
PREDICT_IMAGES_PER_S = 8.0


@dataclass(frozen=True)
class LabelCounts:
    tagged: int  # images with a human tag
    masked: int  # images with a mask
    unlabelled: int  # images with neither


@dataclass(frozen=True)
class TrainPlan:
    mode: str
    reason: str
    counts: LabelCounts


def label_counts(studio: Studio, project: str) -> LabelCounts:
    """How many of the project's images have tags, masks, or neither."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        tagged, masked, unlabelled = image_repo.label_counts(session, row.id)
        return LabelCounts(tagged=tagged, masked=masked, unlabelled=unlabelled)


def plan_for_counts(counts: LabelCounts, requested: str = "auto") -> TrainPlan:
    """The mode for these counts (``requested`` when not "auto" and the labels allow it)."""
    tagged, masked, unlabelled = counts.tagged, counts.masked, counts.unlabelled
    if requested not in ("auto", *MODES):
        raise UserError(f"unknown mode {requested!r}; choose auto, {', '.join(MODES)}")
    if tagged == 0 and masked == 0:
        raise UserError("the project has no labels yet: tag some images or paint some masks first")
    if requested == "auto":
        if masked and tagged:
            return TrainPlan(
                "ssss_tags",
                f"{masked} image(s) with masks and {tagged} with tags: "
                f"masks and tags together, {unlabelled} unlabelled image(s) used too",
                counts,
            )
        if masked:
            return TrainPlan(
                "ssss",
                f"{masked} image(s) with masks and no tags: semi-supervised, "
                f"{unlabelled} unlabelled image(s) used too",
                counts,
            )
        return TrainPlan(
            "wsss", f"{tagged} image(s) with tags and no masks: weakly supervised from tags", counts
        )
    if requested == "wsss" and not tagged:
        raise UserError("mode wsss needs images with tags, and this project has none")
    if requested == "ssss" and not masked:
        raise UserError("mode ssss needs images with masks, and this project has none")
    if requested == "ssss_tags" and not (masked and tagged):
        raise UserError("mode ssss_tags needs images with masks and images with tags")
    return TrainPlan(
        requested,
        f"mode {requested} chosen by hand ({tagged} tagged, {masked} masked, {unlabelled} unlabelled images)",
        counts,
    )


def plan_training(studio: Studio, project: str, requested: str = "auto") -> TrainPlan:
    """The mode "Train on my labels" will use for the project's labels now, with the reason."""
    return plan_for_counts(label_counts(studio, project), requested)


# --- how long it will take ----------------------------------------------------------------------


def freezes_backbone(device: str, mode: str, model_overrides: dict | None = None) -> bool:
    """Whether a run keeps its ImageNet backbone frozen: ``model_overrides["freeze_backbone"]``
    when given, else on a CPU in ``CPU_FROZEN_BACKBONE_MODES``."""
    if model_overrides and "freeze_backbone" in model_overrides:
        return bool(model_overrides["freeze_backbone"])
    return device == "cpu" and mode in CPU_FROZEN_BACKBONE_MODES


def throughput_key(device: str, backbone: str, feature_channels: int, image_size: int,
                   frozen_backbone: bool = False) -> str:
    """The key of a measured training speed in the throughput file (a frozen backbone trains
    ~1.5x faster, so it is timed apart: ``cpu/mobilenet_v2+frozen/64/160``)."""
    model = f"{backbone}+frozen" if frozen_backbone else backbone
    return f"{device}/{model}/{feature_channels}/{image_size}"


def read_throughput(data_dir: str | Path) -> dict[str, float]:
    """The measured training speeds (images per second) under ``data_dir``; {} when none or unreadable."""
    path = Path(data_dir) / THROUGHPUT_FILE
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring an unreadable %s: %s", path, exc)
        return {}
    if not isinstance(known, dict):
        return {}
    return {k: float(v) for k, v in known.items() if isinstance(v, int | float) and v > 0}


def record_throughput(data_dir: str | Path, key: str, images_per_s: float) -> None:
    """Remember a measured training speed (atomically; a hint only, so never raises on OSError)."""
    path = Path(data_dir) / THROUGHPUT_FILE
    try:
        known = read_throughput(data_dir)
        known[key] = round(images_per_s, 3)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not record the training throughput: %s", exc)


def whole_batches(images: int, batch: int) -> int:
    """Images an epoch of ``images`` trains on: the loader drops a last partial batch (the rule of
    slrnet.train.images_per_epoch, which needs torch)."""
    return images // batch * batch if images > batch else images


def trained_per_epoch(images_per_epoch: int, samples: int, device: str) -> int:
    """Images one epoch really trains on, with the batch size services.training sets
    (``min(8, samples)`` on a CPU, 16 on a GPU)."""
    return whole_batches(images_per_epoch, max(1, min(16 if device == "cuda" else 8, samples)))


def planned_epochs(budget_s: float, images_per_s: float, images_per_epoch: int) -> int:
    """Whole epochs that fit ``budget_s`` (the rule of slrnet.train.epochs_for_budget, 1..30)."""
    per_epoch = max(images_per_epoch, 1) / images_per_s
    return max(1, min(MAX_EPOCHS, math.floor(budget_s / max(per_epoch, 1e-9))))


def guessed_images_per_s(known: dict[str, float], device: str, backbone: str, feature_channels: int,
                         image_size: int, frozen_backbone: bool = False) -> tuple[float | None, str]:
    """(images per second, where it comes from: "measured", "scaled" or "guessed") for training
    at ``image_size``: the measured speed of this model, else one measured at another size scaled
    by the pixel count, else the CPU guess (None on a GPU: too varied to guess). A frozen backbone
    without a measurement of its own takes the fine-tuned model's (slower: fewer epochs planned)."""
    for frozen in (True, False) if frozen_backbone else (False,):
        exact = known.get(throughput_key(device, backbone, feature_channels, image_size, frozen))
        if exact:
            return exact, "measured"
        prefix = throughput_key(device, backbone, feature_channels, 0, frozen)[:-1]
        others = sorted((int(k[len(prefix):]), v) for k, v in known.items()
                        if k.startswith(prefix) and k[len(prefix):].isdigit())
        if others:
            size, speed = min(others, key=lambda sv: abs(sv[0] - image_size))
            return speed * (size / image_size) ** 2, "scaled"
    if device != "cpu":
        return None, "unknown"
    return GUESS_TRAIN_IMAGES_PER_S * (GUESS_SIZE / image_size) ** 2, "guessed"


def speed_of_runs(runs: list[dict], device: str, backbone: str, feature_channels: int,
                  image_size: int, frozen_backbone: bool = False) -> float | None:
    """Images per second that the newest finished run of this model trained at, over its whole
    training (its epochs' times), not a probe's few steps. ``runs``: ``{"config", "metrics"}``
    dicts of runs, newest first."""
    for run in runs:
        model, train = run["config"].get("model", {}), run["config"].get("train", {})
        plan = run["metrics"].get("plan") or {}
        epochs = [h["seconds"] for h in run["metrics"].get("history", []) if h.get("seconds")]
        same = (model.get("backbone") == backbone and model.get("feature_channels") == feature_channels
                and bool(model.get("freeze_backbone")) == frozen_backbone
                and train.get("image_size") == image_size and bool(train.get("amp")) == (device == "cuda"))
        if not same or not epochs or not plan.get("images_per_epoch"):
            continue
        trained = whole_batches(int(plan["images_per_epoch"]), int(train.get("batch_size", 8)))
        return len(epochs) * trained / sum(epochs)
    return None


def _gpu_present() -> bool:
    """Whether "auto" will pick CUDA, judged without torch (the NVIDIA driver's device files)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


@dataclass(frozen=True)
class TrainPreview:
    """What a press of "Train on my labels" (or ``launch.py train``) will do, and for how long."""

    mode: str
    reason: str
    device: str  # "cpu" or "cuda"
    epochs: int
    image_size: int
    images_per_epoch: int
    budget_s: float | None  # None: not budgeted (epochs given, or a GPU)
    images_per_s: float | None  # training speed used for the estimate (None: unknown)
    speed_source: str  # "measured", "scaled", "guessed" or "unknown"
    estimated_s: float | None  # training
    predict_images: int
    predict_s: float
    warm_start_from: int | None  # the model version it continues from, if any

    def summary(self) -> str:
        """One line, e.g. "before training: 12 epoch(s) of 40 images at 224 px, about 3.5 min ..."."""
        text = (f"before training: {self.epochs} epoch(s) of {self.images_per_epoch} images "
                f"at {self.image_size} px")
        if self.estimated_s is not None:
            text += f", about {minutes(self.estimated_s)} of training"
            detail = f"{self.speed_source} {self.images_per_s:.1f} img/s"
            if self.budget_s is not None:
                detail += f"; budget {minutes(self.budget_s)}"
            text += f" ({detail})"
        else:
            text += f" on {self.device} (duration unknown until measured)"
        text += f", then about {minutes(self.predict_s)} to predict {self.predict_images} images"
        if self.warm_start_from is not None:
            text += f"; continues from model v{self.warm_start_from}"
        return text


def minutes(seconds: float) -> str:
    """A duration for people: "3.5 min", "40 s", "1 s" (never "0 s")."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{max(1, round(seconds))} s"


def preview_training(
    studio: Studio,
    project: str | int,
    mode: str = "auto",
    *,
    backbone: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    device: str = "auto",
    budget_s: float | None = None,
    warm_start: bool | None = None,
    model_overrides: dict | None = None,
) -> TrainPreview:
    """The plan of a training with these options before it starts (UserError when it cannot
    train): mode, epochs, image size, estimated training and prediction time. The estimate uses
    the speed measured by earlier runs (``THROUGHPUT_FILE``) or a conservative guess; the
    service measures the real speed at its start and reports its own plan."""
    counts = label_counts(studio, project)
    choice = plan_for_counts(counts, mode or "auto")
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        total = image_repo.count_images(session, row.id)
        current = run_repo.latest_published_run(session, row.id)
        current_version = current.version if current is not None else None
        current_model = dict((current.config or {}).get("model", {})) if current is not None else {}
        runs = [{"config": dict(r.config or {}), "metrics": dict(r.metrics or {})}
                for r in run_repo.latest_trained_runs(session, row.id)]
    resolved = device if device in ("cpu", "cuda") else ("cuda" if _gpu_present() else "cpu")
    cpu = resolved == "cpu"
    backbone = backbone or CPU_BACKBONE
    channels = int((model_overrides or {}).get(
        "feature_channels", CPU_FEATURE_CHANNELS if cpu else ModelConfig.feature_channels))
    if choice.mode == "wsss":
        samples = per_epoch = counts.tagged
    else:
        samples = total
        per_epoch = total + counts.masked * (
            default_mask_repeat(counts.masked, total - counts.masked, choice.mode) - 1)
    warm_from = None
    if warm_start is not False and current_version is not None \
            and current_model.get("backbone", backbone) == backbone \
            and int(current_model.get("feature_channels", channels)) == channels:
        warm_from = current_version
    size = image_size or (CPU_IMAGE_SIZE if cpu else GPU_IMAGE_SIZE)
    # The service sizes the epochs from its timed probe steps (what the throughput file records);
    # the duration is best told by how fast the last whole run of this model really trained.
    frozen = freezes_backbone(resolved, choice.mode, model_overrides)
    probe, source = guessed_images_per_s(read_throughput(studio.data_dir), resolved, backbone,
                                         channels, size, frozen)
    speed = speed_of_runs(runs, resolved, backbone, channels, size, frozen)
    if speed is None:
        speed = probe
    else:
        source = "measured"
    # the service plans and reports whole batches (the loader drops the last partial one)
    trained = trained_per_epoch(per_epoch, samples, resolved)
    budget = None
    if epochs:
        planned = epochs
    elif cpu:
        budget = budget_s if budget_s is not None else CPU_TRAIN_BUDGET_S
        if warm_from is not None and budget_s is None:
            budget *= WARM_START_BUDGET_SHARE
        planned = planned_epochs(budget, probe, trained)
    else:  # slrnet.train.default_budget on a GPU
        planned = max(8, min(MAX_EPOCHS, math.ceil(40_000 / max(per_epoch, 1))))
    estimate = planned * trained / speed if speed else None
    return TrainPreview(
        mode=choice.mode, reason=choice.reason, device=resolved, epochs=planned, image_size=size,
        images_per_epoch=trained, budget_s=budget, images_per_s=speed, speed_source=source,
        estimated_s=estimate, predict_images=total, predict_s=total / PREDICT_IMAGES_PER_S,
        warm_start_from=warm_from,
    )
