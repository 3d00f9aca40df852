"""Zip amplification and appended bytes: caps from the zip directory and while reading, and only
the image itself is stored (JPEG cut after EOI, PNG after IEND, TIFF/BMP written again losslessly)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.context import Studio
from services.errors import UserError
from services.import_sources import SMALL_BYTES
from services.importing import import_dataset
from storage.files import read_rgb
from tests.image_bytes import image_bytes, write
from tests.import_data import images_of, snapshot


def _stored_bytes(studio: Studio, project: str) -> dict[str, bytes]:
    return {i.name: studio.images.abspath(i.path).read_bytes() for i in images_of(studio, project)}


def test_a_zip_declaring_far_more_than_its_size_is_refused_unread(studio: Studio, tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.jpg", image_bytes(32, 24, seed=1))
        zf.writestr("z.bmp", bytes(SMALL_BYTES + (1 << 20)))  # 65 MB of zeros, ~65 kB packed
    before = snapshot(studio)
    with pytest.raises(UserError, match="over 100 times its size"):
        import_dataset(studio, archive, project="p")
    assert snapshot(studio) == before


def test_appended_bytes_beyond_what_the_image_can_need_are_refused_before_reading(
    studio: Studio, tmp_path: Path
) -> None:
    archive = tmp_path / "padded.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.jpg", image_bytes(32, 24, seed=1) + bytes(30 << 20))  # packs to ~30 kB
    before = snapshot(studio)
    with pytest.raises(UserError, match=r"a\.jpg: 3145\d+ bytes is far more than a 32x24 image needs"):
        import_dataset(studio, archive, project="p")
    assert snapshot(studio) == before


def test_an_entry_yielding_other_bytes_than_the_directory_says_is_refused(
    studio: Studio, tmp_path: Path
) -> None:
    jpeg = image_bytes(64, 48, seed=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.jpg", jpeg)
    raw = bytearray(buf.getvalue())
    lie = (len(jpeg) // 2).to_bytes(4, "little")
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    raw[local + 22:local + 26] = lie  # uncompressed size in the local header
    raw[central + 24:central + 28] = lie  # ... and in the central directory
    archive = write(tmp_path / "lying.zip", bytes(raw))
    before = snapshot(studio)
    with pytest.raises(UserError, match=r"a\.jpg"):
        import_dataset(studio, archive, project="p")
    assert snapshot(studio) == before


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_bytes_after_the_image_are_not_stored(studio: Studio, tmp_path: Path, fmt: str) -> None:
    clean = image_bytes(40, 30, seed=3, fmt=fmt)
    write(tmp_path / "imgs" / f"x.{fmt.lower()}", clean + b"<secret appended payload>" * 40)
    write(tmp_path / "imgs" / f"clean.{fmt.lower()}", image_bytes(40, 30, seed=4, fmt=fmt))
    import_dataset(studio, tmp_path / "imgs", project="p")
    stored = _stored_bytes(studio, "p")
    assert stored[f"x.{fmt.lower()}"] == clean
    assert stored[f"clean.{fmt.lower()}"] == image_bytes(40, 30, seed=4, fmt=fmt)  # clean files as given


def test_a_jpeg_with_an_exif_thumbnail_keeps_its_bytes(studio: Studio, tmp_path: Path) -> None:
    """An EXIF thumbnail holds its own EOI marker inside APP1: the cut must not stop there."""
    thumb = image_bytes(16, 12, seed=5)
    exif = Image.Exif()
    exif[0x010F] = "camera"
    big = Image.open(io.BytesIO(image_bytes(64, 48, seed=6)))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", exif=exif.tobytes() + thumb)  # an APP1 segment with a JPEG inside
    data = buf.getvalue()
    write(tmp_path / "imgs" / "e.jpg", data)
    import_dataset(studio, tmp_path / "imgs", project="p")
    assert _stored_bytes(studio, "p")["e.jpg"] == data


def test_tiff_and_bmp_are_rewritten_losslessly_and_multi_frame_is_reported(
    studio: Studio, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    write(tmp_path / "imgs" / "multi.tif", buf.getvalue() + b"tail" * 100)
    bmp = io.BytesIO()
    frames[1].save(bmp, format="BMP")
    write(tmp_path / "imgs" / "b.bmp", bmp.getvalue() + b"tail" * 100)
    report = import_dataset(studio, tmp_path / "imgs", project="p")
    assert report.first_frame_only == ["multi.tif"]
    assert "only the first frame of 1 multi-frame images (multi.tif)" in report.summary()
    paths = {i.name: studio.images.abspath(i.path) for i in images_of(studio, "p")}
    with Image.open(paths["multi.tif"]) as im:
        assert getattr(im, "n_frames", 1) == 1
    assert np.array_equal(read_rgb(paths["multi.tif"]), np.asarray(frames[0]))
    assert np.array_equal(read_rgb(paths["b.bmp"]), np.asarray(frames[1]))
    assert not paths["b.bmp"].read_bytes().endswith(b"tail")
