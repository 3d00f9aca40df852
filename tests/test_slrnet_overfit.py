"""SLRNet learns to segment synthetic shapes from image-level tags alone (wsss).

64 px images with 1-2 coloured shapes (discs / squares) of 3 foreground classes on a noisy grey
background. Trained 200 steps on the tags only, evaluated on the same images against masks it never
saw. Chance reference: predicting background everywhere gives mIoU ~0.21 on these images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from slrnet.config import ModelConfig
from slrnet.model import build_model
from slrnet.modes import compute_losses, pseudo_labels_active

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NUM_FG = 3
COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9]])
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def make_shapes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised images (n, 3, size, size), masks (n, size, size) and multi-hot tags (n, 1 + NUM_FG)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, size, size)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        img = 0.45 + 0.1 * torch.rand(3, 1, 1, generator=g) + 0.05 * torch.randn(3, size, size, generator=g)
        count = 1 + int(torch.randint(0, 2, (1,), generator=g))
        for c in (torch.randperm(NUM_FG, generator=g)[:count] + 1).tolist():
            r = int(torch.randint(size // 8, size // 4, (1,), generator=g))
            cy, cx = torch.randint(r, size - r, (2,), generator=g).tolist()
            if torch.rand(1, generator=g) < 0.5:
                region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                region = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
            img[:, region] = COLOURS[c - 1].view(3, 1) + 0.05 * torch.randn(3, int(region.sum()), generator=g)
            masks[i][region] = c
        images[i] = (img.clamp(0, 1) - MEAN) / STD
    tags = torch.zeros(n, NUM_FG + 1)
    for i in range(n):
        tags[i, masks[i].unique()] = 1.0      # background column included (it is always present)
    return images, masks, tags


def mean_iou(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> float:
    ious = []
    for c in range(num_classes):
        union = ((pred == c) | (gt == c)).sum().item()
        if union:
            ious.append(((pred == c) & (gt == c)).sum().item() / union)
    return sum(ious) / len(ious)


def overfit_from_tags(cfg: ModelConfig, steps: int, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """Train on tags only; return (mIoU of the model, mIoU of all-background) on the training images."""
    torch.manual_seed(seed)
    images, masks, tags = make_shapes(32, 64, seed)
    model = build_model(cfg).train()
    base_lr = 0.01
    optimizer = torch.optim.SGD([{"params": g["params"], "lr": base_lr * g["lr_mult"]}
                                 for g in model.param_groups()], lr=base_lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = len(images) // batch_size
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch_size,))
        x = images[idx]
        batch = {"image": x, "tags": tags[idx], "has_tags": torch.ones(batch_size, dtype=torch.bool),
                 "mask": torch.full((batch_size, 64, 64), 255),
                 "has_mask": torch.zeros(batch_size, dtype=torch.bool)}
        warmup_epochs = steps // steps_per_epoch // 2
        use_pseudo = pseudo_labels_active(step // steps_per_epoch, warmup_epochs)
        losses = compute_losses(cfg, model.forward_train(x), batch, use_pseudo_labels=use_pseudo)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = F.interpolate(model(images)["seg_logits"], size=(64, 64), mode="bilinear",
                               align_corners=True)
    pred = logits.argmax(dim=1)
    return mean_iou(pred, masks, NUM_FG + 1), mean_iou(torch.zeros_like(masks), masks, NUM_FG + 1)


def test_overfit_synthetic_shapes_from_tags_tiny() -> None:
    cfg = ModelConfig(num_classes=NUM_FG + 1, mode="wsss", backbone="tiny", pretrained=False,
                      feature_channels=64)
    miou, chance = overfit_from_tags(cfg, steps=200, batch_size=4)
    # measured 0.66-0.86 over seeds 0-4 of this function (one thread, ~12 s CPU); an earlier
    # variant of the loop gave 0.48 once with two threads, hence the margin
    assert chance < 0.25
    assert miou > 0.40, f"mIoU {miou:.3f} (all-background {chance:.3f})"


@pytest.mark.slow
def test_overfit_synthetic_shapes_from_tags_mobilenet(torch_hub_cache: Path) -> None:
    cfg = ModelConfig(num_classes=NUM_FG + 1, mode="wsss", backbone="mobilenet_v2", pretrained=True)
    miou, chance = overfit_from_tags(cfg, steps=200, batch_size=8)
    assert miou > 0.40, f"mIoU {miou:.3f} (all-background {chance:.3f})"
