"""Training SLRNet: plain functions in the style of torchvision's segmentation reference.

``fit`` runs the epochs, writes one self-describing checkpoint atomically after every epoch and
resumes from it after a crash; ``train_one_epoch`` does one pass; progress goes to a callback and
cancellation comes from a ``should_stop`` callable checked between steps. Under torch.distributed
(torchrun) the model is wrapped in DDP, the data is split by a DistributedSampler and only rank 0
writes the checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from slrnet.config import ModelConfig, TrainConfig, predict_size
from slrnet.data import Augmentation, Sample, TrainSet
from slrnet.feature_data import FeatureSample, FeatureTrainSet
from slrnet.light_head import LightSLRNet
from slrnet.modes import compute_losses, pseudo_labels_active
from slrnet.schedule import drops_last_batch

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
C = TypeVar("C")


class TrainingStopped(Exception):
    """``should_stop()`` said so; the checkpoint of the last completed epoch stays valid."""

    def __init__(self, epochs_completed: int) -> None:
        super().__init__(f"training stopped after {epochs_completed} completed epoch(s)")
        self.epochs_completed = epochs_completed


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback receives after every optimisation step."""

    epoch: int  # 0-based
    epochs: int
    step: int  # 1-based within the epoch
    steps_per_epoch: int
    losses: dict[str, float]  # running means over this epoch
    lr: float
    images_per_s: float

    @property
    def fraction(self) -> float:
        return (self.epoch * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)


ProgressCallback = Callable[[TrainProgress], None]
StopCheck = Callable[[], bool]


@dataclass
class FitResult:
    epochs_completed: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0


# --- devices, seeds, budgets -------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; under torchrun each rank takes its LOCAL_RANK GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


# --- optimiser and schedule ---------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over ``model.param_groups()``; each group's lr is ``cfg.lr × lr_mult`` (new layers ×10)."""
    groups = [
        {"params": g["params"], "lr": cfg.lr * g["lr_mult"], "lr_mult": g["lr_mult"], "name": g["name"]}
        for g in model.param_groups()
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.momentum > 0)


def poly_factor(step: int, total_steps: int, power: float, floor: float) -> float:
    """``floor + (1 - floor)(1 - step/total)^power``: 1 at step 0, exactly ``floor`` from ``total`` on."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return floor + (1.0 - floor) * (1.0 - progress) ** power


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        return poly_factor(step, total_steps, cfg.poly_power, cfg.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- checkpoints --------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    Written through a Python file, so a full disk raises ``OSError(ENOSPC)`` (``torch.save`` to a
    path raises a RuntimeError about stream positions instead)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupt, unreadable, or not ours."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, tensors on CPU; :class:`CheckpointError` when it cannot be read."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, bad pickle, I/O error: all mean "unusable"
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an SLRNet Studio checkpoint")
    return state


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a (possibly nested) frozen config dataclass from ``dataclasses.asdict`` output."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def input_size(model_config: ModelConfig, train_config: dict[str, Any]) -> int:
    """The longer image side a checkpoint's model predicts at by default (`config.predict_size`)."""
    return predict_size(model_config, int(train_config["image_size"]))


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """The model described by a checkpoint, weights loaded, in eval mode, on CPU."""
    from slrnet.model import build_model

    model_config = config_from_dict(ModelConfig, state["model_config"])
    # The weights come from the checkpoint: never fetch ImageNet weights again.
    model = build_model(config_from_dict(ModelConfig, {**asdict(model_config), "pretrained": False}))
    model.load_state_dict(state["model"])
    return model.eval()


# --- the loop -----------------------------------------------------------------------------------


def train_outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The two-view training outputs of a batch: `SLRNet.forward_train(batch["image"])`, or for a
    light head (`ModelConfig.head == "light"`) `LightSLRNet.forward_train(batch)`."""
    if isinstance(model, LightSLRNet):
        return model.forward_train(batch)
    return model.forward_train(batch["image"])


class _TrainForward(nn.Module):
    """Routes ``forward`` to the two-view pass so DDP sees (and synchronises) it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return train_outputs(self.model, batch)


