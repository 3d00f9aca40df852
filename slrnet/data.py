"""Training samples, the augmented training dataset and its collate function.

A :class:`Sample` is what the caller knows about one image: pixels (an array or a loader), its
image-level tags if any and its pixel mask if any. Images with neither are unlabelled data. The
dataset applies the paper's augmentations (random resized crop, horizontal flip, colour jitter)
jointly to image and mask and yields the batch layout :func:`slrnet.modes.compute_losses` expects.
All randomness comes from torch's generator, so seeding torch makes an epoch reproducible.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torch.utils.data import Dataset

from slrnet.config import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ArraySource = np.ndarray | Callable[[], np.ndarray]


class Labels:
    """What a training sample says about its labels (its ``tags`` and ``mask`` fields)."""

    tags: np.ndarray | None
    mask: object | None

    @property
    def has_tags(self) -> bool:
        return self.tags is not None

    @property
    def has_mask(self) -> bool:
        return self.mask is not None


@dataclass(frozen=True)
class Sample(Labels):
    """One training image.

    ``image``: (H, W, 3) uint8 RGB, or a zero-argument loader returning it (kept lazy so a
    dataset of thousands of images does not sit in memory). ``tags``: (K,) 0/1 over all classes,
    or None when the image has no image-level label. ``mask``: (H, W) uint8 class indices with
    255 = unknown, or a loader, or None.
    """

    name: str
    image: ArraySource
    tags: np.ndarray | None = None
    mask: ArraySource | None = None


def _load(src: ArraySource) -> np.ndarray:
    return src() if callable(src) else src


class ImageCache:
    """Decoded training images kept in memory for a run: each image is decoded and downscaled
    (longer side at most ``max_side``, antialiased) once instead of at every step.

    Least recently used images are dropped beyond ``max_bytes`` (default 1 GiB: about 2,000
    images at 448 x 336). Masks are not cached here (they decode from small PNGs).
    """

    def __init__(self, max_side: int, max_bytes: int = 1 << 30) -> None:
        self.max_side = max_side
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _shrink(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if max(h, w) <= self.max_side:
            return image
        factor = self.max_side / max(h, w)
        size = [max(1, round(h * factor)), max(1, round(w * factor))]
        small = F.resize(torch.from_numpy(np.array(image)).permute(2, 0, 1), size, antialias=True)
        return small.permute(1, 2, 0).numpy()

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = self._shrink(load())
        image.setflags(write=False)
        with self._lock:
            if key not in self._items:
                self._items[key] = image
                self.bytes += image.nbytes
                while self.bytes > self.max_bytes and len(self._items) > 1:
                    _, dropped = self._items.popitem(last=False)
                    self.bytes -= dropped.nbytes
        return image

    def loader(self, key: Hashable, load: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
        """A zero-argument loader for `Sample.image` that goes through the cache."""
        return lambda: self.get(key, load)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (…, 3, H, W) -> float ImageNet-normalised."""
    return F.normalize(image.float() / 255.0, list(IMAGENET_MEAN), list(IMAGENET_STD))


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 tensor."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return torch.tensor(image).permute(2, 0, 1)  # a copy: loaders may return read-only arrays


@dataclass(frozen=True)
class Augmentation:
    """Random resized crop to ``size``×``size`` + horizontal flip (joint), colour jitter (image)."""

    size: int
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.3

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top, left, h, w = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        size = [self.size, self.size]
        image = F.resized_crop(image, top, left, h, w, size, antialias=True)
        mask = F.resized_crop(mask[None], top, left, h, w, size, T.InterpolationMode.NEAREST)[0]
        if self.flip and torch.rand(()) < 0.5:
            image, mask = F.horizontal_flip(image), F.horizontal_flip(mask)
        if self.jitter > 0:
            j = self.jitter
            image = T.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 3, 0.5))(image)
        return image, mask


def epoch_order(samples: Sequence[Sample], mask_repeat: int) -> list[int]:
    """The sample indices one epoch visits: masked images ``mask_repeat`` times, others once."""
    return [i for i, s in enumerate(samples) for _ in range(mask_repeat if s.has_mask else 1)]


class TrainSet(Dataset):
    """Augmented samples; masked images are repeated ``mask_repeat`` times per epoch (the paper
    oversamples the few labelled images when most of the data is unlabelled)."""

    def __init__(self, samples: Sequence[Sample], num_classes: int, augmentation: Augmentation,
                 has_background: bool = True, mask_repeat: int = 1) -> None:
        if not samples:
            raise ValueError("no training samples")
        for s in samples:
            if s.tags is not None and s.tags.shape != (num_classes,):
                raise ValueError(f"{s.name}: tags have shape {s.tags.shape}, expected ({num_classes},)")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.augmentation = augmentation
        self.has_background = has_background
        self.order = epoch_order(self.samples, mask_repeat)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.order[item]
        sample = self.samples[index]
        image = image_to_tensor(_load(sample.image))
        if sample.mask is not None:
            mask_np = _load(sample.mask)
            if mask_np.ndim != 2:
                raise ValueError(f"{sample.name}: mask must be (H, W), got {mask_np.shape}")
            mask = torch.from_numpy(mask_np.astype(np.uint8))
            if mask.shape != image.shape[1:]:  # the image was downscaled once (ImageCache)
                (mh, mw), (ih, iw) = mask.shape, image.shape[1:]
                if abs(mh / mw - ih / iw) > 0.02 * ih / iw:
                    raise ValueError(f"{sample.name}: mask {tuple(mask.shape)} does not match image "
                                     f"{tuple(image.shape[1:])}")
                mask = F.resize(mask[None], [ih, iw], T.InterpolationMode.NEAREST)[0]
        else:
            mask = torch.full(image.shape[1:], IGNORE_INDEX, dtype=torch.uint8)
        image, mask = self.augmentation(image, mask)
        tags = torch.zeros(self.num_classes)
        if sample.tags is not None:
            tags = torch.as_tensor(sample.tags, dtype=torch.float32).clone()
            if self.has_background:
                tags[0] = 1.0
        return {
            "image": normalize(image),
            "tags": tags,
            "has_tags": torch.tensor(sample.has_tags),
            "mask": mask.long(),
            "has_mask": torch.tensor(sample.has_mask),
            "index": torch.tensor(index),
        }
