"""launch.py train / predict / evaluate end to end on a tiny synthetic project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import launch
from tests.test_train_service import write_dataset

TRAIN = ["--backbone", "tiny", "--epochs", "1", "--image-size", "32", "--device", "cpu"]


def test_import_train_predict_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = write_dataset(tmp_path / "src", masks=0)
    data = ["--data", str(tmp_path / "data"), "--project", "p"]
    assert launch.main(["import", str(files["images"]), *data, "--classes", str(files["classes"]),
                        "--tags", str(files["tags"])]) == 0
    capsys.readouterr()

    assert launch.main(["train", *data, *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "mode wsss" in out and "version 1" in out

    assert launch.main(["predict", *data, "--device", "cpu"]) == 0
    assert "version 1 published" in capsys.readouterr().out

    assert launch.main(["evaluate", *data, "--gt-masks", str(files["gt"])]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"miou", "per_class_iou", "pixel_accuracy", "images"}
    assert scores["images"] == 6 and set(scores["per_class_iou"]) == {"background", "red", "blue"}


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--project", "nope", *TRAIN],
        ["train", "--project", "p", "--mode", "ssss", *TRAIN],  # tags only: no masks for ssss
        ["predict", "--project", "p", "--device", "cpu"],  # nothing trained yet
        ["evaluate", "--project", "p", "--gt-masks", "/does/not/exist"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    files = write_dataset(tmp_path / "src", masks=0)
    data = ["--data", str(tmp_path / "data")]
    assert launch.main(["import", str(files["images"]), *data, "--project", "p",
                        "--classes", str(files["classes"]), "--tags", str(files["tags"])]) == 0
    capsys.readouterr()
    assert launch.main([*argv, *data]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_train_prints_its_plan_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = write_dataset(tmp_path / "src", masks=0)
    data = ["--data", str(tmp_path / "data"), "--project", "p"]
    assert launch.main(["import", str(files["images"]), *data, "--classes", str(files["classes"]),
                        "--tags", str(files["tags"])]) == 0
    capsys.readouterr()
    budgeted = ["--backbone", "tiny", "--image-size", "32", "--device", "cpu", "--minutes", "0.05"]

    assert launch.main(["train", *data, *budgeted]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("before training: ") and " at 32 px, about " in lines[0]
    assert "budget 3 s" in lines[0] and "continues" not in lines[0]
    measured = [line for line in lines[1:] if line.startswith("plan: ")]  # the service's measured plan
    assert len(measured) == 1 and "budget 3 s" in measured[0]
    done = next(i for i, line in enumerate(lines) if "trained model version 1" in line)
    assert lines.index(measured[0]) < done

    assert launch.main(["predict", *data, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert launch.main(["train", *data, *budgeted]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("continues from model v1") and "version 2" in out
    assert launch.main(["train", *data, *budgeted, "--fresh"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("before training: ") and "continues" not in first
