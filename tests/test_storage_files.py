"""The image store, pixel loading with EXIF orientation, image validation, thumbnails, label PNGs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.files import ImageFileError, ImageStore, inspect_image, read_rgb
from storage.label_maps import (
    class_colors,
    colorize,
    decode_label_png,
    encode_label_png,
    hex_to_rgb,
)
from tests.image_bytes import image_bytes, png_header_claiming, write


def test_store_is_content_addressed_and_keeps_the_original_bytes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = image_bytes(32, 24, seed=1)
    sha, relpath, created, mtime = store.put(data, "jpg")
    assert sha == hashlib.sha256(data).hexdigest()
    assert relpath == f"images/{sha[:2]}/{sha}.jpg"
    assert created and store.abspath(relpath).read_bytes() == data
    again = store.put(data, "jpg")
    assert again[:3] == (sha, relpath, False) and again.mtime_ns > mtime  # touched
    assert store.remove_unused([relpath], lambda aside: set()) == [relpath]
    assert not store.abspath(relpath).exists()


def test_remove_unused_puts_back_what_is_still_used(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    kept = store.put(image_bytes(8, 8, seed=1), "jpg")
    gone = store.put(image_bytes(8, 8, seed=2), "jpg")
    seen: dict[str, int] = {}

    def still_used(aside: dict[str, int]) -> set[str]:
        seen.update(aside)
        assert not store.abspath(kept.relpath).exists()  # set aside while deciding
        return {kept.relpath}

    removed = store.remove_unused([kept.relpath, gone.relpath, "images/no/such.jpg"], still_used)
    assert removed == [gone.relpath]
    assert seen == {kept.relpath: kept.mtime_ns, gone.relpath: gone.mtime_ns}
    assert store.abspath(kept.relpath).is_file() and not store.abspath(gone.relpath).exists()
    assert [r for r, _ in store.stored_files()] == [kept.relpath]


def test_read_rgb_applies_exif_orientation(tmp_path: Path) -> None:
    # Stored 64 wide x 32 high: left half red, right half blue. Orientation 6 = rotate 90° clockwise.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    rgb = read_rgb(path)
    assert rgb.shape == (64, 32, 3) and rgb.dtype == np.uint8
    top, bottom = rgb[:24].reshape(-1, 3).mean(0), rgb[40:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50
    meta = inspect_image(path.read_bytes(), max_pixels=10_000)
    assert (meta.width, meta.height, meta.ext) == (32, 64, "jpg")


def test_read_rgb_converts_other_modes_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L").save(path)
    rgb = read_rgb(path)
    assert rgb.shape == (5, 7, 3) and (rgb == 100).all()


def test_read_rgb_scales_16_bit_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16)).save(path)
    assert read_rgb(path)[0, :, 0].tolist() == [0, 100, 255]


def test_inspect_image_rejects_bad_bytes() -> None:
    good = image_bytes(320, 240, seed=2)
    assert inspect_image(good, max_pixels=320 * 240).width == 320
    with pytest.raises(ImageFileError, match="not an image"):
        inspect_image(b"just some text", max_pixels=10**6)
    with pytest.raises(ImageFileError, match="corrupt or truncated"):
        inspect_image(good[: len(good) * 2 // 3], max_pixels=10**6)
    with pytest.raises(ImageFileError, match="over the limit of 76799"):
        inspect_image(good, max_pixels=320 * 240 - 1)
    with pytest.raises(ImageFileError, match="unsupported image format GIF"):
        inspect_image(image_bytes(8, 8, fmt="GIF"), max_pixels=10**6)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(ImageFileError, match="over the"):
        inspect_image(png_header_claiming(50_000, 50_000), max_pixels=100_000_000)
    with pytest.raises(ImageFileError, match="over the limit"):
        inspect_image(png_header_claiming(2_000, 2_000), max_pixels=1_000_000)


def test_thumbnail_is_upright_small_and_cached(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    relpath = store.put(image_bytes(600, 300, seed=3, orientation=8), "jpg").relpath
    thumb = store.thumbnail(relpath)
    assert thumb.is_relative_to(tmp_path / "thumbs")
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.size == (128, 256)  # rotated: 300 x 600 scaled to 256 high
    mtime = thumb.stat().st_mtime_ns
    assert store.thumbnail(relpath) == thumb and thumb.stat().st_mtime_ns == mtime
    store.remove_unused([relpath], lambda aside: set())
    assert not thumb.exists()


def test_label_png_round_trip_is_lossless() -> None:
    rng = np.random.default_rng(0)
    label_map = rng.integers(0, 256, size=(37, 53), dtype=np.uint8)
    label_map[0, 0], label_map[-1, -1] = 0, 255
    data = encode_label_png(label_map)
    assert data.startswith(b"\x89PNG")
    decoded = decode_label_png(data)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, label_map)
    with pytest.raises(ValueError):
        encode_label_png(label_map.astype(np.int32))
    with pytest.raises(ValueError):
        encode_label_png(np.zeros((4, 4, 3), np.uint8))


def test_decode_label_png_reads_palette_indices_not_colours(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 255]], np.uint8)
    im = Image.fromarray(indices, mode="P")
    im.putpalette([200, 10, 10] * 256)
    path = write(tmp_path / "p.png", b"")
    im.save(path)
    assert np.array_equal(decode_label_png(path.read_bytes()), indices)
    with pytest.raises(ValueError, match="single-channel"):
        decode_label_png(image_bytes(8, 8, fmt="PNG"))


def test_palette_helpers() -> None:
    palette = class_colors([f"c{i}" for i in range(21)], [None] * 21, 0)
    assert palette[0] == "#000000" and palette[1] != palette[2]
    assert len(set(palette)) == 21 and all(len(c) == 7 and c.startswith("#") for c in palette)
    assert hex_to_rgb("#8000ff") == (128, 0, 255)
    with pytest.raises(ValueError):
        hex_to_rgb("red")
    rgb = colorize(np.array([[0, 1, 255]], np.uint8), ["#000000", "#ff0000"])
    assert rgb.tolist() == [[[0, 0, 0], [255, 0, 0], [255, 255, 255]]]
