"""The service that trains SLRNet on a project's labels: :func:`train`, one training run
(resuming an interrupted one with the same settings); the finished run gets the next model
version but is not current until published (``services.publishing.predict``).

Under ``torchrun`` (WORLD_SIZE > 1) :func:`train` trains with DDP; only rank 0 touches the
database and the checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from services import training_lock
from services.context import Studio
from services.devices import open_device
from services.errors import UserError
from services.lookups import resolve_project
from services.progress import Cancelled, ProgressFn, StopFn, never_stop, no_progress
from services.train_plan import (
    CPU_FEATURE_CHANNELS,
    CPU_IMAGE_SIZE,
    CPU_TRAIN_BUDGET_S,
    MAX_EPOCHS,
    WARM_START_BUDGET_SHARE,
    LabelCounts,
    TrainPlan,
    freezes_backbone,
    plan_for_counts,
    record_throughput,
    throughput_key,
)
from slrnet.config import MODE_LOSS_WEIGHTS, ModelConfig, TrainConfig, default_mask_repeat
from slrnet.data import ImageCache, Sample, epoch_order
from slrnet.train import (
    CheckpointError,
    TrainingStopped,
    TrainProgress,
    default_budget,
    default_warmup,
    fit,
    images_per_epoch,
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

# The CPU default (what `launch.py train` and "Train on my labels" pick with no options): a run
# sized to a wall-time budget from a measured step, and the CPU-sized model. The numbers live in
# the torch-free services.train_plan (the UI's preview uses them); benchmarks/RESULTS.md ("CPU
# defaults") has the measurements behind each value.
CPU_MODEL = {"feature_channels": CPU_FEATURE_CHANNELS, "separable_head": False, "freeze_low": True}
CPU_TRAIN = {"feature_resolution_losses": True}


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
    tagged: int
    masked: int
    unlabelled: int


# --- mode ---------------------------------------------------------------------------------------


def _plan(data: _ProjectLabels, requested: str) -> TrainPlan:
    return plan_for_counts(LabelCounts(data.tagged, data.masked, data.unlabelled), requested)


def _training_samples(data: _ProjectLabels, mode: str) -> list[Sample]:
    """wsss trains on the tagged images (masks unused); the mask modes on all images, unlabelled
    ones included."""
    if mode == "wsss":
        return [replace(s, mask=None) for s in data.samples if s.has_tags]
    return list(data.samples)


# --- loading a project --------------------------------------------------------------------------


def _load_labels(studio: Studio, project_name: str) -> _ProjectLabels:
    with studio.Session.begin() as session:
        project = resolve_project(session, project_name)
        classes = list_classes(session, project.id)
        if not classes:
            raise UserError(f"project {project.name!r} has no classes")
        if [c.index for c in classes] != list(range(len(classes))):
            raise UserError(f"project {project.name!r} has gaps in its class indices")
        index_of = {c.id: c.index for c in classes}
        samples: list[Sample] = []
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
        if not samples:
            raise UserError(f"project {project.name!r} has no images")
        return _ProjectLabels(project.id, project.has_background, [c.name for c in classes], samples,
                              tagged, masked, unlabelled)


# --- training -----------------------------------------------------------------------------------


def _configs(data: _ProjectLabels, mode: str, samples: Sequence[Sample], device: torch.device, *,
             backbone: str | None, epochs: int | None, image_size: int | None, seed: int,
             train_overrides: dict[str, Any] | None,
             model_overrides: dict[str, Any] | None) -> tuple[ModelConfig, TrainConfig]:
    auto_epochs, auto_size = default_budget(len(samples), device)
    cpu = device.type == "cpu"
    if cpu:
        auto_size = CPU_IMAGE_SIZE
    epochs = epochs or auto_epochs
    n_masked = sum(s.has_mask for s in samples)
    try:
        model_config = ModelConfig(**{
            "num_classes": len(data.class_names), "mode": mode, "backbone": backbone or "mobilenet_v2",
            "has_background": data.has_background, **(CPU_MODEL if cpu else {}),
            "freeze_backbone": freezes_backbone(device.type, mode, model_overrides),
            **(model_overrides or {}),
        })
        train_config = TrainConfig(**{
            "epochs": epochs, "warmup_epochs": default_warmup(epochs), "image_size": image_size or auto_size,
            "batch_size": min(16 if device.type == "cuda" else 8, len(samples)),
            "mask_repeat": default_mask_repeat(n_masked, len(samples) - n_masked, mode),
            "amp": device.type == "cuda", "seed": seed, "loss_weights": MODE_LOSS_WEIGHTS[mode],
            **(CPU_TRAIN if cpu else {}),
            **(train_overrides or {}),
        })
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad training settings: {exc}") from exc
    return model_config, train_config


def _run_config(model_config: ModelConfig, train_config: TrainConfig) -> dict[str, Any]:
    """The run's settings as the JSON column gives them back (tuples become lists)."""
    return json.loads(json.dumps({"model": asdict(model_config), "train": asdict(train_config)}))


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
            "losses": p.losses, "lr": p.lr, "images_per_s": p.images_per_s, "eta_s": p.eta_s,
        })

    return report