def train_one_epoch(
    step_model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of every loss term. ``step_model(batch)`` must
    return the two-view training outputs (a :class:`_TrainForward`, possibly inside DDP)."""
    step_model.train()
    use_pseudo = pseudo_labels_active(epoch, train_config.warmup_epochs)
    amp = train_config.amp and device.type == "cuda"
    sums: dict[str, float] = {}
    steps = len(loader)
    start = time.perf_counter()
    seen = 0
    for step, batch in enumerate(loader, start=1):
        if should_stop is not None and should_stop():
            raise TrainingStopped(epoch)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            outs = step_model(batch)
            losses = compute_losses(model_config, outs, batch, use_pseudo, weights=train_config.loss_weights,
                                    feature_resolution=train_config.feature_resolution_losses)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        seen += batch["image"].shape[0]
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(TrainProgress(
                epoch=epoch, epochs=train_config.epochs, step=step, steps_per_epoch=steps,
                losses={k: v / step for k, v in sums.items()}, lr=optimizer.param_groups[0]["lr"],
                images_per_s=seen / max(elapsed, 1e-9),
            ))
    if not math.isfinite(sums.get("total", 0.0)):
        raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss is not finite)")
    return {k: v / max(steps, 1) for k, v in sums.items()}


def seconds_per_image(model: nn.Module, samples: Sequence[Sample], *, model_config: ModelConfig,
                      train_config: TrainConfig, device: torch.device, steps: int = 2,
                      pseudo_labels: bool = True) -> float:
    """Measured training cost: seconds per image of a full step (two views, the pseudo-label term
    on or off, backward, SGD), median of ``steps`` steps after one warm-up, on a copy of ``model``.

    What a budgeted run is sized with when no earlier run measured the speed (services.train_plan);
    the copy keeps ``model`` and the RNG streams of the real run untouched.
    """
    import copy

    probe = copy.deepcopy(model).to(device).train()
    optimizer = build_optimizer(probe, train_config)
    dataset = build_train_set(samples, model_config, train_config)
    batch_size = min(train_config.batch_size, len(dataset))
    rng_state = torch.get_rng_state()
    try:
        torch.manual_seed(train_config.seed + 12_345)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
        times: list[float] = []
        batches = (b for _ in range(steps + 1) for b in loader)  # small sets: go round again
        for step, batch in enumerate(batches):
            if step > steps:
                break
            start = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            outs = train_outputs(probe, batch)
            losses = compute_losses(model_config, outs, batch, pseudo_labels,
                                    weights=train_config.loss_weights,
                                    feature_resolution=train_config.feature_resolution_losses)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step > 0:
                times.append((time.perf_counter() - start) / batch_size)
    finally:
        torch.set_rng_state(rng_state)
    return sorted(times)[len(times) // 2]


def make_loader(dataset: TrainSet, cfg: TrainConfig, epoch: int) -> DataLoader:
    """The epoch's loader: shuffled from (seed, epoch), split across ranks under DDP."""
    drop_last = drops_last_batch(len(dataset), cfg.batch_size)
    if dist.is_initialized():
        sampler: Any = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=cfg.num_workers, persistent_workers=False,
                      generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 1)))


def build_train_set(samples: Sequence[Sample] | Sequence[FeatureSample], model_config: ModelConfig,
                    cfg: TrainConfig) -> TrainSet | FeatureTrainSet:
    """The augmented training set: image crops of ``image_size`` px (`TrainSet`), or for a light
    head crops of stored features of ``image_size / 4`` stride-4 cells (`FeatureTrainSet`, samples
    are `FeatureSample`)."""
    if model_config.head == "light":
        return FeatureTrainSet(samples, model_config.num_classes, model_config.feature_views,  # type: ignore[arg-type]
                               crop=max(1, cfg.image_size // 4), scale=cfg.crop_scale,
                               has_background=model_config.has_background, mask_repeat=cfg.mask_repeat)
    augmentation = Augmentation(size=cfg.image_size, scale=cfg.crop_scale, flip=True, jitter=cfg.color_jitter)
    return TrainSet(samples, model_config.num_classes, augmentation,
                    has_background=model_config.has_background, mask_repeat=cfg.mask_repeat)


def fit(
    model: nn.Module,
    samples: Sequence[Sample],
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    class_names: Sequence[str],
    checkpoint_path: Path,
    device: torch.device,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` for ``train_config.epochs`` epochs, resuming from ``checkpoint_path`` when it
    holds an unfinished run of the same configuration.

    After each epoch the checkpoint is rewritten (rank 0 only) and ``on_epoch_end(epochs_done,
    mean_losses)`` is called. Raises :class:`TrainingStopped` when ``should_stop()`` turns True.
    ``init_weights`` (a state dict of the same architecture) warm-starts a fresh run from an
    earlier model; a resumed run ignores it (its checkpoint holds the newer weights).
    """
    cfg = train_config
    checkpoint_path = Path(checkpoint_path)
    dataset = build_train_set(samples, model_config, cfg)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(make_loader(dataset, cfg, 0))
    scheduler = build_scheduler(optimizer, cfg.epochs * steps_per_epoch, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    history: list[dict[str, float]] = []
    start_epoch = 0
    if init_weights is not None and not checkpoint_path.is_file():
        model.load_state_dict(init_weights)
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if state["train_config"] != asdict(cfg) or state["model_config"] != asdict(model_config):
            raise ValueError(f"{checkpoint_path} belongs to a run with a different configuration")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        history = list(state["metrics"].get("history", []))
        logger.info("resuming %s after epoch %d/%d", checkpoint_path.name, start_epoch, cfg.epochs)

    step_model: nn.Module = _TrainForward(model)
    if dist.is_initialized():
        device_ids = [device.index] if device.type == "cuda" else None
        step_model = DistributedDataParallel(step_model, device_ids=device_ids)
    rank = dist.get_rank() if dist.is_initialized() else 0

    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rank))  # augmentations, dropout: reproducible
        loader = make_loader(dataset, cfg, epoch)
        t0 = time.perf_counter()
        means = train_one_epoch(
            step_model, loader, optimizer, scheduler, scaler, model_config=model_config,
            train_config=cfg, epoch=epoch, device=device, progress=progress, should_stop=should_stop,
        )
        history.append({"epoch": epoch + 1, **means, "lr": optimizer.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - t0})
        if is_main_process():
            save_checkpoint(checkpoint_path, {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "finished": epoch + 1 == cfg.epochs,
                "model_config": asdict(model_config),
                "train_config": asdict(cfg),
                "class_names": list(class_names),
                "metrics": {"history": history, "final": history[-1]},
            })
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, means)
    return FitResult(epochs_completed=cfg.epochs, history=history, resumed_from_epoch=start_epoch)
