"""The service that trains SLRNet on a project's labels: :func:`train`, one training run
(resuming an interrupted one with the same settings); the finished run gets the next model
version but is not current until published (``services.publishing.predict``).

Under ``torchrun`` (WORLD_SIZE > 1) :func:`train` trains with DDP; only rank 0 touches the
database and the checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from services import training_lock
from services.context import Studio
from services.devices import open_device
from services.errors import UserError
from services.features import project_features
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from services.publishing import default_inference
from services.train_options import TrainOptions
from services.train_plan import (
    LabelCounts,
    StepTimes,
    TrainPlan,
    feature_throughput_key,
    make_plan,
    read_facts,
    record_throughput,
    run_config,
    speed_key,
    throughput_key,
)
from slrnet.calibration import learn_presence
from slrnet.config import MODE_FACTS
from slrnet.data import ImageCache, Sample
from slrnet.feature_data import FeatureSample
from slrnet.feature_spec import FeatureSpec
from slrnet.train import (
    CheckpointError,
    TrainingStopped,
    TrainProgress,
    fit,
    load_checkpoint,
    seconds_per_image,
)
from storage import labels as label_repo
from storage import runs as run_repo
from storage.files import read_rgb
from storage.images import iter_images_with_labels
from storage.label_maps import decode_label_png
from storage.projects import list_classes

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainResult:
    run_id: int
    version: int
    mode: str
    reason: str
    epochs: int
    resumed_from_epoch: int
    checkpoint_path: str  # relative to the data dir
    metrics: dict[str, Any]


@dataclass(frozen=True)
class _ProjectLabels:
    project_id: int
    has_background: bool
    class_names: list[str]
    samples: list[Sample]  # every image, with whatever labels it has
    image_ids: list[int]  # the samples' image ids
    tagged: int
    masked: int
    unlabelled: int


# --- loading a project --------------------------------------------------------------------------


def _load_labels(studio: Studio, project_name: str | int) -> _ProjectLabels:
    with studio.Session.begin() as session:
        project = resolve_project(session, project_name)
        classes = list_classes(session, project.id)
        if not classes:
            raise UserError(f"project {project.name!r} has no classes")
        if [c.index for c in classes] != list(range(len(classes))):
            raise UserError(f"project {project.name!r} has gaps in its class indices")
        index_of = {c.id: c.index for c in classes}
        samples: list[Sample] = []
        image_ids: list[int] = []
        tagged = masked = unlabelled = 0
        # The run trains on the masks as they are now: their PNG bytes (small) stay with the samples.
        for image in iter_images_with_labels(session, project.id, mask_png=True):
            tags = None
            if image.tag_class_ids:
                tags = np.zeros(len(classes), dtype=np.float32)
                tags[[index_of[t] for t in image.tag_class_ids]] = 1.0
                tagged += 1
            mask = None
            if image.mask_png is not None:
                mask = functools.partial(decode_label_png, image.mask_png)
                masked += 1
            unlabelled += tags is None and mask is None
            loader = functools.partial(read_rgb, studio.images.abspath(image.path))
            samples.append(Sample(name=image.name, image=loader, tags=tags, mask=mask))
            image_ids.append(image.image_id)
        if not samples:
            raise UserError(f"project {project.name!r} has no images")
        return _ProjectLabels(project.id, project.has_background, [c.name for c in classes], samples,
                              image_ids, tagged, masked, unlabelled)


def _training_samples(data: _ProjectLabels, mode: str) -> tuple[list[Sample], list[int]]:
    """The samples a run of ``mode`` trains on and their image ids: a mode without masks the
    tagged images (masks unused); the mask modes all images, unlabelled ones included (the rule of
    services.train_plan.training_set_size)."""
    if not MODE_FACTS[mode].uses_masks:
        chosen = [(replace(s, mask=None), i) for s, i in zip(data.samples, data.image_ids, strict=True)
                  if s.has_tags]
        return [s for s, _ in chosen], [i for _, i in chosen]
    return list(data.samples), list(data.image_ids)


def _feature_samples(studio: Studio, data: _ProjectLabels, samples: list[Sample], image_ids: list[int],
                     plan: TrainPlan, device: torch.device, progress: ProgressFn,
                     should_stop: StopFn) -> list[FeatureSample]:
    """The samples as stored features of the plan's light head: the missing ones computed first
    (reported through ``progress``; their speed recorded for the next plan), then read from the
    feature store at each visit."""
    spec = FeatureSpec.of_model(plan.model_config)
    started = time.monotonic()
    stored = project_features(studio, data.project_id, spec, device=str(device), progress=progress,
                              should_stop=should_stop)
    spent = time.monotonic() - started
    if plan.features_missing and spent > 0 and device.type == "cpu":
        record_throughput(studio.data_dir, feature_throughput_key(device.type, spec.key),
                          plan.features_missing / spent)
    return [FeatureSample(s.name, functools.partial(stored.__getitem__, image_id), tags=s.tags, mask=s.mask)
            for s, image_id in zip(samples, image_ids, strict=True)]


# --- training -----------------------------------------------------------------------------------


def _distributed_setup(device_name: str) -> bool:
    """Join the torchrun process group when launched by torchrun; True when this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def _broadcast(value: Any) -> Any:
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _progress_adapter(progress: ProgressFn) -> Any:
    def report(p: TrainProgress) -> None:
        total = p.losses.get("total", float("nan"))
        message = f"epoch {p.epoch + 1}/{p.epochs}, step {p.step}/{p.steps_per_epoch}, loss {total:.3f}"
        progress(p.fraction, message, {
            "epoch": p.epoch + 1, "epochs": p.epochs, "step": p.step, "steps": p.steps_per_epoch,
            "losses": p.losses, "lr": p.lr, "images_per_s": p.images_per_s,
        })

    return report


