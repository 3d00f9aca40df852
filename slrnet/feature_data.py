"""Training samples made of stored features, and their augmented two-view training set.

A :class:`FeatureSample` is a :class:`slrnet.data.Sample` whose pixels were replaced by the
arrays of `slrnet.features.FeatureExtractor.extract` (or a loader returning them, e.g. a read from
the feature store). :class:`FeatureTrainSet` makes SLRNet's two views from them: view 1 is a
random resized crop (area share ``scale``, aspect 3/4..4/3) of a full-scale view ("s1" or its
mirror "s1f", chosen at random) resampled to ``crop`` x ``crop`` stride-4 cells, view 2 the same
region of a half-scale view ("s0.5" / "s0.5f") at half that size; every level is cropped the same
way (bilinear on the feature grid), and the mask (nearest) onto view 1's stride-4 grid, where the
losses are computed. Batches have the layout `slrnet.light_head.LightSLRNet.forward_train` and
`slrnet.modes.compute_losses` expect ("image" is view 1's stored image, the PAMR guide).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from slrnet.data import IGNORE_INDEX, ArraySource, Labels, epoch_order
from slrnet.features import IMAGE, LEVELS, parse_view

FeatureSource = dict[str, np.ndarray] | Callable[[], dict[str, np.ndarray]]


@dataclass(frozen=True)
class FeatureSample(Labels):
    """One training image as stored features: ``features`` (the arrays, or a loader of them),
    ``tags`` (K,) 0/1 or None, ``mask`` (H, W) uint8 at any resolution of the same image (255 =
    unknown), a loader, or None."""

    name: str
    features: FeatureSource
    tags: np.ndarray | None = None
    mask: ArraySource | None = None


def random_box(height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """A random resized crop's box (x0, y0, x1, y1) in [0, 1] image coordinates, drawn from
    torch's generator (RandomResizedCrop's rule on a ``height`` x ``width`` grid; the whole
    image after 10 misses)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale))
        aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
        w = math.sqrt(target * aspect)
        h = math.sqrt(target / aspect)
        if w <= width and h <= height:
            left = float(torch.rand(())) * (width - w)
            top = float(torch.rand(())) * (height - h)
            return left / width, top / height, (left + w) / width, (top + h) / height
    return 0.0, 0.0, 1.0, 1.0


def crop_resample(x: Tensor, box: tuple[float, float, float, float], size: tuple[int, int],
                  mode: str = "bilinear") -> Tensor:
    """(C, H, W) -> (C, *size): the box (x0, y0, x1, y1 in [0, 1]) resampled onto a size grid
    (cell centres; edges replicated)."""
    x0, y0, x1, y1 = box
    h, w = size
    ys = y0 + (torch.arange(h, dtype=torch.float32) + 0.5) * (y1 - y0) / h
    xs = x0 + (torch.arange(w, dtype=torch.float32) + 0.5) * (x1 - x0) / w
    grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), dim=-1)   # (h, w, 2)
    return F.grid_sample(x[None], grid[None], mode=mode, padding_mode="border", align_corners=False)[0]


def _mirror(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return 1.0 - x1, y0, 1.0 - x0, y1


class FeatureTrainSet(Dataset):
    """Two-view crops of stored features (see the module docstring).

    Args:
        samples: the images' features and labels.
        num_classes: K; tags have this length.
        views: the spec's views; view 1 comes from the largest scale, view 2 from the smallest
            (the largest again when there is one scale), each from any of its flips.
        crop: view 1's side in stride-4 cells (view 2: half, rounded up).
        scale: area share range of the random resized crop.
        has_background: tags get background (column 0) set.
        mask_repeat: visits per epoch of each masked image.
    """

    def __init__(self, samples: Sequence[FeatureSample], num_classes: int, views: Sequence[str], *,
                 crop: int = 40, scale: tuple[float, float] = (0.5, 1.0), has_background: bool = True,
                 mask_repeat: int = 1) -> None:
        if not samples:
            raise ValueError("no training samples")
        for s in samples:
            if s.tags is not None and s.tags.shape != (num_classes,):
                raise ValueError(f"{s.name}: tags have shape {s.tags.shape}, expected ({num_classes},)")
        parsed = {view: parse_view(view) for view in views}
        big, small = max(v[0] for v in parsed.values()), min(v[0] for v in parsed.values())
        self.first = [(view, flip) for view, (scale_, flip) in parsed.items() if scale_ == big]
        self.second = [(view, flip) for view, (scale_, flip) in parsed.items() if scale_ == small]
        self.ratio = small / big
        self.samples = list(samples)
        self.num_classes = num_classes
        self.crop = crop
        self.scale = scale
        self.has_background = has_background
        self.order = epoch_order(self.samples, mask_repeat)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.order)

    def _levels(self, arrays: dict[str, np.ndarray], view: str, box: tuple[float, float, float, float],
                side: int, prefix: str, out: dict[str, Tensor]) -> None:
        for i, level in enumerate(LEVELS):
            size = max(1, math.ceil(side / 2 ** i))
            out[f"{prefix}/{level}"] = crop_resample(torch.from_numpy(arrays[f"{view}/{level}"]).float(), box,
                                                     (size, size))

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        index = self.order[item]
        sample = self.samples[index]
        arrays = sample.features() if callable(sample.features) else sample.features
        view1, flip1 = self.first[int(torch.randint(len(self.first), ()))]
        view2, flip2 = self.second[int(torch.randint(len(self.second), ()))]
        h, w = arrays[f"{view1}/l1"].shape[-2:]
        box = random_box(h, w, self.scale)                      # in the unmirrored image
        out: dict[str, Tensor] = {}
        side2 = max(1, math.ceil(self.crop * self.ratio))
        self._levels(arrays, view1, _mirror(box) if flip1 else box, self.crop, "v1", out)
        self._levels(arrays, view2, _mirror(box) if flip2 else box, side2, "v2", out)
        out["image"] = crop_resample(torch.from_numpy(arrays[f"{view1}/{IMAGE}"]).float(),
                                     _mirror(box) if flip1 else box, (self.crop, self.crop))
        if sample.mask is not None:
            mask_np = sample.mask() if callable(sample.mask) else sample.mask
            if mask_np.ndim != 2:
                raise ValueError(f"{sample.name}: mask must be (H, W), got {mask_np.shape}")
            mask = torch.from_numpy(mask_np.astype(np.float32))[None]
            if flip1:
                mask = mask.flip(-1)
            mask = crop_resample(mask, _mirror(box) if flip1 else box, (self.crop, self.crop), "nearest")[0]
        else:
            mask = torch.full((self.crop, self.crop), float(IGNORE_INDEX))
        tags = torch.zeros(self.num_classes)
        if sample.tags is not None:
            tags = torch.as_tensor(sample.tags, dtype=torch.float32).clone()
            if self.has_background:
                tags[0] = 1.0
        out.update({
            "tags": tags, "has_tags": torch.tensor(sample.has_tags), "mask": mask.long(),
            "has_mask": torch.tensor(sample.has_mask), "flip": torch.tensor(flip1 != flip2),
            "index": torch.tensor(index),
        })
        return out
