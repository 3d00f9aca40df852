"""The training plan, decided in ONE place and without torch: :func:`make_plan` turns the facts
about a project (:class:`PlanFacts`) and the user's :class:`TrainOptions` into a
:class:`TrainPlan` — the mode and why, the device, the model and training configs (backbone, image
size, batch size, epochs, warm-up, mask oversampling), the budget, whether the run continues from
the current model, and the speed that prices it.

The Train tab and ``launch.py train`` show :func:`preview_training`; the training service
(``services.training``) reads the same facts, calls the same :func:`make_plan` and trains what the
plan says. The only thing the service adds is a timing of a few steps when no speed was measured
before (``PlanFacts.probe``), after which it plans again with this same function.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from services.context import Studio
from services.errors import UserError
from services.features import images_needing_features
from services.lookups import resolve_project
from services.train_options import TrainOptions, check_mode
from slrnet.config import MODE_FACTS, ModelConfig, TrainConfig, default_mask_repeat, predict_size
from slrnet.feature_spec import WEIGHTS_IDS, FeatureSpec
from slrnet.schedule import images_per_epoch
from storage import images as image_repo
from storage import labels as label_repo
from storage import runs as run_repo
from storage.projects import list_classes

logger = logging.getLogger(__name__)

# The CPU default run (what `launch.py train` and "Train on my labels" pick with no options):
# sized to a wall-time budget, the CPU-sized model. benchmarks/RESULTS.md ("CPU defaults") has
# the measurements behind each value.
CPU_TRAIN_BUDGET_S = 240.0
WARM_START_BUDGET_SHARE = 0.5  # a warm-started round trains for half the default budget
CPU_IMAGE_SIZE = 160  # MSRC-21: 5 epochs at 160 px beat 5 at 224 px per CPU-minute (RESULTS.md)
CPU_BACKBONE = "mobilenet_v2"
CPU_FEATURE_CHANNELS = 64
CPU_MODEL = {"feature_channels": CPU_FEATURE_CHANNELS, "separable_head": False, "freeze_low": True}
CPU_TRAIN = {"feature_resolution_losses": True}
# The CPU default model of the modes whose facts say cpu_stored_features (every mode; the measured
# reasons, MSRC-21 tags and CamVid masks, are in slrnet.config.ModeFacts): the light head on stored
# multi-level features (ModelConfig head="light", slrnet.light_head).
CPU_FEATURE_MODEL = {"head": "light", "backbone": "efficientnet_lite0", "feature_channels": 64,
                     "feature_image_size": 320}
CPU_FEATURE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
# a budgeted light-head run stops after about this many image views: MSRC-21 (334 photos) gave
# 0.607 / 0.759 / 0.745 mIoU after 3 / 10 / 20 epochs (RESULTS.md), so 10 of its epochs
CPU_FEATURE_VIEWS = 3_400
GPU_IMAGE_SIZE = 448
GPU_VIEWS = 40_000  # a GPU run's default length: about this many image views (the paper's 30 epochs)
MAX_EPOCHS = 30
BATCH_SIZE = {"cpu": 8, "cuda": 16}

# Measured training speeds, {throughput_key(...): images per second}, under the data dir.
THROUGHPUT_FILE = "throughput.json"
# Guesses when nothing was measured yet: conservative CPU training speed at GUESS_SIZE px
# (scaled by (GUESS_SIZE / size)²), and the prediction speed.
GUESS_TRAIN_IMAGES_PER_S = 3.0
GUESS_SIZE = 224
# the light head on stored features, and the feature pass, when nothing was measured yet (the
# 2-core CPU of RESULTS.md: 15-66 and 1.5-7 images/s at 1 thread, busy to quiet; the first run
# records both and later plans use them)
GUESS_LIGHT_IMAGES_PER_S = 15.0
GUESS_FEATURE_IMAGES_PER_S = 4.0
# predict (read, model, PAMR, full-size label map, stored): the guess before a predict of the same
# model was timed (publishing.predict records it); measured 5.9 images/s for the CPU light head
# on 100 MSRC photos, 2 threads (RESULTS.md)
GUESS_PREDICT_IMAGES_PER_S = 6.0


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelCounts:
    tagged: int  # images with a human tag
    masked: int  # images with a mask
    unlabelled: int  # images with neither


@dataclass(frozen=True)
class CurrentModel:
    """The project's current (published) model, as its run row records it."""

    version: int
    model: dict[str, Any]  # its ModelConfig fields
    class_names: tuple[str, ...] | None  # None: a run from before they were recorded


