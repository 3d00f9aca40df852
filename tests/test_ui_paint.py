"""The paint editor's colour -> class mapping and the overlay drawing (pure numpy, no browser)."""

from __future__ import annotations

import numpy as np
import pytest

from app.overlay import (
    blend,
    class_shares,
    color_lut,
    fit_size,
    legend_html,
    overlay,
    resize_nearest,
)
from app.painter import (
    PaintPalette,
    apply_paint,
    brush_entries,
    color_distance,
    data_url,
    decode_painting,
    edit_size,
    editor_document,
)
from app.superpixels import LEVEL_REGIONS, encode_ids, region_levels
from slrnet.config import IGNORE_INDEX
from storage.label_maps import class_colors, hex_to_rgb

CLASSES = [(0, "background", "#000000"), (1, "cat", "#800000"), (2, "dog", "#008000")]


@pytest.fixture()
def palette() -> PaintPalette:
    return PaintPalette.from_classes(CLASSES)


def _painting(labels: np.ndarray, painted: np.ndarray) -> str:
    """The RGBA PNG data URL the canvas editor sends: red = label, green = 255 where painted."""
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[..., 0] = np.where(painted, labels, 0)
    rgba[..., 1] = np.where(painted, 255, 0)
    rgba[..., 3] = 255
    return data_url(rgba)


def test_palette_has_one_brush_per_class_plus_unknown(palette: PaintPalette) -> None:
    assert [b.value for b in palette.brushes] == [0, 1, 2, IGNORE_INDEX]
    unknown = palette.brushes[-1].color
    assert unknown not in {c for _, _, c in CLASSES}


def test_palette_allows_alike_colours_since_painting_is_by_value() -> None:
    palette = PaintPalette.from_classes([(0, "a", "#800000"), (1, "b", "#820101")])
    entries = brush_entries(palette)
    assert [(e["value"], e["key"]) for e in entries] == [(0, "1"), (1, "2"), (IGNORE_INDEX, "u")]


def test_unknown_brush_avoids_a_class_that_took_its_colour() -> None:
    palette = PaintPalette.from_classes([(0, "sand", "#e0e0c0"), (1, "snow", "#ffffff")])
    assert palette.brushes[-1].color not in ("#e0e0c0", "#ffffff")


def test_default_palette_of_coco_sized_projects_is_paintable() -> None:
    colors = class_colors([f"c{i}" for i in range(81)], [None] * 81, 0)
    palette = PaintPalette.from_classes([(i, f"c{i}", c) for i, c in enumerate(colors)])
    assert len(palette.brushes) == 82


def test_the_editors_png_decodes_to_labels_and_painted_pixels() -> None:
    labels = np.array([[0, 1, 2], [255, 7, 0]], np.uint8)
    painted = np.array([[True, True, False], [True, False, False]])
    got, got_painted = decode_painting(_painting(labels, painted), (2, 3))
    np.testing.assert_array_equal(got_painted, painted)
    np.testing.assert_array_equal(got, np.where(painted, labels, IGNORE_INDEX))
    with pytest.raises(ValueError, match="expected 4x2"):
        decode_painting(_painting(labels, painted), (2, 4))
    with pytest.raises(ValueError, match="not a PNG"):
        decode_painting("data:image/jpeg;base64,AAAA", (2, 3))


def test_paint_goes_over_the_start_and_erased_pixels_keep_it() -> None:
    start = np.full((6, 6), 2, np.uint8)
    labels = np.full((6, 6), IGNORE_INDEX, np.uint8)
    painted = np.zeros((6, 6), bool)
    labels[:3, :3], painted[:3, :3] = 1, True
    painted[4, 4] = True  # painted "unknown"
    result = apply_paint(start, labels, painted, (6, 6))
    assert (result[:3, :3] == 1).all() and result[4, 4] == IGNORE_INDEX
    assert (result[3:, :4] == 2).all() and (result[:, 5] == 2).all()


def test_rest_is_background_fills_only_unknown_pixels() -> None:
    labels = np.full((4, 4), 2, np.uint8)
    painted = np.zeros((4, 4), bool)
    painted[:2] = True
    result = apply_paint(None, labels, painted, (4, 4), unpainted_background=0)
    assert (result[:2] == 2).all() and (result[2:] == 0).all()
    assert (apply_paint(None, labels, painted, (4, 4))[2:] == IGNORE_INDEX).all()


def test_large_images_are_edited_downscaled_and_saved_full_size() -> None:
    full = (1500, 2100)
    size = edit_size(full, 700)
    assert size == (500, 700)
    labels = np.full(size, IGNORE_INDEX, np.uint8)
    painted = np.zeros(size, bool)
    labels[100:200, 350:700], painted[100:200, 350:700] = 2, True
    result = apply_paint(None, labels, painted, full)
    rows, cols = np.nonzero(result == 2)
    # nearest-neighbour: exactly the band, 3x bigger, with hard edges and no other value
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (300, 599, 1050, 2099)
    assert set(np.unique(result)) == {2, IGNORE_INDEX}


