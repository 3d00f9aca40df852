"""Label Studio's JSON: labelling configs, annotation results <-> our tags and label maps, tasks.

Pure: numpy, Pillow and the standard library, no database. What is read:

* a labelling config (XML): the first ``<Image>``; the ``<Choices>`` / ``<Taxonomy>`` on it are
  image tags, its ``<BrushLabels>`` and ``<PolygonLabels>`` are masks. Class names are the
  ``<Choice>`` / ``<Label>`` values; a label named "background" (any case) is our background class.
* annotation results: ``choices`` and ``taxonomy`` (a path's last element) name tags;
  ``brushlabels`` (brush RLE, see :mod:`label_studio_rle`) and ``polygonlabels`` (points in percent
  of the image, rasterised) paint a label map, later results on top, unpainted pixels unknown
  (``IGNORE_INDEX``). Results of other controls (a text area, rectangles) are ignored.
* a JSON export (the "JSON" export: a list of tasks with their annotations): per task its image
  reference and the results of its newest annotation that was not skipped.

What is written: tasks ``{"data": {"image": ..., SHA_KEY: ...}, "annotations": [...],
"predictions": [...]}`` with one brush region per class of a label map, and a labelling config for
them (:func:`labelling_config`). Every problem is a :class:`LabelStudioError` with one line.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image, ImageDraw

from services.formats.label_studio_rle import RleError, decode_mask, encode_mask
from slrnet.config import IGNORE_INDEX

BACKGROUND = "background"
SHA_KEY = "slrnet_sha256"  # our task data field: the image's content hash, for exact matching
NAME_KEY = "slrnet_name"  # our task data field: the image's name in the project
TAG_TYPES = ("choices", "taxonomy")
MASK_TYPES = ("brushlabels", "polygonlabels")
_CONTROLS = {"Choices": "choices", "Taxonomy": "taxonomy", "BrushLabels": "brushlabels",
             "PolygonLabels": "polygonlabels"}
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files so
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class LabelStudioError(ValueError):
    """Label Studio input we cannot read, said in one line."""


@dataclass(frozen=True)
class LabelConfig:
    """What a labelling config says about one image."""

    image: str  # the <Image>'s name (results' to_name)
    data_key: str  # the task data field holding the image URL ("image" for value="$image")
    controls: dict[str, str]  # control name -> result type ("choices", "brushlabels", ...)
    classes: list[str]  # class names, background (when labelled) first, then masks' then tags' order
    colors: dict[str, str] = field(default_factory=dict)  # class name -> #rrggbb, where given
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> class name
    # False for a config inferred from an export: results of any control name are read
    strict_controls: bool = True

    @property
    def has_tags(self) -> bool:
        return any(t in TAG_TYPES for t in self.controls.values())

    @property
    def has_masks(self) -> bool:
        return any(t in MASK_TYPES for t in self.controls.values())

    def control(self, kind: str) -> str | None:
        """The name of the first control of result type ``kind``, or None."""
        return next((name for name, t in self.controls.items() if t == kind), None)


def parse_label_config(xml: str) -> LabelConfig:
    """Read a labelling config (see the module docstring); LabelStudioError if it has no image
    or nothing we can learn from on it."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelStudioError(f"the labelling config is not valid XML ({exc})") from exc
    image = next(root.iter("Image"), None)
    if image is None or not image.get("name"):
        raise LabelStudioError("the labelling config has no <Image name=...> tag")
    name = image.get("name", "")
    value = image.get("value", "")
    data_key = value[1:] if value.startswith("$") else "image"
    controls: dict[str, str] = {}
    mask_names: list[str] = []
    tag_names: list[str] = []
    colors: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for element in root.iter():
        kind = _CONTROLS.get(element.tag)
        if kind is None or element.get("toName", "").split(",")[0] != name or not element.get("name"):
            continue
        controls[element.get("name", "")] = kind
        child_tag = "Choice" if kind in TAG_TYPES else "Label"
        for child in element.iter(child_tag):
            label = (child.get("value") or "").strip()
            if not label:
                continue
            (mask_names if kind in MASK_TYPES else tag_names).append(label)
            if child.get("alias"):
                aliases[child.get("alias", "")] = label
            color = child.get("background", "")
            if _HEX_COLOR.match(color):
                colors.setdefault(label, color.lower())
    if not controls:
        raise LabelStudioError(
            f"the labelling config has no Choices, Taxonomy, BrushLabels or PolygonLabels on image {name!r}"
        )
    classes = list(dict.fromkeys(mask_names + tag_names))
    background = [c for c in classes if c.lower() == BACKGROUND]
    classes = background[:1] + [c for c in classes if c.lower() != BACKGROUND]
    return LabelConfig(name, data_key, controls, classes, colors, aliases)