@dataclass(frozen=True)
class StepTimes:
    """The service's timing of a few steps: seconds per image with and without the pseudo-label term."""

    seconds_per_image: float
    warmup_seconds_per_image: float


@dataclass(frozen=True)
class PlanFacts:
    """What the plan is decided from (read by :func:`read_facts`; tests build it directly)."""

    counts: LabelCounts
    class_names: tuple[str, ...]
    has_background: bool
    device: str  # "cpu" or "cuda", resolved
    images: int  # in the project
    current: CurrentModel | None = None
    runs: tuple[dict[str, Any], ...] = ()  # finished runs' {"config", "metrics"}, newest first
    throughput: Mapping[str, float] = field(default_factory=dict)  # THROUGHPUT_FILE
    resumable: dict[str, Any] | None = None  # run config of the newest interrupted run
    probe: StepTimes | None = None
    # images whose features a light-head run must still compute, by FeatureSpec.key (a key not
    # listed: all of the project's images)
    features_missing: Mapping[str, int] = field(default_factory=dict)


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeChoice:
    mode: str
    reason: str
    counts: LabelCounts


@dataclass(frozen=True)
class TrainPlan:
    """What a press of "Train on my labels" (or ``launch.py train``) will do, and for how long."""

    mode: str
    reason: str
    counts: LabelCounts
    device: str  # "cpu" or "cuda"
    model_config: ModelConfig
    train_config: TrainConfig
    budget_s: float | None  # None: not budgeted (epochs given, or a GPU)
    warm_start_from: int | None  # the model version it continues from, if any
    resumes: bool  # the epochs are those of the interrupted run it continues
    images_per_epoch: int  # images one epoch trains on (whole batches)
    images_per_s: float | None  # training speed used for the estimate (None: unknown)
    speed_source: str  # "measured", "scaled", "guessed", "timed" (the service's steps) or "unknown"
    estimated_s: float | None  # computing missing features (features_s) + training
    predict_images: int
    predict_s: float
    predict_images_per_s: float = GUESS_PREDICT_IMAGES_PER_S
    predict_speed_source: str = "guessed"  # or "measured" (the last predict of this model)
    warmup_images_per_s: float | None = None  # when timed apart (the service's steps)
    feature_spec_key: str | None = None  # the stored features a light head trains on
    features_missing: int = 0  # images whose features are computed first
    feature_images_per_s: float | None = None
    features_s: float = 0.0  # the estimated time of computing them first (in estimated_s, not
    # in the budget, which is the training's)

    @property
    def epochs(self) -> int:
        return self.train_config.epochs

    @property
    def image_size(self) -> int:
        return self.train_config.image_size

    @property
    def needs_timing(self) -> bool:
        """The service times a few steps and plans again: budgeted, and no speed was measured."""
        return self.budget_s is not None and not self.resumes and self.speed_source == "guessed"

    def summary(self, prefix: str = "before training") -> str:
        """One line, e.g. "before training: 12 epoch(s) of 40 images at 224 px, about 3.5 min ..."."""
        text = f"{prefix}: {self.epochs} epoch(s) of {self.images_per_epoch} images at {self.image_size} px"
        if self.feature_spec_key is not None and self.features_missing:
            text += (f" on stored features ({self.features_missing} image(s) still need them, about "
                     f"{minutes(self.features_s)} first)")
        elif self.feature_spec_key is not None:
            text += " on stored features (all ready)"
        if self.resumes:
            text += " (the interrupted run's)"
        if self.estimated_s is not None and self.images_per_s:
            text += f", about {minutes(self.estimated_s - self.features_s)} of training"
            detail = f"{self.speed_source} {self.images_per_s:.1f} img/s"
            if self.budget_s is not None:
                detail += f"; budget {minutes(self.budget_s)}"
            text += f" ({detail})"
        else:
            text += f" on {self.device} (duration unknown until measured)"
        text += f", then about {minutes(self.predict_s)} to predict {self.predict_images} images"
        if self.predict_speed_source == "measured":
            text += f" ({self.predict_images_per_s:.1f} img/s measured)"
        if self.warm_start_from is not None:
            text += f"; continues from model v{self.warm_start_from}"
        return text

    def metrics(self) -> dict[str, Any]:
        """The plan as the run's metrics keep it (``metrics["plan"]``)."""
        seconds = 1 / self.images_per_s if self.images_per_s else None
        warm = 1 / self.warmup_images_per_s if self.warmup_images_per_s else seconds
        plan: dict[str, Any] = {
            "epochs": self.epochs, "warmup_epochs": self.train_config.warmup_epochs,
            "image_size": self.image_size, "budget_s": self.budget_s,
            "images_per_epoch": self.images_per_epoch, "seconds_per_image": seconds,
            "warmup_seconds_per_image": warm, "estimated_s": self.estimated_s,
            "speed_source": self.speed_source, "summary": self.summary("plan"),
        }
        if self.feature_spec_key is not None:
            plan.update({"feature_spec": self.feature_spec_key, "features_missing": self.features_missing,
                         "features_s": self.features_s})
        if self.warm_start_from is not None:
            plan["warm_start_from_version"] = self.warm_start_from
        return plan


