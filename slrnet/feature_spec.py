"""What a stored feature set is (torch-free: the training plan and the feature store read it
without importing torch). The arrays themselves come from `slrnet.features.FeatureExtractor`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from slrnet.config import ModelConfig

LEVELS = ("l1", "l2", "l3", "l4")  # strides 4, 8, 16, 32 (slrnet.backbones.LEVEL_STRIDES)
IMAGE = "image"
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_IMAGE_SIZE = 320
DEFAULT_VIEWS = ("s1", "s1f", "s0.5", "s0.5f")
SIZE_MULTIPLE = 32
# the ImageNet weights each backbone with levels loads by default: the hash in the weights file's
# name (slrnet.backbones.PACKAGED_WEIGHTS names the package that ships it)
WEIGHTS_IDS: dict[str, str] = {
    "mobilenet_v2": "b0353104",
    "efficientnet_lite0": "57934424",
    "efficientnet_lite2": "9656183e",
}
_VIEW = re.compile(r"^s(?P<scale>\d+(\.\d+)?)(?P<flip>f?)$")


def weights_id(backbone: str) -> str:
    """Short id of the ImageNet weights ``backbone`` loads by default (part of feature-store keys),
    e.g. "57934424" for efficientnet-lite0-57934424.pth. ValueError when there is none."""
    if backbone not in WEIGHTS_IDS:
        raise ValueError(f"backbone {backbone!r} has no known default weights file")
    return WEIGHTS_IDS[backbone]


def parse_view(view: str) -> tuple[float, bool]:
    """"s0.5f" -> (0.5, True). ValueError for anything else."""
    match = _VIEW.match(view)
    if match is None or not 0 < float(match["scale"]) <= 2:
        raise ValueError(f"bad view {view!r}: expected s<scale in (0, 2]> with an optional f (flip)")
    return float(match["scale"]), bool(match["flip"])


@dataclass(frozen=True)
class FeatureSpec:
    """What a stored feature set is: backbone, its weights, input size and views.

    Attributes:
        backbone: a backbone with multi-level features (`slrnet.backbones.build_level_backbone`).
        weights: id of its ImageNet weights (`slrnet.backbones.weights_id`).
        image_size: the longer side of view "s1", px.
        views: names of the views computed per image (`parse_view`).
    """

    backbone: str
    weights: str
    image_size: int = DEFAULT_IMAGE_SIZE
    views: tuple[str, ...] = DEFAULT_VIEWS

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9_]+", self.backbone) or not re.fullmatch(r"[A-Za-z0-9]+", self.weights):
            raise ValueError(f"backbone and weights must be plain names, got {self.backbone!r}, "
                             f"{self.weights!r}")
        if not SIZE_MULTIPLE <= self.image_size <= 2048:
            raise ValueError(f"image_size must be in {SIZE_MULTIPLE}..2048, got {self.image_size}")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct and not empty, got {self.views}")
        for view in self.views:
            parse_view(view)

    @classmethod
    def for_backbone(cls, backbone: str = DEFAULT_BACKBONE, image_size: int = DEFAULT_IMAGE_SIZE,
                     views: Sequence[str] = DEFAULT_VIEWS) -> FeatureSpec:
        """The spec of ``backbone`` with its default weights."""
        return cls(backbone, weights_id(backbone), int(image_size), tuple(views))

    @classmethod
    def of_model(cls, model_config: ModelConfig) -> FeatureSpec:
        """The features a light head (`ModelConfig.head == "light"`) trains and predicts on."""
        return cls.for_backbone(model_config.backbone, model_config.feature_image_size,
                                model_config.feature_views)

    @property
    def key(self) -> str:
        """"<backbone>-<weights>/s<size>/<view>+<view>...", usable as a relative path."""
        return f"{self.backbone}-{self.weights}/s{self.image_size}/{'+'.join(self.views)}"

    def names(self) -> list[str]:
        """Every array name `FeatureExtractor.extract` returns, in order."""
        return [f"{view}/{part}" for view in self.views for part in (*LEVELS, IMAGE)]


def view_size(height: int, width: int, image_size: int, scale: float) -> tuple[int, int]:
    """(h, w) of a view: longer side ``image_size``, each side a multiple of 32 at scale 1 (of
    ``32 * scale`` below, so that grids of different scales stay proportional)."""
    factor = image_size / max(height, width)
    unit = SIZE_MULTIPLE * scale

    def side(n: int) -> int:
        return max(1, round(max(1, round(n * factor / SIZE_MULTIPLE)) * unit))

    return side(height), side(width)
