"""Label Studio's formats: brush RLE (hand-made and round-trip), labelling configs, results,
import of a JSON export and export as tasks (round trip through our own reader)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from services.context import Studio
from services.errors import UserError
from services.export_label_studio import config_path
from services.exporting import ExportOptions, export_project
from services.formats.label_studio import (
    LabelStudioError,
    image_name,
    labelling_config,
    parse_label_config,
    read_results,
)
from services.formats.label_studio_rle import RleError, decode_mask, decode_values, encode_mask, encode_values
from services.import_options import ImportOptions
from services.importing import import_dataset
from slrnet.config import IGNORE_INDEX
from storage.images import all_images
from storage.labels import put_mask, put_pseudo_label, set_tags
from storage.models import TrainingRun
from storage.projects import get_project_by_name, list_classes
from tests.image_bytes import image_bytes
from tests.label_studio_support import project_labels


def _bits_to_bytes(bits: str) -> list[int]:
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


HEADER_8_3_4_8_16 = "00111 0010 0011 0111 1111"  # word size 8, field sizes 3, 4, 8, 16


# --- RLE ----------------------------------------------------------------------------------------


def test_one_painted_pixel_is_the_hand_written_stream():
    expected = _bits_to_bytes(f"{4:032b} {HEADER_8_3_4_8_16} 1 00 011 11111111")
    assert encode_mask(np.ones((1, 1), bool)) == expected
    assert decode_mask(expected, 1, 1).tolist() == [[True]]


def test_hand_made_literal_and_run_chunks_decode():
    # 6 values: a literal chunk of 3 words (1, 2, 3), then a run of 3 x 200, field size index 1 (4 bits)
    stream = _bits_to_bytes(
        f"{6:032b} {HEADER_8_3_4_8_16} 0 01 0010 00000001 00000010 00000011 1 00 010 11001000"
    )
    assert decode_values(stream).tolist() == [1, 2, 3, 200, 200, 200]


def test_hand_made_mask_reads_the_alpha_channel():
    # 2 pixels: the first RGBA (255, 0, 0, 0) is not painted, the second (0, 0, 0, 7) is
    chunks = "0 00 000 11111111  1 00 101 00000000  0 00 000 00000111"
    stream = _bits_to_bytes(f"{8:032b} {HEADER_8_3_4_8_16} {chunks}")
    assert decode_mask(stream, 2, 1).tolist() == [[False, True]]


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 48), (301, 257)])
def test_round_trip_random_masks(shape):
    rng = np.random.default_rng(shape[0])
    for density in (0.0, 0.05, 0.5, 1.0):
        mask = rng.random(shape) < density
        assert np.array_equal(decode_mask(encode_mask(mask), shape[1], shape[0]), mask)


def test_runs_longer_than_one_chunk_split_exactly():
    values = np.concatenate([np.full(70000, 255), np.full(3, 0), np.full(131073, 9)]).astype(np.uint8)
    assert np.array_equal(decode_values(encode_values(values)), values)


@pytest.mark.parametrize("damage", ["truncated", "count", "overrun", "not bytes", "short header"])
def test_malformed_rle_is_refused(damage):
    good = encode_mask(np.eye(8, dtype=bool))
    bad = {
        "truncated": good[: len(good) // 2],
        "count": encode_mask(np.eye(9, dtype=bool)),
        "overrun": _bits_to_bytes(f"{4:032b} {HEADER_8_3_4_8_16} 1 00 111 11111111"),
        "not bytes": [*good[:-1], 300],
        "short header": good[:4],
    }[damage]
    with pytest.raises(RleError):
        decode_mask(bad, 8, 8)


# --- configs and results ------------------------------------------------------------------------

CONFIG = """
<View>
  <Image name="img" value="$photo"/>
  <Choices name="kind" toName="img" choice="multiple">
    <Choice value="cat"/><Choice value="tree"/>
  </Choices>
  <Taxonomy name="tax" toName="img"><Choice value="animal"><Choice value="dog"/></Choice></Taxonomy>
  <BrushLabels name="brush" toName="img">
    <Label value="cat" background="#FF0000"/><Label value="Background"/><Label value="road" alias="rd"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="img"><Label value="tree"/></PolygonLabels>
  <TextArea name="note" toName="img"/>