def choose_mode(counts: LabelCounts, requested: str = "auto") -> ModeChoice:
    """The mode for these counts: "auto" picks the mode that uses exactly the kinds of label
    present (``slrnet.config.MODE_FACTS``); a mode by hand when the labels allow it."""
    tagged, masked, unlabelled = counts.tagged, counts.masked, counts.unlabelled
    check_mode(requested)
    if tagged == 0 and masked == 0:
        raise UserError("the project has no labels yet: tag some images or paint some masks first")
    if requested != "auto":
        facts = MODE_FACTS[requested]
        needs = (("tags", facts.uses_tags, tagged), ("masks", facts.uses_masks, masked))
        missing = [what for what, needed, have in needs if needed and not have]
        if missing:
            raise UserError(f"mode {requested} needs images with {' and images with '.join(missing)}, "
                            "and this project has none")
        return ModeChoice(requested, f"mode {requested} chosen by hand ({tagged} tagged, {masked} masked, "
                          f"{unlabelled} unlabelled images)", counts)
    mode = next(m for m, f in MODE_FACTS.items() if (f.uses_tags, f.uses_masks) == (tagged > 0, masked > 0))
    if tagged and masked:
        reason = (f"{masked} image(s) with masks and {tagged} with tags: masks and tags together, "
                  f"{unlabelled} unlabelled image(s) used too")
    elif masked:
        reason = (f"{masked} image(s) with masks and no tags: semi-supervised, "
                  f"{unlabelled} unlabelled image(s) used too")
    else:
        reason = f"{tagged} image(s) with tags and no masks: weakly supervised from tags"
    return ModeChoice(mode, reason, counts)


def make_plan(facts: PlanFacts, options: TrainOptions) -> TrainPlan:
    """THE training plan for these facts and options (UserError when it cannot train)."""
    choice = choose_mode(facts.counts, options.mode or "auto")
    samples, masked = training_set_size(facts.counts, facts.images, choice.mode)
    model_config, train_config = _configs(facts, options, choice.mode, samples, masked)
    warm_from = _warm_start(facts, options, model_config)
    if warm_from is not None:
        train_config = replace(train_config, warmup_epochs=0)
    per_epoch = images_per_epoch(samples + masked * (train_config.mask_repeat - 1), train_config.batch_size)
    speed, warm_speed, source = _speed(facts, model_config, train_config)
    spec_key, missing, feature_speed = _features(facts, model_config)
    features_s = missing / feature_speed if missing else 0.0
    predict_speed, predict_source = _predict_speed(facts, model_config, train_config)

    def cost(n: int) -> float:  # warm-up epochs skip the pseudo-label term and its PAMR
        warmup = 0 if warm_from is not None else min(default_warmup(n), n)
        return per_epoch * (warmup / warm_speed + (n - warmup) / speed)

    budget = resumed = None
    budgeted = options.epochs is None and facts.device == "cpu" \
        and "epochs" not in (options.train_overrides or {})
    if budgeted:
        # a round continuing from a trained model takes its share of the default budget
        share = WARM_START_BUDGET_SHARE if warm_from is not None and options.budget_s is None else 1.0
        budget = (options.budget_s if options.budget_s is not None else CPU_TRAIN_BUDGET_S) * share
        resumed = _resumable_epochs(facts, model_config, train_config)
        most = max_epochs(model_config, samples, share)
        epochs = resumed if resumed is not None else epochs_within(budget, cost, most)
        warmup = 0 if warm_from is not None else min(default_warmup(epochs), epochs)
        train_config = replace(train_config, epochs=epochs, warmup_epochs=warmup)
    return TrainPlan(
        mode=choice.mode, reason=choice.reason, counts=facts.counts, device=facts.device,
        model_config=model_config, train_config=train_config, budget_s=budget, warm_start_from=warm_from,
        resumes=resumed is not None, images_per_epoch=per_epoch, images_per_s=speed, speed_source=source,
        estimated_s=features_s + cost(train_config.epochs) if speed else None, predict_images=facts.images,
        predict_s=facts.images / predict_speed, predict_images_per_s=predict_speed,
        predict_speed_source=predict_source,
        warmup_images_per_s=warm_speed if source == "timed" else None,
        feature_spec_key=spec_key, features_missing=missing, feature_images_per_s=feature_speed,
        features_s=features_s,
    )