def labelling_config(class_names: Sequence[str], colors: Mapping[str, str] | None = None, *,
                     tags: bool = True, masks: bool = True) -> str:
    """A labelling config for our projects: tags as multiple Choices (every class but background),
    masks as BrushLabels (every class). Parsing it gives ``class_names`` back in order."""
    colors = colors or {}

    def label(tag: str, n: str) -> str:
        color = f" background={quoteattr(colors[n])}" if n in colors else ""
        return f"    <{tag} value={quoteattr(n)}{color}/>\n"

    parts = ['<View>\n  <Image name="image" value="$image" zoom="true"/>\n']
    if masks:
        parts.append('  <BrushLabels name="mask" toName="image">\n')
        parts += [label("Label", n) for n in class_names]
        parts.append("  </BrushLabels>\n")
    if tags:
        parts.append('  <Choices name="tags" toName="image" choice="multiple" showInline="true">\n')
        parts += [label("Choice", n) for n in class_names if n.lower() != BACKGROUND]
        parts.append("  </Choices>\n")
    parts.append("</View>\n")
    return "".join(parts)


# --- results -> our labels ----------------------------------------------------------------------


@dataclass
class TaskLabels:
    """What one annotation says about its image: tag class indices and a label map (or None)."""

    tags: set[int] = field(default_factory=set)
    label_map: np.ndarray | None = None  # (H, W) uint8, IGNORE_INDEX where nothing was painted


def _class_of(name: Any, class_index: Mapping[str, int], aliases: Mapping[str, str], where: str) -> int:
    if not isinstance(name, str):
        raise LabelStudioError(f"{where}: a label is not a string")
    index = class_index.get(name)
    if index is None:
        index = class_index.get(aliases.get(name, ""))
    if index is None:
        raise LabelStudioError(f"{where}: label {name!r} is not a class of the project")
    return index


