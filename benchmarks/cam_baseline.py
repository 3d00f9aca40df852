"""The CAM baseline of the coco128 benchmark: the same backbone with a 1×1 classifier trained by
the multi-label soft-margin loss only; its class activation maps, normalised per class and
restricted to the image's tags, against a constant background threshold give the label map."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from slrnet.backbones import build_backbone
from slrnet.data import Augmentation, Sample, TrainSet, image_to_tensor, normalize
from slrnet.train import poly_factor


class CamNet(nn.Module):
    def __init__(self, num_foreground: int, backbone: str = "mobilenet_v2") -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, output_stride=16, pretrained=True, weights_path=None)
        self.classifier = nn.Conv2d(self.backbone.deep_channels, num_foreground, 1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cams = self.classifier(self.backbone(x)[1])
        return cams.mean((2, 3)), cams


def train_cam(samples: Sequence[Sample], num_classes: int, *, epochs: int, image_size: int,
              batch_size: int = 8, lr: float = 0.005, seed: int = 0,
              has_background: bool = True) -> tuple[CamNet, float]:
    """Train on tagged samples (with a background class, class 0 is not predicted); returns
    (model, images/s)."""
    torch.manual_seed(seed)
    fg = 1 if has_background else 0
    model = CamNet(num_classes - fg)
    data = TrainSet(samples, num_classes, Augmentation(size=image_size), has_background=has_background)
    groups = [{"params": model.backbone.parameters(), "lr": lr},
              {"params": model.classifier.parameters(), "lr": 10 * lr}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * (len(data) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: poly_factor(s, steps, 0.9, 0.01))
    seen, start = 0, time.perf_counter()
    model.train()
    for epoch in range(epochs):
        sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed + epoch))
        loader = DataLoader(data, batch_size=batch_size, drop_last=True, sampler=sampler)
        for batch in loader:
            logits, _ = model(batch["image"])
            loss = F.multilabel_soft_margin_loss(logits, batch["tags"][:, fg:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += batch["image"].shape[0]
    return model.eval(), seen / (time.perf_counter() - start)


@torch.no_grad()
def normalised_cams(model: CamNet, image: np.ndarray, tags: np.ndarray, size: int,
                    has_background: bool = True) -> torch.Tensor:
    """(K-1, H, W) (K without a background class): CAMs (image + flip) scaled to max 1 per class,
    zero for untagged classes."""
    pixels = image_to_tensor(image)[None].float()
    h, w = pixels.shape[-2:]
    factor = size / max(h, w)
    small = (round(h * factor / 16) * 16, round(w * factor / 16) * 16)
    x = normalize(F.interpolate(pixels, size=small, mode="bilinear", antialias=True).clamp(0, 255))
    _, cams = model(torch.cat([x, x.flip(-1)]))
    cams = F.relu(cams[0] + cams[1].flip(-1))
    cams = F.interpolate(cams[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    cams = cams / cams.flatten(1).amax(1).clamp_min(1e-5)[:, None, None]
    fg = 1 if has_background else 0
    return cams * torch.as_tensor(tags[fg:] > 0, dtype=cams.dtype)[:, None, None]


def cam_label_map(cams: torch.Tensor, threshold: float) -> np.ndarray:
    """(H, W) uint8: background (0) where no CAM reaches ``threshold``, else the top class."""
    scores = torch.cat([torch.full((1, *cams.shape[1:]), threshold), cams])
    return scores.argmax(0).to(torch.uint8).numpy()
