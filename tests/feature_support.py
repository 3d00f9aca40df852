"""Stand-ins for slrnet.features in the feature tests: a spec with a key, an extractor that
computes something cheap from the pixels and counts its calls; and small image folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage


@dataclass(frozen=True)
class FakeSpec:
    backbone: str = "fake"
    image_size: int = 32

    @property
    def key(self) -> str:
        return f"{self.backbone}-0/s{self.image_size}/s1+s1f"


class FakeExtractor:
    """Mean colour of 4x4 cells: deterministic in the pixels, counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        h, w = image.shape[0] // 4 * 4, image.shape[1] // 4 * 4
        cells = image[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
        return {"s1/l1": (cells / 255).astype(np.float16),
                "s1f/l1": (cells[..., ::-1] / 255).astype(np.float16)}


def write_images(folder: Path, n: int, seed: int = 0, duplicate: bool = False) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = np.random.default_rng(seed * 100 + i).integers(0, 255, (24, 32, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(folder / f"im{i}.png")
    if duplicate:  # the same content under another name
        (folder / "copy.png").write_bytes((folder / "im0.png").read_bytes())
    return folder