def train(
    studio: Studio,
    project: str | int = "default",
    options: TrainOptions | None = None,
    *,
    resume: bool = True,
    job_id: int | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train one run on the project's labels and give it the next model version.

    What runs is the plan of :func:`services.train_plan.make_plan` for ``options`` (the one the
    preview shows): on CPU with no ``epochs`` it is sized to a wall-time budget (``budget_s``,
    default ``CPU_TRAIN_BUDGET_S``) at the speed earlier runs measured; when none did, a few steps
    are timed first and the plan made again with that speed (reported through ``progress``
    before training starts). ``warm_start`` (default: when a current model of the same classes
    and architecture exists) initialises the weights from that model, skips the warm-up and
    halves the budget; ``False`` starts afresh.

    With ``resume`` an interrupted run of the same settings continues from its last completed
    epoch. Cancellation (``should_stop``) raises :class:`Cancelled` and leaves the current
    (published) model as it was.
    """
    options = options or TrainOptions()
    data = _load_labels(studio, project)
    torch_device = open_device(options.device)
    facts = read_facts(studio, data.project_id, torch_device.type, resume=resume,
                       loaded=(LabelCounts(data.tagged, data.masked, data.unlabelled), len(data.samples)))
    plan = make_plan(facts, options)
    init = _warm_start_weights(studio, data, plan) if plan.warm_start_from is not None else None
    if plan.warm_start_from is not None and init is None:  # its checkpoint let us down: afresh
        facts = replace(facts, current=None)
        plan = make_plan(facts, options)
    samples, image_ids = _training_samples(data, plan.mode)
    if plan.feature_spec_key is not None:
        if plan.features_missing:
            progress(0.0, plan.summary("plan"), {"plan": plan.metrics()})
        samples = _feature_samples(studio, data, samples, image_ids, plan, torch_device, progress,
                                   should_stop)
    else:
        cache = ImageCache(max_side=2 * plan.image_size)
        samples = [replace(s, image=cache.loader(s.name, s.image)) if callable(s.image) else s
                   for s in samples]
    if plan.needs_timing:
        plan = make_plan(replace(facts, probe=_time_steps(samples, plan, torch_device)), options)
    if plan.budget_s is not None:
        progress(0.0, plan.summary("plan"), {"plan": plan.metrics()})
    created_group = _distributed_setup(options.device)
    try:
        return _train(studio, data, plan, samples, torch_device, resume=resume, job_id=job_id,
                      progress=progress, should_stop=should_stop, init_weights=init)
    finally:
        if created_group:
            dist.destroy_process_group()


def _warm_start_weights(studio: Studio, data: _ProjectLabels,
                        plan: TrainPlan) -> dict[str, torch.Tensor] | None:
    """The weights of the model the plan continues from; None when its checkpoint is unreadable
    or names other classes (a run from before the classes were recorded with it)."""
    with studio.Session.begin() as session:
        run_id = label_repo.current_run_id(session, data.project_id)
        run = run_repo.get_run(session, run_id) if run_id is not None else None
        if run is None or not run.checkpoint_path:
            return None
        path = studio.data_dir / str(run.checkpoint_path)
    try:
        state = load_checkpoint(path)
    except (OSError, ValueError) as exc:
        logger.warning("not warm-starting from model version %s: %s", plan.warm_start_from, exc)
        return None
    if list(state["class_names"]) != data.class_names:
        return None
    return state["model"]


def _time_steps(samples: list[Sample], plan: TrainPlan, device: torch.device) -> StepTimes:
    """Seconds per image of a few training steps, with and without the pseudo-label term (warm-up
    epochs skip it and its PAMR), on a fresh model of the plan's."""
    from slrnet.model import build_model

    torch.manual_seed(plan.train_config.seed)
    model = build_model(plan.model_config)
    args = {"model_config": plan.model_config, "train_config": plan.train_config, "device": device}
    return StepTimes(seconds_per_image(model, samples, **args),
                     seconds_per_image(model, samples, steps=1, pseudo_labels=False, **args))


def _start_run(studio: Studio, data: _ProjectLabels, plan: TrainPlan, resume: bool,
               job_id: int | None) -> tuple[int, str]:
    """Take the project's training lock (see :mod:`services.training_lock`; UserError naming the
    running training when another process trains the project) and the run to train: the newest
    interrupted run of the same settings when resuming, else a new one."""
    config = run_config(plan.model_config, plan.train_config, data.class_names)
    owner = training_lock.owner_name()
    with studio.Session.begin() as session:
        training_lock.take_over(session, resolve_project(session, data.project_id))
        previous = run_repo.latest_resumable_run(session, data.project_id) if resume else None
        if previous is not None and previous.config == config:
            run_repo.claim_run(session, previous, owner, job_id)
            logger.info("resuming run %d after epoch %d", previous.id, previous.epoch)
            run_id, path = previous.id, str(previous.checkpoint_path)
        else:
            run = run_repo.create_run(session, data.project_id, mode=plan.mode,
                                      backbone=plan.model_config.backbone, config=config, job_id=job_id,
                                      owner=owner)
            run_id, path = run.id, f"{CHECKPOINT_DIR}/run-{run.id}.pt"
            run_repo.set_checkpoint_path(session, run, path)
    training_lock.hold(studio, run_id)
    return run_id, path


def _end_run(studio: Studio, run_id: int, status: str, error: str | None = None) -> None:
    """Mark a run this process trained failed / cancelled / interrupted (not one taken over)."""
    training_lock.release(run_id)
    with studio.Session.begin() as session:
        run = run_repo.get_run(session, run_id)
        if run is not None and run.status == "running" and run.owner == training_lock.owner_name():
            run_repo.mark_ended(session, run, status, error)


def _fit(studio: Studio, run_id: int, rel_path: str, notify: ProgressFn, **fit_args: Any) -> Any:
    """``fit``; an unreadable checkpoint to resume from is set aside and the run starts afresh
    (``notify`` tells the user)."""
    checkpoint = studio.data_dir / rel_path
    try:
        return fit(checkpoint_path=checkpoint, **fit_args)
    except CheckpointError as exc:
        aside = checkpoint.with_name(checkpoint.name + ".unreadable")
        checkpoint.replace(aside)
        message = f"the checkpoint to resume from is unusable ({exc}); set aside as {aside.name}, " \
                  "starting the run afresh"
        logger.warning("run %d: %s", run_id, message)
        notify(0.0, message, {"restarted": message})
        with studio.Session.begin() as session:
            run = run_repo.get_run(session, run_id)
            run_repo.record_epoch(session, run, 0, {**run.metrics, "restarted": message})
        return fit(checkpoint_path=checkpoint, **fit_args)


def _train(studio: Studio, data: _ProjectLabels, plan: TrainPlan, samples: list[Sample], device: torch.device,
           *, resume: bool, job_id: int | None, progress: ProgressFn, should_stop: StopFn,
           init_weights: dict[str, torch.Tensor] | None = None) -> TrainResult:
    from slrnet.model import build_model

    model_config, train_config = plan.model_config, plan.train_config
    main = not dist.is_initialized() or dist.get_rank() == 0
    run_id, rel_path = _start_run(studio, data, plan, resume, job_id) if main else (0, "")
    run_id, rel_path = _broadcast((run_id, rel_path))
    if main:
        logger.info("run %d: %s (%d images, %d epochs at %d px on %s)", run_id, plan.reason, len(samples),
                    train_config.epochs, train_config.image_size, device)
    progress(0.0, plan.reason, {"mode": plan.mode, "run_id": run_id})

    def on_epoch_end(epoch: int, means: dict[str, float]) -> None:
        if main:
            with studio.Session.begin() as session:
                run = run_repo.get_run(session, run_id)
                history = [*run.metrics.get("history", []), {"epoch": epoch, **means}]
                run_repo.record_epoch(session, run, epoch, {"history": history, "final": means})

    torch.manual_seed(train_config.seed)

    def stop() -> bool:  # also when another process took the run over (see services.training_lock)
        return should_stop() or training_lock.lost(run_id)

    try:
        model = build_model(model_config)
        result = _fit(studio, run_id, rel_path, progress, model=model, samples=samples,
                      model_config=model_config, train_config=train_config, class_names=data.class_names,
                      device=device, progress=_progress_adapter(progress) if main else None,
                      should_stop=stop, on_epoch_end=on_epoch_end, init_weights=init_weights)
    except TrainingStopped as exc:
        if main:
            _end_run(studio, run_id, "cancelled")
        raise Cancelled(f"training cancelled after {exc.epochs_completed} completed epoch(s)") from exc
    except KeyboardInterrupt:
        if main:
            _end_run(studio, run_id, "interrupted")
        raise
    except Exception as exc:
        if main:
            _end_run(studio, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    train_seconds = sum(h.get("seconds", 0.0) for h in result.history)
    metrics = {"history": result.history, "final": result.history[-1] if result.history else {},
               "mode_reason": plan.reason, "plan": plan.metrics(), "train_seconds": train_seconds}
    if main and MODE_FACTS[plan.mode].uses_tags:  # which classes an untagged image shows, from the tagged
        progress(1.0, "learning from the labelled images which classes an image shows", {})
        # read from the images as predict reads them (a light head's samples are stored features)
        # (a light head's: the images, with the stored features its samples read)
        light = plan.feature_spec_key is not None
        shown = samples if not light else _training_samples(data, plan.mode)[0]
        rule = learn_presence(studio.data_dir / rel_path, shown, config=default_inference(device.type),
                              device=device, seed=train_config.seed,
                              features=[s.features for s in samples] if light else None)
        metrics["presence"] = None if rule is None else {"images": rule.images, "cv_f1": rule.cv_f1}
    if main and device.type == "cpu" and train_seconds > 0 and result.resumed_from_epoch == 0:
        # The whole run's speed (warm-up and pseudo-label epochs): what the next plan uses.
        key = throughput_key(*speed_key(device.type, model_config, train_config))
        trained = plan.images_per_epoch * result.epochs_completed
        record_throughput(studio.data_dir, key, trained / train_seconds)
    version = 0
    if main:
        training_lock.release(run_id)
        with studio.Session.begin() as session:
            run = run_repo.get_run(session, run_id)
            run_repo.record_epoch(session, run, result.epochs_completed, metrics)
            version = run_repo.mark_trained(session, run)
    progress(1.0, f"trained model version {version}", {"run_id": run_id, "version": version})
    return TrainResult(run_id=run_id, version=version, mode=plan.mode, reason=plan.reason,
                       epochs=result.epochs_completed, resumed_from_epoch=result.resumed_from_epoch,
                       checkpoint_path=rel_path, metrics=metrics)