def train(
    studio: Studio,
    project: str = "default",
    *,
    mode: str = "auto",
    backbone: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
    resume: bool = True,
    job_id: int | None = None,
    train_overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    budget_s: float | None = None,
    warm_start: bool | None = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainResult:
    """Train one run on the project's labels and give it the next model version.

    On CPU with no ``epochs`` the run is sized to a wall-time budget (``budget_s``, default
    ``CPU_TRAIN_BUDGET_S``): a few steps are timed first and the epochs that fit are planned (the
    plan is reported through ``progress`` before training starts). ``warm_start`` (default: when
    a current model of the same classes and architecture exists) initialises the weights from
    that model, skips the warm-up and halves the budget; ``False`` starts afresh.

    With ``resume`` an interrupted run of the same settings continues from its last completed
    epoch. Cancellation (``should_stop``) raises :class:`Cancelled` and leaves the current
    (published) model as it was. ``train_overrides`` / ``model_overrides`` set further
    :class:`TrainConfig` / :class:`ModelConfig` fields (benchmarks, advanced users).
    """
    data = _load_labels(studio, project)
    choice = _plan(data, mode)
    samples = _training_samples(data, choice.mode)
    torch_device = open_device(device)
    model_config, train_config = _configs(
        data, choice.mode, samples, torch_device, backbone=backbone, epochs=epochs, image_size=image_size,
        seed=seed, train_overrides=train_overrides, model_overrides=model_overrides)
    cache = ImageCache(max_side=2 * train_config.image_size)
    samples = [replace(s, image=cache.loader(s.name, s.image)) if callable(s.image) else s for s in samples]
    init = _warm_start_weights(studio, data, model_config) if warm_start is not False else None
    if warm_start and init is None:
        raise UserError("no current model with the same classes and architecture to continue from; "
                        "train afresh")
    plan: dict[str, Any] = {}
    if init is not None:
        train_config = replace(train_config, warmup_epochs=0)
        plan["warm_start_from_version"] = init[1]
    if epochs is None and torch_device.type == "cpu" and "epochs" not in (train_overrides or {}):
        budget = budget_s if budget_s is not None else CPU_TRAIN_BUDGET_S
        if init is not None and budget_s is None:
            budget *= WARM_START_BUDGET_SHARE
        train_config, plan = _plan_budget(studio, data, samples, model_config, train_config, torch_device,
                                          budget, plan)
        progress(0.0, plan["summary"], {"plan": plan})
    created_group = _distributed_setup(device)
    try:
        return _train(studio, data, choice, samples, model_config, train_config, torch_device,
                      resume=resume, job_id=job_id, progress=progress, should_stop=should_stop,
                      init_weights=init[0] if init is not None else None, plan=plan)
    finally:
        if created_group:
            dist.destroy_process_group()


def _warm_start_weights(studio: Studio, data: _ProjectLabels,
                        model_config: ModelConfig) -> tuple[dict[str, torch.Tensor], int] | None:
    """The current model's weights and version when its classes and architecture equal this run's."""
    with studio.Session.begin() as session:
        run_id = label_repo.current_run_id(session, data.project_id)
        run = run_repo.get_run(session, run_id) if run_id is not None else None
        if run is None or not run.checkpoint_path:
            return None
        path, version = studio.data_dir / str(run.checkpoint_path), int(run.version or 0)
    try:
        state = load_checkpoint(path)
    except (OSError, ValueError) as exc:
        logger.warning("not warm-starting from model version %d: %s", version, exc)
        return None
    architecture = {k: v for k, v in asdict(model_config).items() if k not in ("pretrained", "mode")}
    theirs = {k: v for k, v in state["model_config"].items() if k in architecture}
    if list(state["class_names"]) != data.class_names \
            or json.loads(json.dumps(architecture)) != json.loads(json.dumps(theirs)):
        return None
    return state["model"], version


def _plan_budget(studio: Studio, data: _ProjectLabels, samples: list[Sample], model_config: ModelConfig,
                 train_config: TrainConfig, device: torch.device, budget_s: float,
                 plan: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """Size the run to ``budget_s`` from timed steps (or keep the epochs of the interrupted run
    it will resume). Returns the train config and the plan shown to the user.

    Warm-up epochs (no pseudo-label term, no PAMR) and the later ones are timed apart; an epoch
    trains whole batches only (the loader drops a last partial batch)."""
    from slrnet.model import build_model

    per_epoch = images_per_epoch(len(epoch_order(samples, train_config.mask_repeat)),
                                 train_config.batch_size)
    warm_started = bool(plan.get("warm_start_from_version"))

    def warmup_of(n: int) -> int:
        return 0 if warm_started else min(default_warmup(n), n)

    resumable = _resumable_epochs(studio, data, model_config, train_config)
    seconds = warm_seconds = None
    if resumable is not None:
        epochs = resumable
    else:
        torch.manual_seed(train_config.seed)
        probe = build_model(model_config)
        seconds = seconds_per_image(probe, samples, model_config=model_config, train_config=train_config,
                                    device=device)
        warm_seconds = seconds_per_image(probe, samples, model_config=model_config,
                                         train_config=train_config, device=device, steps=1,
                                         pseudo_labels=False)
        del probe

        def cost(n: int) -> float:  # warm-up epochs skip the pseudo-label term and its PAMR
            return per_epoch * (warmup_of(n) * warm_seconds + (n - warmup_of(n)) * seconds)

        epochs = max([1, *(n for n in range(1, MAX_EPOCHS + 1) if cost(n) <= budget_s)])
    train_config = replace(train_config, epochs=epochs, warmup_epochs=warmup_of(epochs))
    estimate = None if seconds is None else cost(epochs)
    plan = {**plan, "epochs": epochs, "warmup_epochs": train_config.warmup_epochs,
            "image_size": train_config.image_size, "budget_s": budget_s, "images_per_epoch": per_epoch,
            "seconds_per_image": seconds, "warmup_seconds_per_image": warm_seconds, "estimated_s": estimate}
    if estimate is None:
        plan["summary"] = f"resuming the interrupted run: {epochs} epochs at {train_config.image_size} px"
    else:
        plan["summary"] = (f"plan: {epochs} epoch(s) of {per_epoch} images at {train_config.image_size} px, "
                           f"about {_minutes(estimate)} of training (measured {1 / seconds:.1f} img/s; "
                           f"budget {_minutes(budget_s)})")
    return train_config, plan


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _resumable_epochs(studio: Studio, data: _ProjectLabels, model_config: ModelConfig,
                      train_config: TrainConfig) -> int | None:
    """Epochs of the interrupted run that `_start_run` would resume (same settings but the
    budget-derived epochs), so a resumed budgeted run keeps its plan."""
    mine = _run_config(model_config, train_config)
    with studio.Session.begin() as session:
        previous = run_repo.latest_resumable_run(session, data.project_id)
        if previous is None:
            return None
        theirs = dict(previous.config)
    strip = ("epochs", "warmup_epochs")
    same = (theirs.get("model") == mine["model"]
            and {k: v for k, v in theirs.get("train", {}).items() if k not in strip}
            == {k: v for k, v in mine["train"].items() if k not in strip})
    return int(theirs["train"]["epochs"]) if same else None


def _start_run(studio: Studio, data: _ProjectLabels, mode: str, model_config: ModelConfig,
               train_config: TrainConfig, resume: bool, job_id: int | None) -> tuple[int, str]:
    """Take the project's training lock (see :mod:`services.training_lock`; UserError naming the
    running training when another process trains the project) and the run to train: the newest
    interrupted run of the same settings when resuming, else a new one."""
    config = _run_config(model_config, train_config)
    owner = training_lock.owner_name()
    with studio.Session.begin() as session:
        training_lock.take_over(session, resolve_project(session, data.project_id))
        previous = run_repo.latest_resumable_run(session, data.project_id) if resume else None
        if previous is not None and previous.config == config:
            run_repo.claim_run(session, previous, owner, job_id)
            logger.info("resuming run %d after epoch %d", previous.id, previous.epoch)
            run_id, path = previous.id, str(previous.checkpoint_path)
        else:
            run = run_repo.create_run(session, data.project_id, mode=mode, backbone=model_config.backbone,
                                      config=config, job_id=job_id, owner=owner)
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


def _train(studio: Studio, data: _ProjectLabels, choice: TrainPlan, samples: list[Sample],
           model_config: ModelConfig, train_config: TrainConfig, device: torch.device, *, resume: bool,
           job_id: int | None, progress: ProgressFn, should_stop: StopFn,
           init_weights: dict[str, torch.Tensor] | None = None,
           plan: dict[str, Any] | None = None) -> TrainResult:
    from slrnet.model import build_model

    main = not dist.is_initialized() or dist.get_rank() == 0
    run_id, rel_path = _start_run(studio, data, choice.mode, model_config, train_config, resume, job_id) \
        if main else (0, "")
    run_id, rel_path = _broadcast((run_id, rel_path))
    if main:
        logger.info("run %d: %s (%d images, %d epochs at %d px on %s)", run_id, choice.reason, len(samples),
                    train_config.epochs, train_config.image_size, device)
    progress(0.0, choice.reason, {"mode": choice.mode, "run_id": run_id})

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
               "mode_reason": choice.reason, "plan": plan or {}, "train_seconds": train_seconds}
    if main and device.type == "cpu" and train_seconds > 0 and result.resumed_from_epoch == 0:
        # The whole run's speed (warm-up and pseudo-label epochs): what the next preview uses.
        per_epoch = (plan or {}).get("images_per_epoch") or images_per_epoch(
            len(epoch_order(samples, train_config.mask_repeat)), train_config.batch_size)
        record_throughput(studio.data_dir, throughput_key(device.type, model_config.backbone,
                                                          model_config.feature_channels,
                                                          train_config.image_size,
                                                          model_config.freeze_backbone),
                          per_epoch * result.epochs_completed / train_seconds)
    version = 0
    if main:
        training_lock.release(run_id)
        with studio.Session.begin() as session:
            run = run_repo.get_run(session, run_id)
            run_repo.record_epoch(session, run, result.epochs_completed, metrics)
            version = run_repo.mark_trained(session, run)
    progress(1.0, f"trained model version {version}", {"run_id": run_id, "version": version})
    return TrainResult(run_id=run_id, version=version, mode=choice.mode, reason=choice.reason,
                       epochs=result.epochs_completed, resumed_from_epoch=result.resumed_from_epoch,
                       checkpoint_path=rel_path, metrics=metrics)