# --- the rules it is made of --------------------------------------------------------------------


def training_set_size(counts: LabelCounts, images: int, mode: str) -> tuple[int, int]:
    """(images a run of ``mode`` trains on, how many of them carry a mask): a mode without masks
    trains on the tagged images (masks unused), the mask modes on all ``images``, unlabelled ones
    included."""
    if not MODE_FACTS[mode].uses_masks:
        return counts.tagged, 0
    return images, counts.masked


def default_warmup(epochs: int) -> int:
    """Epochs before the pseudo-label loss starts: the paper's 5 of 30; at least one, and at least
    one epoch with it when there are two or more (a single epoch never uses pseudo-labels)."""
    return min(epochs - 1, max(1, round(epochs / 6))) if epochs > 1 else 1


def default_epochs(images: int) -> int:
    """Epochs of a run not sized to a budget (a GPU): about ``GPU_VIEWS`` views, 8..MAX_EPOCHS."""
    return max(8, min(MAX_EPOCHS, math.ceil(GPU_VIEWS / max(images, 1))))


def epochs_within(budget_s: float, cost: Callable[[int], float], most: int = MAX_EPOCHS) -> int:
    """The most whole epochs (1..most) whose ``cost`` fits ``budget_s``; one when none fits."""
    return max([1, *(n for n in range(1, most + 1) if cost(n) <= budget_s)])


def max_epochs(model_config: ModelConfig, samples: int, share: float = 1.0) -> int:
    """The most epochs a budgeted run plans: MAX_EPOCHS, and for the light head about ``share`` x
    ``CPU_FEATURE_VIEWS`` image views (its quality is flat beyond; the view cap is a budget too, so
    a warm round takes the same share of it as of the time budget)."""
    if model_config.head != "light":
        return MAX_EPOCHS
    return max(1, round(share * min(MAX_EPOCHS, math.ceil(CPU_FEATURE_VIEWS / max(samples, 1)))))


def freezes_backbone(device: str, mode: str, model_overrides: dict | None = None) -> bool:
    """Whether a run keeps its ImageNet backbone frozen: ``model_overrides["freeze_backbone"]``
    when given, else on a CPU in a mode whose ``cpu_frozen_backbone`` says so."""
    if model_overrides and "freeze_backbone" in model_overrides:
        return bool(model_overrides["freeze_backbone"])
    return device == "cpu" and MODE_FACTS[mode].cpu_frozen_backbone


def uses_stored_features(device: str, mode: str, model_overrides: dict | None = None,
                         backbone: str | None = None) -> bool:
    """Whether a run trains the light head on stored features: ``model_overrides["head"]`` when
    given, else on a CPU in a mode whose ``cpu_stored_features`` says so, with the default
    backbone or another of ``CPU_FEATURE_BACKBONES`` (asking for mobilenet_v2, tiny ... gives the
    paper head, as before)."""
    if model_overrides and "head" in model_overrides:
        return model_overrides["head"] == "light"
    return device == "cpu" and MODE_FACTS[mode].cpu_stored_features \
        and (backbone is None or backbone in CPU_FEATURE_BACKBONES)


