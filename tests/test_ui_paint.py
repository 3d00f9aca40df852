"""The paint editor's colour -> class mapping and the overlay drawing (pure numpy, no browser)."""

from __future__ import annotations

import numpy as np
import pytest

from app.overlay import blend, class_shares, color_lut, fit_size, legend_html, overlay, resize_nearest
from app.paint import (
    PaintPalette,
    apply_paint,
    editor_image,
    painted_labels,
)
from storage.label_maps import default_palette, hex_to_rgb
from storage.models import IGNORE_INDEX

CLASSES = [(0, "background", "#000000"), (1, "cat", "#800000"), (2, "dog", "#008000")]


@pytest.fixture()
def palette() -> PaintPalette:
    return PaintPalette.from_classes(CLASSES)


def _layer(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros((*shape, 4), dtype=np.uint8)


def _paint(layer: np.ndarray, region: tuple[slice, slice], color: str, alpha: int = 255) -> None:
    layer[region] = (*hex_to_rgb(color), alpha)


def test_palette_has_one_brush_per_class_plus_unknown(palette: PaintPalette) -> None:
    assert [b.value for b in palette.brushes] == [0, 1, 2, IGNORE_INDEX]
    unknown = palette.brushes[-1].color
    assert unknown not in {c for _, _, c in CLASSES}


def test_palette_refuses_colours_too_alike_to_tell_apart() -> None:
    with pytest.raises(ValueError, match="too alike"):
        PaintPalette.from_classes([(0, "a", "#800000"), (1, "b", "#820101")])


def test_unknown_brush_avoids_a_class_that_took_its_colour() -> None:
    palette = PaintPalette.from_classes([(0, "sand", "#e0e0c0"), (1, "snow", "#ffffff")])
    assert palette.brushes[-1].color not in ("#e0e0c0", "#ffffff")


def test_default_palette_of_coco_sized_projects_is_paintable() -> None:
    colors = default_palette(81)
    palette = PaintPalette.from_classes([(i, f"c{i}", c) for i, c in enumerate(colors)])
    assert len(palette.brushes) == 82


def test_colours_map_to_classes_by_value_not_by_layer_order(palette: PaintPalette) -> None:
    first, second = _layer((10, 10)), _layer((10, 10))
    _paint(first, (slice(0, 5), slice(0, 10)), "#008000")  # dog, in the first layer
    _paint(second, (slice(5, 10), slice(0, 10)), "#800000")  # cat, in the second layer
    labels, painted = painted_labels([first, second], palette)
    assert painted.all()
    assert (labels[:5] == 2).all() and (labels[5:] == 1).all()
    swapped, _ = painted_labels([second, first], palette)
    np.testing.assert_array_equal(labels, swapped)


def test_transparent_and_stray_colours_are_not_paint(palette: PaintPalette) -> None:
    layer = _layer((4, 4))
    _paint(layer, (slice(0, 1), slice(None)), "#800000", alpha=40)  # faint: not painted
    _paint(layer, (slice(1, 2), slice(None)), "#3366ff")  # no brush has this colour
    _paint(layer, (slice(2, 3), slice(None)), "#810101")  # within tolerance of cat
    labels, painted = painted_labels([layer], palette)
    assert not painted[:2].any()
    assert (labels[2] == 1).all() and painted[2].all()
    assert not painted[3].any()


def test_unknown_brush_paints_ignore_and_background_brush_paints_zero(palette: PaintPalette) -> None:
    layer = _layer((2, 2))
    _paint(layer, (slice(0, 1), slice(None)), palette.brushes[-1].color)
    _paint(layer, (slice(1, 2), slice(None)), "#000000")
    result = apply_paint(np.full((2, 2), 1, np.uint8), [layer], palette, (2, 2))
    assert (result[0] == IGNORE_INDEX).all()
    assert (result[1] == 0).all()


def test_paint_goes_over_the_start_and_erased_pixels_keep_it(palette: PaintPalette) -> None:
    start = np.full((6, 6), 2, np.uint8)
    layer = _layer((6, 6))
    _paint(layer, (slice(0, 3), slice(0, 3)), "#800000")
    result = apply_paint(start, [layer], palette, (6, 6))
    assert (result[:3, :3] == 1).all()
    assert (result[3:, :] == 2).all() and (result[:, 3:] == 2).all()


def test_rest_is_background_fills_only_unknown_pixels(palette: PaintPalette) -> None:
    layer = _layer((4, 4))
    _paint(layer, (slice(0, 2), slice(None)), "#008000")
    result = apply_paint(None, [layer], palette, (4, 4), unpainted_background=0)
    assert (result[:2] == 2).all() and (result[2:] == 0).all()
    untouched = apply_paint(None, [layer], palette, (4, 4))
    assert (untouched[2:] == IGNORE_INDEX).all()


def test_large_images_are_edited_downscaled_and_saved_full_size(palette: PaintPalette) -> None:
    full = (1500, 2100)
    rgb = np.zeros((*full, 3), np.uint8)
    view = editor_image(rgb, None, palette, max_side=700)
    assert view.edit_size == (500, 700)
    layer = _layer(view.edit_size)
    _paint(layer, (slice(100, 200), slice(350, 700)), "#008000")  # right half of a band
    result = apply_paint(None, [layer], palette, full)
    assert result.shape == full
    rows, cols = np.nonzero(result == 2)
    # nearest-neighbour: exactly the band, 3x bigger, with hard edges and no other value
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (300, 599, 1050, 2099)
    assert set(np.unique(result)) == {2, IGNORE_INDEX}


def test_editor_background_shows_the_start_labels_blended(palette: PaintPalette) -> None:
    rgb = np.full((20, 20, 3), 200, np.uint8)
    start = np.full((20, 20), IGNORE_INDEX, np.uint8)
    start[:10] = 2
    view = editor_image(rgb, start, palette)
    assert (view.background[15] == 200).all()  # unknown: the photo as it is
    assert view.background[5, 5, 1] > view.background[5, 5, 0]  # tinted green (dog)


def test_editor_layer_of_another_size_is_resized(palette: PaintPalette) -> None:
    layer = _layer((5, 5))
    _paint(layer, (slice(None), slice(None)), "#800000")
    labels, painted = painted_labels([layer, _layer((10, 10))], palette)
    assert labels.shape == (5, 5) and (labels == 1).all() and painted.all()


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