</View>
"""


def test_config_classes_controls_and_background_first():
    config = parse_label_config(CONFIG)
    assert config.image == "img" and config.data_key == "photo"
    assert config.classes == ["Background", "cat", "road", "tree", "animal", "dog"]
    assert config.controls == {"kind": "choices", "tax": "taxonomy", "brush": "brushlabels",
                               "poly": "polygonlabels"}
    assert config.colors == {"cat": "#ff0000"} and config.aliases == {"rd": "road"}
    assert config.has_tags and config.has_masks


@pytest.mark.parametrize("xml", ["<View><Text name='t' value='$t'/></View>",
                                 "<View><Image name='i' value='$i'/></View>", "<View"])
def test_configs_without_what_we_need_are_refused(xml):
    with pytest.raises(LabelStudioError):
        parse_label_config(xml)


def _brush(name, mask, from_name="brush"):
    h, w = mask.shape
    return {"from_name": from_name, "to_name": "img", "type": "brushlabels", "original_width": w,
            "original_height": h, "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [name]}}


def test_results_become_tags_and_a_label_map():
    config = parse_label_config(CONFIG)
    index = {n: i for i, n in enumerate(config.classes)}
    cat = np.zeros((10, 20), bool)
    cat[2:5, 3:9] = True
    road = np.zeros((10, 20), bool)
    road[4:8, :] = True
    results = [
        {"from_name": "kind", "to_name": "img", "type": "choices", "value": {"choices": ["cat"]}},
        {"from_name": "tax", "to_name": "img", "type": "taxonomy",
         "value": {"taxonomy": [["animal", "dog"]]}},
        _brush("cat", cat), _brush("rd", road),
        {"from_name": "poly", "to_name": "img", "type": "polygonlabels", "original_width": 20,
         "original_height": 10, "value": {"points": [[50, 0], [100, 0], [100, 100], [50, 100]],
                                          "polygonlabels": ["tree"]}},
        {"from_name": "note", "to_name": "img", "type": "textarea", "value": {"text": ["whatever"]}},
    ]
    labels = read_results(results, config, index, 20, 10)
    assert labels.tags == {index["cat"], index["dog"]}
    expected = np.full((10, 20), IGNORE_INDEX, np.uint8)
    expected[cat] = index["cat"]
    expected[road] = index["road"]  # later results on top
    expected[:, 10:] = index["tree"]
    assert np.array_equal(labels.label_map, expected)


@pytest.mark.parametrize("problem", ["unknown label", "bad rle", "other size"])
def test_bad_results_are_refused_in_one_line(problem):
    config = parse_label_config(CONFIG)
    index = {n: i for i, n in enumerate(config.classes)}
    result = _brush("cat", np.ones((10, 20), bool))
    if problem == "unknown label":
        result["value"]["brushlabels"] = ["zebra"]
    elif problem == "bad rle":
        result["value"]["rle"] = result["value"]["rle"][:5]
    else:
        result["original_width"] = 40
    with pytest.raises(LabelStudioError) as err:
        read_results([result], config, index, 20, 10, where="task 7")
    assert "\n" not in str(err.value) and str(err.value).startswith("task 7")


def test_image_names_from_task_urls():
    assert image_name("/data/upload/3/1a2b3c4d-cat%201.jpg") == "cat 1.jpg"
    assert image_name("/data/local-files/?d=photos/dog.png") == "dog.png"
    assert image_name("https://example.org/x/y/z.jpeg?sig=1") == "z.jpeg"


def test_our_config_parses_back_to_our_classes():
    names = ["background", "cat", "dog"]
    config = parse_label_config(labelling_config(names))
    assert config.classes == names and config.control("brushlabels") == "mask"


# --- import and export --------------------------------------------------------------------------


def _images(folder: Path, n: int = 3, size: tuple[int, int] = (40, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"im{i}.jpg").write_bytes(image_bytes(*size, seed=i))
    return folder


def _task(name, results, task_id=1):
    return {"id": task_id, "data": {"image": f"/data/upload/1/0123abcd-{name}"},
            "annotations": [{"id": task_id * 10, "result": results, "was_cancelled": False,
                             "updated_at": "2024-01-01T00:00:00Z"}]}


def test_import_a_label_studio_export(studio: Studio, tmp_path: Path):
    folder = _images(tmp_path / "images")
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    export = tmp_path / "export.json"
    choices = {"from_name": "kind", "to_name": "img", "type": "choices", "value": {"choices": ["tree"]}}
    cancelled = {"id": 99, "result": [choices], "was_cancelled": True, "updated_at": "2030-01-01T00:00:00Z"}
    tasks = [_task("im0.jpg", [_brush("cat", mask), choices], 1), _task("im1.jpg", [choices], 2)]
    tasks[1]["annotations"].append(cancelled)
    tasks.append({"id": 3, "data": {"photo": "/data/upload/1/im2.jpg"}, "annotations": []})
    for t in tasks:
        t["data"]["photo"] = t["data"].pop("image", t["data"].get("photo"))
    export.write_text(json.dumps(tasks))
    (tmp_path / "config.xml").write_text(CONFIG)
    report = import_dataset(studio, folder, ImportOptions(
        label_studio_json=export, label_config=tmp_path / "config.xml"), project="p")
    assert (report.images_added, report.masks_added, report.tags_added) == (3, 1, 2)
    got = project_labels(studio, "p")
    expected = np.full((30, 40), IGNORE_INDEX, np.uint8)
    expected[mask] = 1  # "Background" is index 0, cat 1
    assert np.array_equal(got["im0.jpg"][0], expected) and got["im0.jpg"][1] == {"tree"}
    assert got["im1.jpg"] == (None, {"tree"}) and got["im2.jpg"] == (None, set())


@pytest.mark.parametrize("problem", ["unknown label", "malformed rle"])
def test_a_bad_export_writes_nothing(studio: Studio, tmp_path: Path, problem):
    folder = _images(tmp_path / "images")
    import_dataset(studio, folder, ImportOptions(classes_file=_classes(tmp_path, ["cat"])), project="p")
    region = _brush("cat", np.ones((30, 40), bool))
    if problem == "unknown label":
        region["value"]["brushlabels"] = ["zebra"]
    else:
        region["value"]["rle"] = region["value"]["rle"][:-3]
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_task("im0.jpg", [_brush("cat", np.ones((30, 40), bool))], 1),
                                  _task("im1.jpg", [region], 2)]))
    with pytest.raises(UserError) as err:
        import_dataset(studio, None, ImportOptions(label_studio_json=export), project="p")
    assert "\n" not in str(err.value) and "task 2" in str(err.value)
    assert all(mask is None for mask, _ in project_labels(studio, "p").values())


def _classes(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def test_export_as_tasks_and_import_it_back_losslessly(studio: Studio, tmp_path: Path):
    folder = _images(tmp_path / "images", n=3, size=(41, 29))
    import_dataset(studio, folder, ImportOptions(
        classes_file=_classes(tmp_path, ["cat", "dog"])), project="p")
    rng = np.random.default_rng(1)
    with studio.Session.begin() as session:
        project = get_project_by_name(session, "p")
        classes = {c.name: c for c in list_classes(session, project.id)}
        images = {im.name: im for im in all_images(session, project.id)}
        painted = rng.integers(0, 3, size=(29, 41)).astype(np.uint8)
        painted[rng.random((29, 41)) < 0.3] = IGNORE_INDEX
        put_mask(session, images["im0.jpg"].id, painted)
        set_tags(session, images["im0.jpg"].id, [classes["dog"].id])
        set_tags(session, images["im1.jpg"].id, [classes["cat"].id, classes["dog"].id])
        run = TrainingRun(project_id=project.id, version=4, mode="ssss", backbone="b", status="published",
                          published_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        pseudo = np.zeros((29, 41), np.uint8)
        pseudo[:, 20:] = 2
        put_pseudo_label(session, images["im2.jpg"].id, run.id, pseudo, np.full((29, 41), 0.75, np.float32))
    out = tmp_path / "tasks.json"
    report = export_project(studio, "p", out, ExportOptions(fmt="label-studio"))
    assert (report.exported, report.from_human, report.from_model, report.skipped) == (3, 2, 1, 0)
    tasks = json.loads(out.read_text())
    prediction = next(t["predictions"][0] for t in tasks if "predictions" in t)
    assert prediction["model_version"] == "slrnet-v4" and prediction["score"] == pytest.approx(0.25, abs=0.01)
    assert {r["value"]["brushlabels"][0]: r["score"] for r in prediction["result"]} == pytest.approx(
        {"background": 0.749, "dog": 0.749}, abs=0.01)
    decoded = {r["value"]["brushlabels"][0]: decode_mask(r["value"]["rle"], 41, 29)
               for r in prediction["result"]}
    assert np.array_equal(decoded["dog"], pseudo == 2) and np.array_equal(decoded["background"], pseudo == 0)

    import_dataset(studio, None, ImportOptions(label_studio_json=out), project="p")  # nothing new: masks kept
    import_dataset(studio, folder, ImportOptions(
        label_studio_json=out, label_config=config_path(out)), project="copy")
    original, copy = project_labels(studio, "p"), project_labels(studio, "copy")
    assert copy.keys() == original.keys()
    for name, (mask, tags) in original.items():
        assert tags == copy[name][1]
        assert (mask is None and copy[name][0] is None) or np.array_equal(mask, copy[name][0])


def test_cli_import_refuses_an_unknown_label_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    import launch

    folder = _images(tmp_path / "images", n=1)
    data = str(tmp_path / "data")
    classes = str(_classes(tmp_path, ["cat"]))
    assert launch.main(["import", str(folder), "--data", data, "--classes", classes]) == 0
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_task("im0.jpg", [_brush("zebra", np.ones((30, 40), bool))], 4)]))
    capsys.readouterr()
    assert launch.main(["import", "--label-studio", str(export), "--data", data]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "task 4" in err and "'zebra' is not a class" in err
    with Studio.open(data) as studio:
        assert all(mask is None for mask, _ in project_labels(studio, "default").values())