def _configs(facts: PlanFacts, options: TrainOptions, mode: str, samples: int,
             masked: int) -> tuple[ModelConfig, TrainConfig]:
    cpu = facts.device == "cpu"
    epochs = options.epochs or default_epochs(samples)
    light = uses_stored_features(facts.device, mode, options.model_overrides, options.backbone)
    model = {**CPU_MODEL, **(CPU_FEATURE_MODEL if light else {})} if cpu else {}
    if light and not cpu:
        model = {"head": "light", "backbone": CPU_FEATURE_MODEL["backbone"]}
    if light and options.backbone and options.backbone not in WEIGHTS_IDS:
        raise UserError(f"backbone {options.backbone} has no stored features; choose one of "
                        f"{', '.join(sorted(WEIGHTS_IDS))} or the paper head")
    try:
        model_config = ModelConfig(**{
            "num_classes": len(facts.class_names), "mode": mode, "backbone": CPU_BACKBONE,
            "has_background": facts.has_background, **model,
            **({"backbone": options.backbone} if options.backbone else {}),
            "freeze_backbone": freezes_backbone(facts.device, mode, options.model_overrides),
            **(options.model_overrides or {}),
        })
        train_config = TrainConfig(**{
            "epochs": epochs, "warmup_epochs": default_warmup(epochs),
            "image_size": options.image_size or (CPU_IMAGE_SIZE if cpu else GPU_IMAGE_SIZE),
            "batch_size": max(1, min(BATCH_SIZE.get(facts.device, 8), samples)),
            "mask_repeat": default_mask_repeat(masked, samples - masked, mode),
            "amp": facts.device == "cuda", "seed": options.seed,
            "loss_weights": MODE_FACTS[mode].loss_weights,
            **(CPU_TRAIN if cpu else {}),
            **(options.train_overrides or {}),
        })
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad training settings: {exc}") from exc
    return model_config, train_config


