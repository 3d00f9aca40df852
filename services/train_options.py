"""The options of a training, as ONE object with ONE rule per option: :class:`TrainOptions` is
what the Train tab, ``launch.py train``, the app's training defaults, the job and the training
service pass along; :func:`train_options` turns what a person typed (minutes, a 0 or an empty
field for "the default", a whole number given as a float) into it. Every rule raises
:class:`UserError` with a message that names the option.

The allowed values live in the lowest layer that needs them: the modes and backbones in
``slrnet.config`` (``MODES``, ``BACKBONES``: a test holds the latter equal to the
``slrnet.backbones`` registry), the devices there too (``DEVICES``); "auto" mode is the plan's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.errors import UserError
from slrnet.config import BACKBONES, DEVICES, MODES

MODE_CHOICES: tuple[str, ...] = ("auto", *MODES)


@dataclass(frozen=True)
class TrainOptions:
    """What the user asked for (None: the plan's own default); checked when made."""

    mode: str = "auto"
    backbone: str | None = None
    epochs: int | None = None
    image_size: int | None = None
    device: str = "auto"
    seed: int = 0
    train_overrides: dict[str, Any] | None = None  # further TrainConfig fields (benchmarks, tests)
    model_overrides: dict[str, Any] | None = None  # further ModelConfig fields
    budget_s: float | None = None  # training wall-time budget (CPU, no epochs given)
    warm_start: bool | None = None  # None: continue from the current model when it matches

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_backbone(self.backbone)
        check_device(self.device)
        check_whole_number(self.epochs, "epochs")
        check_whole_number(self.image_size, "image size")
        if self.budget_s is not None and not (isinstance(self.budget_s, int | float) and self.budget_s > 0):
            raise UserError("the training budget (minutes) must be a positive number")


def check_mode(mode: str) -> str:
    if mode not in MODE_CHOICES:
        raise UserError(f"unknown mode {mode!r}; choose {', '.join(MODE_CHOICES)}")
    return mode


def check_backbone(backbone: str | None) -> str | None:
    if backbone is not None and backbone not in BACKBONES:
        raise UserError(f"unknown backbone {backbone!r}; choose {', '.join(BACKBONES)}")
    return backbone


def check_device(device: str) -> str:
    if device not in DEVICES and not device.startswith("cuda:"):
        raise UserError(f"unknown device {device!r}; choose {', '.join(DEVICES)}")
    return device


def check_whole_number(value: Any, name: str) -> int | None:
    """None, or a whole number of at least 1 (a float such as 3.0 counts)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1 or int(value) != value:
        raise UserError(f"{name} must be a positive whole number")
    return int(value)


def budget_of_minutes(minutes: Any) -> float | None:
    """Seconds of training for ``minutes`` (None or empty: the default budget)."""
    if minutes is None or minutes == "":
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise UserError("minutes must be a positive number")
    return float(minutes) * 60


def _blank(value: Any) -> Any:
    return None if value is None or value == "" else value


def train_options(*, mode: str | None = "auto", backbone: str | None = None, epochs: Any = None,
                  image_size: Any = None, device: str | None = "auto", minutes: Any = None,
                  continue_model: bool = True, seed: int = 0) -> TrainOptions:
    """The options a person chose (the Train tab's fields, the CLI's flags, the app's defaults):
    an empty field is the default, ``continue_model=False`` trains afresh."""
    return TrainOptions(
        mode=_blank(mode) or "auto", backbone=_blank(backbone),
        epochs=check_whole_number(_blank(epochs), "epochs"),
        image_size=check_whole_number(_blank(image_size), "image size"),
        device=_blank(device) or "auto", seed=seed, budget_s=budget_of_minutes(minutes),
        warm_start=None if continue_model else False,
    )
