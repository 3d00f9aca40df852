"""slrnet.train and slrnet.data: schedule, warm-up, augmentation, determinism, checkpoints, resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

import slrnet.train as train_mod
from slrnet.config import IGNORE_INDEX, ModelConfig, TrainConfig
from slrnet.data import Augmentation, Sample, TrainSet
from slrnet.model import build_model
from slrnet.train import (
    TrainingStopped,
    build_optimizer,
    build_scheduler,
    config_from_dict,
    fit,
    load_checkpoint,
    poly_factor,
    save_checkpoint,
)

K = 3
CPU = torch.device("cpu")


def tiny_config(mode: str = "ssss_tags") -> ModelConfig:
    return ModelConfig(num_classes=K, mode=mode, backbone="tiny", pretrained=False, feature_channels=32)


def synthetic_samples(n: int = 6) -> list[Sample]:
    """Images whose top half is class 1 (red) or 2 (blue) on a grey background (class 0)."""
    out = []
    for i in range(n):
        cls = 1 + i % 2
        image = np.full((40, 48, 3), 128, dtype=np.uint8)
        image[:20] = (220, 30, 30) if cls == 1 else (30, 30, 220)
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[:20] = cls
        tags = np.zeros(K, dtype=np.float32)
        tags[cls] = 1
        out.append(Sample(f"im{i}", image, tags=tags, mask=mask if i < 2 else None))
    return out


def small_train_config(**kw: object) -> TrainConfig:
    base = {"epochs": 2, "warmup_epochs": 1, "batch_size": 3, "image_size": 32, "seed": 0}
    return TrainConfig(**{**base, **kw})


def run_fit(path: Path, cfg: TrainConfig, **kw: object) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    model = build_model(tiny_config())
    fit(model, synthetic_samples(), model_config=tiny_config(), train_config=cfg,
        class_names=["bg", "r", "b"], checkpoint_path=path, device=CPU, **kw)
    return model


# --- schedule and optimiser ---------------------------------------------------------------------


def test_poly_factor_starts_at_one_and_reaches_the_floor_exactly_at_the_end() -> None:
    total = 37
    values = [poly_factor(s, total, 0.9, 0.01) for s in range(total + 3)]
    assert values[0] == 1.0
    assert values[total] == 0.01
    assert values[total - 1] > 0.01
    assert values[total + 2] == 0.01
    assert all(a > b for a, b in itertools.pairwise(values[: total + 1]))


def test_optimizer_uses_lr_multipliers_and_scheduler_hits_floor_after_all_steps() -> None:
    model = build_model(tiny_config())
    cfg = small_train_config(lr=0.01, min_lr_ratio=0.05)
    opt = build_optimizer(model, cfg)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.01)
    assert by_name["new"]["lr"] == pytest.approx(0.1)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    sched = build_scheduler(opt, 10, cfg)
    for _ in range(10):
        opt.step()
        sched.step()
    assert by_name["backbone"]["lr"] == pytest.approx(0.01 * 0.05)
    assert by_name["new"]["lr"] == pytest.approx(0.1 * 0.05)


# --- data ---------------------------------------------------------------------------------------


def test_augmentation_moves_image_and_mask_together() -> None:
    torch.manual_seed(0)
    aug = Augmentation(size=24, scale=(0.3, 1.0), jitter=0.0)
    image = torch.zeros(3, 40, 48, dtype=torch.uint8)
    image[0, :, :24] = 255  # left half red = class 1, right half blue = class 2
    image[2, :, 24:] = 255
    mask = torch.full((40, 48), 2, dtype=torch.uint8)
    mask[:, :24] = 1
    flipped = 0
    for _ in range(20):
        img, m = aug(image, mask)
        assert img.shape == (3, 24, 24) and m.shape == (24, 24)
        red = (img[0] > 245) & (img[2] < 10)  # pure colours: blended edge pixels excluded
        blue = (img[2] > 245) & (img[0] < 10)
        assert (m[red] == 1).all() and (m[blue] == 2).all()
        flipped += bool((m[:, 0] == 2).all() and (m[:, -1] == 1).all())
    assert flipped > 0  # the flip happens, and to both


def test_train_set_batch_layout() -> None:
    samples = synthetic_samples(4)
    samples.append(Sample("unlabelled", samples[0].image))
    ds = TrainSet(samples, K, Augmentation(size=32, jitter=0.0), has_background=True, mask_repeat=3)
    assert len(ds) == 2 * 3 + 3  # the two masked images three times each
    item = ds[ds.order.index(2)]  # tags, no mask
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["tags"].tolist() == [1.0, 1.0, 0.0]  # background column set
    assert bool(item["has_tags"]) and not bool(item["has_mask"])
    assert (item["mask"] == IGNORE_INDEX).all() and item["mask"].dtype == torch.int64
    last = ds[len(ds) - 1]
    assert not bool(last["has_tags"]) and last["tags"].sum() == 0


def test_train_set_rejects_mismatched_mask() -> None:
    bad = Sample("bad", np.zeros((10, 10, 3), np.uint8), mask=np.zeros((5, 7), np.uint8))
    ds = TrainSet([bad], K, Augmentation(size=32))
    with pytest.raises(ValueError, match="bad"):
        ds[0]


def test_image_cache_downscales_once_and_masks_follow() -> None:
    from slrnet.data import ImageCache

    calls = []
    big = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)

    def load() -> np.ndarray:
        calls.append(1)
        return big

    cache = ImageCache(max_side=80, max_bytes=10**6)
    loader = cache.loader("a", load)
    assert loader().shape == (60, 80, 3) and loader().shape == (60, 80, 3)
    assert len(calls) == 1 and cache.bytes == 60 * 80 * 3
    mask = np.zeros((120, 160), np.uint8)
    mask[:, 80:] = 2
    item = TrainSet([Sample("a", loader, mask=mask)], K, Augmentation(size=32, scale=(1.0, 1.0),
                                                                      ratio=(4 / 3, 4 / 3), flip=False))[0]
    assert set(item["mask"].unique().tolist()) == {0, 2}
    # beyond max_bytes the least recently used image is dropped
    small = ImageCache(max_side=80, max_bytes=60 * 80 * 3 + 1)
    small.get("a", load)
    small.get("b", load)
    assert small.bytes == 60 * 80 * 3 and len(calls) == 3


# --- fit ----------------------------------------------------------------------------------------


def test_warmup_turns_on_pseudo_labels_exactly_after_warmup_epochs(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = train_mod.compute_losses

    def spy(cfg, outs, batch, use_pseudo_labels, **kwargs):
        seen.append(use_pseudo_labels)
        return real(cfg, outs, batch, use_pseudo_labels, **kwargs)

    monkeypatch.setattr(train_mod, "compute_losses", spy)
    run_fit(tmp_path / "c.pt", small_train_config(epochs=3, warmup_epochs=2))
    steps = len(seen) // 3
    assert seen == [False] * (2 * steps) + [True] * steps


def test_same_seed_gives_identical_weights_and_checkpoint_describes_itself(tmp_path: Path) -> None:
    progress: list[train_mod.TrainProgress] = []
    a = run_fit(tmp_path / "a.pt", small_train_config(), progress=progress.append)
    b = run_fit(tmp_path / "b.pt", small_train_config())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = run_fit(tmp_path / "c.pt", small_train_config(seed=1))
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values(),
                                                         strict=True))

    state = load_checkpoint(tmp_path / "a.pt")
    assert state["epoch"] == 2 and state["finished"]
    assert state["class_names"] == ["bg", "r", "b"]
    assert {"model", "optimizer", "scheduler", "model_config", "train_config", "metrics"} <= state.keys()
    assert config_from_dict(TrainConfig, state["train_config"]) == small_train_config()
    assert config_from_dict(ModelConfig, state["model_config"]) == tiny_config()
    assert [h["epoch"] for h in state["metrics"]["history"]] == [1, 2]
    assert list(tmp_path.glob(".*tmp*")) == []

    assert progress[-1].fraction == 1.0
    assert {"total", "cls", "mask_ce"} <= progress[-1].losses.keys()


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = small_train_config(epochs=3)
    full = run_fit(tmp_path / "full.pt", cfg)

    steps = 0

    def stop_in_epoch_two() -> bool:
        nonlocal steps
        steps += 1
        return steps > 2  # 6 images / batch 3 = 2 steps per epoch: stop at epoch 2's first step

    with pytest.raises(TrainingStopped) as info:
        run_fit(tmp_path / "part.pt", cfg, should_stop=stop_in_epoch_two)
    assert info.value.epochs_completed == 1
    assert load_checkpoint(tmp_path / "part.pt")["epoch"] == 1

    epochs_seen: list[int] = []
    resumed = run_fit(tmp_path / "part.pt", cfg, on_epoch_end=lambda e, _: epochs_seen.append(e))
    assert epochs_seen == [2, 3]
    for (name, pa), pb in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path: Path) -> None:
    run_fit(tmp_path / "c.pt", small_train_config(epochs=1))
    with pytest.raises(ValueError, match="different configuration"):
        run_fit(tmp_path / "c.pt", small_train_config(epochs=2))


def test_save_checkpoint_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"format": 1, "epoch": 1})

    def broken_save(obj: object, f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"format": 1, "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_masks_are_oversampled_to_their_mode_share() -> None:
    """ssss: masks about half of an epoch's views (the official semi config without tags), with
    tags a third (with them); never below 1, capped, and 1 without masks or in wsss."""
    from slrnet.config import MAX_MASK_REPEAT, default_mask_repeat
    from slrnet.data import epoch_order

    assert default_mask_repeat(20, 347, "ssss") == 17  # 340 mask views of 687
    assert default_mask_repeat(20, 347, "ssss_tags") == 9  # 180 of 527
    assert default_mask_repeat(0, 347, "ssss") == default_mask_repeat(5, 50, "wsss") == 1
    assert default_mask_repeat(100, 10, "ssss") == 1
    assert default_mask_repeat(1, 10_000, "ssss") == MAX_MASK_REPEAT
    samples = [Sample(name=str(i), image=np.zeros((4, 4, 3), np.uint8),
                      mask=np.zeros((4, 4), np.uint8) if i < 2 else None) for i in range(12)]
    order = epoch_order(samples, default_mask_repeat(2, 10, "ssss"))
    assert sum(samples[i].has_mask for i in order) == 10 and len(order) == 20