def architecture(model_config: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The fields that make two models' weights interchangeable: all but ``pretrained`` and ``mode``
    (as JSON gives them back, tuples as lists)."""
    fields = asdict(model_config) if isinstance(model_config, ModelConfig) else dict(model_config)
    return json.loads(json.dumps({k: v for k, v in fields.items() if k not in ("pretrained", "mode")}))


def same_classes_and_architecture(current: CurrentModel, class_names: tuple[str, ...],
                                  model_config: ModelConfig) -> bool:
    """Whether a run of ``model_config`` on ``class_names`` may start from the current model's
    weights (its classes unknown: judged by the architecture, the service checks its checkpoint)."""
    mine = architecture(model_config)
    theirs = {k: v for k, v in architecture(current.model).items() if k in mine}
    return theirs == mine and (current.class_names is None or tuple(current.class_names) == class_names)


def _warm_start(facts: PlanFacts, options: TrainOptions, model_config: ModelConfig) -> int | None:
    if options.warm_start is False:
        return None
    if facts.current is not None and same_classes_and_architecture(facts.current, facts.class_names,
                                                                   model_config):
        return facts.current.version
    if options.warm_start:
        raise UserError("no current model with the same classes and architecture to continue from; "
                        "train afresh")
    return None


def run_config(model_config: ModelConfig, train_config: TrainConfig,
               class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A run's settings as its row keeps them (JSON: tuples become lists)."""
    return json.loads(json.dumps({"model": asdict(model_config), "train": asdict(train_config),
                                  "class_names": list(class_names)}))


def _resumable_epochs(facts: PlanFacts, model_config: ModelConfig, train_config: TrainConfig) -> int | None:
    """Epochs of the interrupted run the service would resume (same settings but the
    budget-derived epochs), so a resumed budgeted run keeps its plan."""
    theirs = facts.resumable
    if theirs is None:
        return None
    mine = run_config(model_config, train_config, facts.class_names)
    strip = ("epochs", "warmup_epochs")
    same = (theirs.get("model") == mine["model"] and theirs.get("class_names") == mine["class_names"]
            and {k: v for k, v in theirs.get("train", {}).items() if k not in strip}
            == {k: v for k, v in mine["train"].items() if k not in strip})
    return int(theirs["train"]["epochs"]) if same else None


# --- speed --------------------------------------------------------------------------------------


def _speed(facts: PlanFacts, model_config: ModelConfig,
           train_config: TrainConfig) -> tuple[float | None, float | None, str]:
    """(images/s, warm-up images/s, where they come from): the service's timed steps, else the
    newest finished run of this model in the project, else the throughput file, else a guess."""
    if facts.probe is not None:
        return 1 / facts.probe.seconds_per_image, 1 / facts.probe.warmup_seconds_per_image, "timed"
    args = speed_key(facts.device, model_config, train_config)
    measured = speed_of_runs(list(facts.runs), *args)
    if measured is not None:
        return measured, measured, "measured"
    speed, source = guessed_images_per_s(facts.throughput, *args)
    if source == "guessed" and model_config.head == "light":
        speed = GUESS_LIGHT_IMAGES_PER_S
    return speed, speed, source


def speed_key(device: str, model_config: ModelConfig,
              train_config: TrainConfig) -> tuple[str, str, int, int, bool]:
    """The `throughput_key` arguments of a run: (device, model, width, size, frozen backbone) with
    the model named "<backbone>+light" for the light head on stored features (whose steps run no
    backbone at all: its backbone is always frozen and not named so)."""
    light = model_config.head == "light"
    return (device, model_name(model_config.backbone, model_config.head), model_config.feature_channels,
            train_config.image_size, model_config.freeze_backbone and not light)


def model_name(backbone: str, head: str) -> str:
    """How the throughput file names a model: the backbone, "<backbone>+light" for the light head
    on stored features (its steps and predict run no backbone pass)."""
    return f"{backbone}+light" if head == "light" else backbone


def feature_throughput_key(device: str, spec_key: str) -> str:
    """The key of a measured feature-pass speed (images per second) in the throughput file."""
    return f"{device}/features/{spec_key}"


def _features(facts: PlanFacts, model_config: ModelConfig) -> tuple[str | None, int, float | None]:
    """(the FeatureSpec key a light head reads, images still needing features, the measured or
    guessed feature-pass speed); (None, 0, None) for the paper head."""
    if model_config.head != "light":
        return None, 0, None
    key = FeatureSpec.of_model(model_config).key
    missing = int(facts.features_missing.get(key, facts.images))
    speed = facts.throughput.get(feature_throughput_key(facts.device, key), GUESS_FEATURE_IMAGES_PER_S)
    return key, missing, speed


def predict_throughput_key(device: str, model_config: ModelConfig, image_size: int) -> str:
    """The key of a measured predict speed in the throughput file, e.g.
    ``predict/cpu/efficientnet_lite0+light/320``: the model as :func:`speed_key` names it and the
    longer side it reads images at (`slrnet.config.predict_size`)."""
    return f"predict/{device}/{model_name(model_config.backbone, model_config.head)}/{image_size}"


def _predict_speed(facts: PlanFacts, model_config: ModelConfig,
                   train_config: TrainConfig) -> tuple[float, str]:
    """(images per second of the predict after training, "measured" or "guessed")."""
    size = predict_size(model_config, train_config.image_size)
    measured = facts.throughput.get(predict_throughput_key(facts.device, model_config, size))
    return (measured, "measured") if measured else (GUESS_PREDICT_IMAGES_PER_S, "guessed")


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


def guessed_images_per_s(known: Mapping[str, float], device: str, backbone: str, feature_channels: int,
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
    training (its epochs' times), not a few timed steps. ``runs``: ``{"config", "metrics"}``
    dicts of runs, newest first; ``backbone`` and ``frozen_backbone`` as `speed_key` gives them."""
    for run in runs:
        model, train = run["config"].get("model", {}), run["config"].get("train", {})
        plan = run["metrics"].get("plan") or {}
        epochs = [h["seconds"] for h in run["metrics"].get("history", []) if h.get("seconds")]
        light = model.get("head") == "light"
        same = (model_name(model.get("backbone"), model.get("head")) == backbone
                and model.get("feature_channels") == feature_channels
                and (bool(model.get("freeze_backbone")) and not light) == frozen_backbone
                and train.get("image_size") == image_size and bool(train.get("amp")) == (device == "cuda"))
        if not same or not epochs or not plan.get("images_per_epoch"):
            continue
        trained = images_per_epoch(int(plan["images_per_epoch"]), int(train.get("batch_size", 8)))
        return len(epochs) * trained / sum(epochs)
    return None


# --- reading the facts --------------------------------------------------------------------------


def resolve_device_name(device: str) -> str:
    """"cpu" or "cuda" for a device option, judged without torch ("auto": CUDA when the NVIDIA
    driver's device files exist)."""
    if device.startswith("cuda"):
        return "cuda"
    if device == "cpu":
        return "cpu"
    gpu = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()
    return "cuda" if gpu else "cpu"


def label_counts(studio: Studio, project: str | int) -> LabelCounts:
    """How many of the project's images have tags, masks, or neither."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        tagged, masked, unlabelled = image_repo.label_counts(session, row.id)
        return LabelCounts(tagged=tagged, masked=masked, unlabelled=unlabelled)


def read_facts(studio: Studio, project: str | int, device: str, *, resume: bool = True,
               loaded: tuple[LabelCounts, int] | None = None) -> PlanFacts:
    """The facts of the project now (``loaded``: the label counts and images of the samples the
    caller loaded, so that the plan matches them; ``resume=False``: no interrupted run continues)."""
    with studio.Session.begin() as session:
        row = resolve_project(session, project)
        if loaded is None:
            counted = LabelCounts(*image_repo.label_counts(session, row.id))
            loaded = counted, image_repo.count_images(session, row.id)
        counts, images = loaded
        classes = tuple(c.name for c in list_classes(session, row.id))
        current = _current_model(studio, session, row.id)
        runs = tuple({"config": dict(r.config or {}), "metrics": dict(r.metrics or {})}
                     for r in run_repo.latest_trained_runs(session, row.id))
        interrupted = run_repo.latest_resumable_run(session, row.id) if resume else None
        resumable = dict(interrupted.config) if interrupted is not None else None
        has_background = bool(row.has_background)
        project_id = row.id
    return PlanFacts(counts=counts, class_names=classes, has_background=has_background, device=device,
                     images=images, current=current, runs=runs, throughput=read_throughput(studio.data_dir),
                     resumable=resumable, features_missing=_features_missing(studio, project_id, runs))


def _features_missing(studio: Studio, project_id: int, runs: tuple[dict[str, Any], ...]) -> dict[str, int]:
    """Images of the project still needing features, for the default light model's spec and that
    of each light model the project trained (another spec's count is taken as all its images)."""
    keys = {FeatureSpec.of_model(ModelConfig(num_classes=2, **CPU_FEATURE_MODEL)).key}
    for run in runs:
        model = run["config"].get("model", {})
        if model.get("head") == "light":
            keys.add(FeatureSpec.for_backbone(model["backbone"], model["feature_image_size"],
                                              model["feature_views"]).key)
    return {key: images_needing_features(studio, project_id, key) for key in keys}


def _current_model(studio: Studio, session: Any, project_id: int) -> CurrentModel | None:
    run_id = label_repo.current_run_id(session, project_id)
    run = run_repo.get_run(session, run_id) if run_id is not None else None
    if run is None or not run.checkpoint_path or not (studio.data_dir / str(run.checkpoint_path)).is_file():
        return None
    config = dict(run.config or {})
    names = config.get("class_names")
    return CurrentModel(version=int(run.version or 0), model=dict(config.get("model", {})),
                        class_names=tuple(names) if names is not None else None)


def plan_training(studio: Studio, project: str | int, requested: str = "auto") -> ModeChoice:
    """The mode "Train on my labels" will use for the project's labels now, with the reason."""
    return choose_mode(label_counts(studio, project), requested)


def preview_training(studio: Studio, project: str | int, options: TrainOptions | None = None) -> TrainPlan:
    """The plan of a training with these options before it starts (UserError when it cannot
    train): what the training service will run, priced by the speed measured by earlier runs
    or, before any, a conservative guess (the service then times a few steps and re-plans)."""
    options = options or TrainOptions()
    return make_plan(read_facts(studio, project, resolve_device_name(options.device)), options)


def minutes(seconds: float) -> str:
    """A duration for people: "3.5 min", "40 s", "1 s" (never "0 s")."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{max(1, round(seconds))} s"
