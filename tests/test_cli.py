"""launch.py as a CLI: choices come from the layers that define them, errors are one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

import launch
from services.context import Studio
from services.exporting import FORMATS, SOURCES
from slrnet.config import DEVICES, MODES


def test_choices_are_the_lists_the_layers_define() -> None:
    parser = launch.build_parser()
    for mode in ("auto", *MODES):
        assert parser.parse_args(["train", "--mode", mode]).mode == mode
    for device in DEVICES:
        assert parser.parse_args(["predict", "--device", device]).device == device
    for fmt in FORMATS:
        for source in SOURCES:
            args = parser.parse_args(["export", "out", "--format", fmt, "--source", source])
            assert (args.format, args.source) == (fmt, source)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--mode", "fully_supervised"])


def test_studio_open_is_a_context_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[Studio] = []
    monkeypatch.setattr(Studio, "close", lambda self: closed.append(self))
    with pytest.raises(RuntimeError), Studio.open(tmp_path / "data") as studio:
        assert closed == []
        raise RuntimeError("the command failed")
    assert closed == [studio]