def test_region_levels_follow_colour_edges_and_grow_coarser() -> None:
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(120, 6, (120, 160, 3)), 0, 255).astype(np.uint8)  # textured grey
    rgb[:, 80:] = (250, 30, 30)  # a red right half: no region may straddle the edge
    rgb[40:80, 20:60] = (30, 30, 250)  # a blue square
    levels = region_levels(rgb, (60, 80))  # asked at half size: scaled by nearest
    assert levels.shape == (len(LEVEL_REGIONS), 60, 80) and levels.dtype == np.int32
    counts = [len(np.unique(ids)) for ids in levels]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]  # fine to coarse
    for ids in levels:
        assert ids.min() == 0
        for k in np.unique(ids):
            red = (rgb[::2, ::2][ids == k] == (250, 30, 30)).all(axis=1)
            assert red.all() or not red.any(), "a region straddles the red edge"
    # the coarsest level holds the blue square in one region
    assert len(np.unique(levels[-1][20:40, 10:30])) == 1
    encoded = encode_ids(levels[0] + 300)
    decoded = encoded[..., 0].astype(int) + 256 * encoded[..., 1].astype(int)
    np.testing.assert_array_equal(decoded, levels[0] + 300)


def test_the_editor_document_carries_image_labels_superpixels_and_keys(palette: PaintPalette) -> None:
    rgb = np.full((4, 6, 3), 90, np.uint8)
    start = np.full((4, 6), 1, np.uint8)
    doc = editor_document(token="t", image_id=3, version="v", name="a.png", rgb=rgb, start=start,
                          region_ids=np.zeros((2, 4, 6), np.int32), palette=palette, background=0)
    assert (doc["width"], doc["height"], doc["image_id"], doc["version"]) == (6, 4, 3, "v")
    assert doc["image"].startswith("data:image/jpeg;base64,")
    assert doc["labels"].startswith("data:image/png;base64,")
    assert [c["key"] for c in doc["classes"]] == ["1", "2", "3", "u"]
    assert len(doc["regions"]) == 2 and doc["region_level"] == 1
    with pytest.raises(ValueError, match="one size"):
        editor_document(token="t", image_id=3, version="v", name="a.png", rgb=rgb, start=start[:2],
                        region_ids=np.zeros((2, 4, 6), np.int32), palette=palette, background=0)


def test_new_projects_get_meaningful_then_distinct_colours() -> None:
    colors = class_colors([f"c{k}" for k in range(80)], [None] * 80, None)
    assert len(set(colors)) == 80
    assert min(color_distance(a, b) for i, a in enumerate(colors) for b in colors[i + 1 :]) > 16
    # stuff names get the colour one expects; the other classes stay far apart (MSRC's 21)
    names = ["building", "grass", "tree", "cow", "sheep", "sky", "aeroplane", "water", "face", "car",
             "bicycle", "flower", "sign", "bird", "book", "chair", "road", "cat", "dog", "body", "boat"]
    msrc = dict(zip(names, class_colors(names, [None] * 21, None), strict=True))
    r, g, b = hex_to_rgb(msrc["sky"])
    assert b > r and b > g  # sky blue
    r, g, b = hex_to_rgb(msrc["grass"])
    assert g > r and g > b  # grass green
    assert hex_to_rgb(msrc["water"])[2] > 150 and len(set(hex_to_rgb(msrc["road"]))) == 1  # blue; grey
    others = [c for n, c in msrc.items() if n not in ("building", "grass", "tree", "sky", "water", "road")]
    assert min(color_distance(a, b) for i, a in enumerate(others) for b in others[i + 1 :]) > 50
    assert color_distance(msrc["dog"], msrc["boat"]) > 50  # the near-identical pair
    # given colours are kept, a leading background is black
    kept = class_colors(["background", "cat", "sky"], [None, "#123456", None], 0)
    assert kept[:2] == ["#000000", "#123456"]


def test_resize_nearest_never_mixes_values() -> None:
    labels = np.array([[1, 2], [3, 255]], np.uint8)
    big = resize_nearest(labels, (4, 6))
    assert set(np.unique(big)) == {1, 2, 3, 255}
    np.testing.assert_array_equal(big[:2, :3], 1)
    np.testing.assert_array_equal(big[2:, 3:], 255)


def test_fit_size_never_upscales() -> None:
    assert fit_size((100, 50), 1024) == (100, 50)
    assert fit_size((2000, 1000), 1000) == (1000, 500)


def test_blend_leaves_unknown_pixels_alone_and_respects_opacity() -> None:
    rgb = np.full((1, 3, 3), 100, np.uint8)
    labels = np.array([[1, 255, 1]], np.uint8)
    lut = color_lut({1: "#ff0000"})
    half = blend(rgb, labels, lut, 0.5)
    assert tuple(half[0, 1]) == (100, 100, 100)
    assert tuple(half[0, 0]) == (178, 50, 50)
    assert tuple(blend(rgb, labels, lut, 0.0)[0, 0]) == (100, 100, 100)
    assert tuple(blend(rgb, labels, lut, 1.0)[0, 0]) == (255, 0, 0)


def test_overlay_is_display_sized() -> None:
    rgb = np.zeros((3000, 1500, 3), np.uint8)
    labels = np.zeros((3000, 1500), np.uint8)
    assert overlay(rgb, labels, color_lut({0: "#ffffff"}), 1.0, max_side=600).shape == (600, 300, 3)


def test_class_shares_give_fraction_and_mean_confidence() -> None:
    labels = np.array([[1, 1, 2, 255]], np.uint8)
    confidence = np.array([[0.9, 0.7, 0.4, 0.1]], np.float32)
    shares = class_shares(labels, CLASSES, confidence)
    assert [(s.name, s.fraction) for s in shares] == [
        ("cat", 0.5),
        ("dog", 0.25),
        ("uncertain / unknown", 0.25),
    ]
    assert shares[0].confidence == pytest.approx(0.8)
    html = legend_html(shares)
    assert "cat" in html and "80%" in html and "#800000" in html