def _rasterise_polygon(points: Any, width: int, height: int, where: str) -> np.ndarray:
    try:
        xy = [(float(x) * width / 100.0, float(y) * height / 100.0) for x, y in points]
    except (TypeError, ValueError) as exc:
        raise LabelStudioError(f"{where}: polygon points are not [x, y] pairs") from exc
    if len(xy) < 3 or not all(np.isfinite(v) and -1e6 < v < 1e6 for p in xy for v in p):
        raise LabelStudioError(f"{where}: a polygon needs at least 3 finite points")
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(xy, fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def read_results(results: Any, config: LabelConfig, class_index: Mapping[str, int], width: int,
                 height: int, *, where: str = "annotation") -> TaskLabels:
    """Our labels from an annotation's (or prediction's) ``result`` list, for an image of
    ``width`` x ``height``; ``class_index`` maps class names to label values."""
    if not isinstance(results, list):
        raise LabelStudioError(f"{where}: 'result' is not a list")
    labels = TaskLabels()
    for k, result in enumerate(results):
        here = f"{where}, result {k + 1}"
        if not isinstance(result, dict) or not isinstance(result.get("value"), dict):
            raise LabelStudioError(f"{here}: not a result object with a 'value'")
        if config.strict_controls and result.get("from_name", "") not in config.controls:
            continue  # another control of the config (a comment box, a rating)
        kind = str(result.get("type", "")).lower()
        value = result["value"]
        if kind == "choices":
            for name in value.get("choices") or []:
                labels.tags.add(_class_of(name, class_index, config.aliases, here))
        elif kind == "taxonomy":
            for path in value.get("taxonomy") or []:
                if isinstance(path, list) and path:
                    labels.tags.add(_class_of(path[-1], class_index, config.aliases, here))
        elif kind in MASK_TYPES:
            names = value.get(kind) or []
            if len(names) != 1:
                raise LabelStudioError(f"{here}: a {kind} region needs exactly one label, has {len(names)}")
            index = _class_of(names[0], class_index, config.aliases, here)
            size = (result.get("original_width", width), result.get("original_height", height))
            if size != (width, height):
                raise LabelStudioError(
                    f"{here}: drawn on a {size[0]}x{size[1]} image, the image is {width}x{height}"
                )
            if kind == "brushlabels":
                if value.get("format", "rle") != "rle" or "rle" not in value:
                    raise LabelStudioError(f"{here}: a brush region without RLE")
                try:
                    painted = decode_mask(value["rle"], width, height)
                except RleError as exc:
                    raise LabelStudioError(f"{here}: malformed brush RLE ({exc})") from exc
            else:
                painted = _rasterise_polygon(value.get("points"), width, height, here)
            if labels.label_map is None:
                labels.label_map = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
            labels.label_map[painted] = index
    return labels


# --- our labels -> results and tasks ------------------------------------------------------------


def _region_id() -> str:
    return uuid.uuid4().hex[:10]


def mask_results(label_map: np.ndarray, class_names: Sequence[str], *, from_name: str = "mask",
                 to_name: str = "image", confidence: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One brushlabels region per class present in ``label_map`` (IGNORE_INDEX and values of no
    class give none). With ``confidence`` (uint8, confidence * 255) each region gets the mean
    confidence of its pixels as ``score``."""
    height, width = label_map.shape
    results = []
    for index in np.unique(label_map).tolist():
        if index >= len(class_names):
            continue
        painted = label_map == index
        value = {"format": "rle", "rle": encode_mask(painted), "brushlabels": [class_names[index]]}
        result: dict[str, Any] = {
            "id": _region_id(), "from_name": from_name, "to_name": to_name, "type": "brushlabels",
            "original_width": width, "original_height": height, "image_rotation": 0, "value": value,
        }
        if confidence is not None:
            result["score"] = round(float(confidence[painted].mean()) / 255.0, 4)
        results.append(result)
    return results


def tag_results(class_indices: Iterable[int], class_names: Sequence[str], *, from_name: str = "tags",
                to_name: str = "image") -> list[dict[str, Any]]:
    """A choices result naming the tags, or nothing without tags."""
    names = [class_names[i] for i in sorted(set(class_indices))]
    if not names:
        return []
    return [{"id": _region_id(), "from_name": from_name, "to_name": to_name, "type": "choices",
             "value": {"choices": names}}]


def task(image_url: str, *, name: str, sha256: str, annotation: list[dict[str, Any]] | None = None,
         prediction: list[dict[str, Any]] | None = None, score: float | None = None,
         model_version: str | None = None, data_key: str = "image") -> dict[str, Any]:
    """A task to import into Label Studio: the image, our annotation (if any) and the model's
    prediction (if any, a pre-annotation) with its task-level ``score``."""
    out: dict[str, Any] = {"data": {data_key: image_url, NAME_KEY: name, SHA_KEY: sha256}}
    if annotation:
        out["annotations"] = [{"result": annotation, "ground_truth": False}]
    if prediction is not None:
        out["predictions"] = [{"result": prediction, "score": score, "model_version": model_version}]
    return out


# --- reading an export --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportTask:
    """One task of a Label Studio JSON export."""

    task_id: Any
    image_url: str
    name: str  # the image's file name as far as the task tells
    sha256: str | None  # our content hash, for tasks we exported
    results: list[dict[str, Any]] | None  # the newest kept annotation's results; None: none


def image_name(url: str) -> str:
    """The file name a task's image URL points to: the ``d=`` path of local-files URLs, the last
    path element otherwise, without the 8-hex prefix Label Studio gives uploads."""
    parts = urlsplit(url)
    path = parse_qs(parts.query).get("d", [parts.path])[0]
    name = PurePosixPath(unquote(path).replace("\\", "/")).name
    return _UPLOAD_PREFIX.sub("", name) if _UPLOAD_PREFIX.match(name) else name


def _newest_annotation(annotations: Any, where: str) -> list[dict[str, Any]] | None:
    if annotations is None:
        return None
    if not isinstance(annotations, list):
        raise LabelStudioError(f"{where}: 'annotations' is not a list")
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    newest = max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                      a.get("id") if isinstance(a.get("id"), int) else 0))
    return newest.get("result")


def read_export(path: Path, data_key: str = "image") -> list[ExportTask]:
    """The tasks of a Label Studio JSON export (not JSON-MIN: that one drops the results' types)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = exc.strerror if isinstance(exc, OSError) else "not UTF-8 JSON"
        raise LabelStudioError(f"{path}: cannot read a Label Studio export ({what})") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise LabelStudioError(f"{path}: not a Label Studio JSON export (not a list of tasks)")
    tasks = []
    for k, item in enumerate(data):
        where = f"{path.name}: task {k + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            if isinstance(item, dict) and data_key in item:
                raise LabelStudioError(f"{path}: a JSON-MIN export; export the project as JSON instead")
            raise LabelStudioError(f"{where}: no 'data' object (not a Label Studio JSON export)")
        task_data = item["data"]
        url = task_data.get(data_key)
        if not isinstance(url, str) or not url:
            raise LabelStudioError(f"{where}: no image URL in data.{data_key}")
        name = task_data.get(NAME_KEY) if isinstance(task_data.get(NAME_KEY), str) else image_name(url)
        sha = task_data.get(SHA_KEY) if isinstance(task_data.get(SHA_KEY), str) else None
        tasks.append(ExportTask(item.get("id", k + 1), url, name, sha,
                                _newest_annotation(item.get("annotations"), where)))
    return tasks


def label_names_in(tasks: Iterable[ExportTask]) -> list[str]:
    """Every label the tasks' results name, in order of first use (to infer classes)."""
    names: dict[str, None] = {}
    for t in tasks:
        for result in t.results or []:
            value = result.get("value") if isinstance(result, dict) else None
            if not isinstance(value, dict):
                continue
            kind = str(result.get("type", "")).lower()
            if kind == "taxonomy":
                found = [p[-1] for p in value.get("taxonomy") or [] if isinstance(p, list) and p]
            else:
                found = value.get(kind) if kind in (*MASK_TYPES, "choices") else None
            for n in found or []:
                if isinstance(n, str):
                    names.setdefault(n, None)
    return list(names)


def config_for_names(names: Sequence[str]) -> LabelConfig:
    """The config an export without one implies: the names it uses, as tags and masks."""
    return dataclasses.replace(parse_label_config(labelling_config(names)), strict_controls=False)
