"""VOC-style output: one label PNG per image (class index per pixel, 255 = ignore) + classes.txt.

Pure: numpy + Pillow, no database. By default a label PNG is single-channel 8-bit greyscale, which
every reader (Pillow, OpenCV, imageio) returns as the class indices. With a palette it is a
palette ("P") PNG holding the same indices, whose palette maps class index k to the class colour
(and 255 to VOC's void colour), like VOC's SegmentationClass files: image viewers show colours,
Pillow still reads indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath

import numpy as np
from PIL import Image

from slrnet.config import IGNORE_INDEX

IGNORE_COLOR = (224, 224, 192)  # VOC's "void" colour
CLASSES_FILE = "classes.txt"


def label_file_name(image_name: str) -> str:
    """The label PNG's file name for an image: its base name with the suffix ``.png``."""
    return PurePath(image_name.replace("\\", "/")).stem + ".png"


def build_palette(colors: Mapping[int, str], ignore_index: int = IGNORE_INDEX) -> list[int]:
    """A 768-entry Pillow palette: ``colors`` maps class index -> "#rrggbb"; others are black."""
    palette = [0] * 768
    for index, color in colors.items():
        rgb = color.lstrip("#")
        if len(rgb) != 6:
            raise ValueError(f"colour of class {index} is not #rrggbb: {color!r}")
        palette[3 * index : 3 * index + 3] = [int(rgb[i : i + 2], 16) for i in (0, 2, 4)]
    palette[3 * ignore_index : 3 * ignore_index + 3] = list(IGNORE_COLOR)
    return palette


def write_label_png(path: Path, label_map: np.ndarray, palette: Sequence[int] | None = None) -> None:
    """Write a uint8 label map as a greyscale PNG, or as a palette PNG with ``palette``."""
    if label_map.ndim != 2 or label_map.dtype != np.uint8:
        raise ValueError(f"label map must be 2-D uint8, got {label_map.dtype} {label_map.shape}")
    height, width = label_map.shape
    data = np.ascontiguousarray(label_map).tobytes()
    if palette is None:
        image = Image.frombytes("L", (width, height), data)
    else:
        image = Image.frombytes("P", (width, height), data)
        image.putpalette(list(palette))
    image.save(path, format="PNG")


def write_classes_file(path: Path, names_by_index: Mapping[int, str]) -> None:
    """classes.txt: line k (0-based) is the name of the class whose label value is k.

    The indices must be 0, 1, ..., n-1 (as a project's classes are), so line numbers are label values.
    """
    if sorted(names_by_index) != list(range(len(names_by_index))):
        raise ValueError(f"class indices must be 0..n-1, got {sorted(names_by_index)}")
    path.write_text("".join(names_by_index[k] + "\n" for k in range(len(names_by_index))), encoding="utf-8")
