"""Valid image files the header check used to refuse ("not an image file": their size lies past the
first 256 KB), and links inside an import root that reach files outside it (refused)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.context import Studio
from services.errors import UserError
from services.import_options import ImportOptions
from services.importing import import_dataset
from storage.files import HEADER_BYTES


def _photo(fmt: str, seed: int = 0, **save: object) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **save)
    return buf.getvalue()


VARIANTS = {
    "big_icc.jpg": _photo("JPEG", icc_profile=b"\0" * (HEADER_BYTES + 100_000)),  # > 256 KB metadata
    "adobe_deflate.tif": _photo("TIFF", 1, compression="tiff_adobe_deflate"),  # directory after pixels
    "deflate.tif": _photo("TIFF", 2, compression="tiff_deflate"),
}


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_large_metadata_jpegs_and_deflate_tiffs_are_imported(studio: Studio, tmp_path: Path,
                                                             as_zip: bool) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in VARIANTS.items():
        (folder / name).write_bytes(data)
    source = folder
    if as_zip:
        source = tmp_path / "photos.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for name, data in VARIANTS.items():
                zf.writestr(name, data)
    report = import_dataset(studio, source, project="p")
    assert report.images_added == len(VARIANTS)
    from services import labeling

    images = labeling.image_counts(studio, "p")
    assert images["all"] == len(VARIANTS)


def test_a_link_inside_an_import_root_to_a_file_outside_is_refused(studio: Studio, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "private"
    (root / "photos").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(_photo("JPEG"))
    (root / "photos" / "ok.jpg").write_bytes(_photo("JPEG", quality=50))
    (root / "photos" / "leak.jpg").symlink_to(outside / "secret.jpg")
    with pytest.raises(UserError, match=r"leak\.jpg: links to a file outside the import roots"):
        import_dataset(studio, root / "photos", ImportOptions(within=[root]), project="p")
    assert labeling_projects(studio) == []
    # a link that stays inside the root is fine, and the CLI (no roots) follows links as before
    (root / "photos" / "leak.jpg").unlink()
    (root / "elsewhere.jpg").write_bytes(_photo("JPEG", quality=70))
    (root / "photos" / "inside.jpg").symlink_to(root / "elsewhere.jpg")
    assert import_dataset(studio, root / "photos", ImportOptions(
        within=[root]), project="p").images_added == 2
    (root / "photos" / "leak.jpg").symlink_to(outside / "secret.jpg")
    assert import_dataset(studio, root / "photos", project="q").images_added == 3


def test_label_files_and_masks_linked_outside_the_roots_are_refused(studio: Studio, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "private"
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    outside.mkdir()
    (root / "photos" / "a.jpg").write_bytes(_photo("JPEG"))
    (outside / "classes.txt").write_text("cat\n")
    (root / "classes.txt").symlink_to(outside / "classes.txt")
    with pytest.raises(UserError, match="links to a file outside the import roots"):
        import_dataset(studio, root / "photos", ImportOptions(
            classes_file=root / "classes.txt", within=[root]), project="p")
    (root / "classes.txt").unlink()
    (root / "classes.txt").write_text("cat\n")
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(outside / "a.png")
    (root / "masks" / "a.png").symlink_to(outside / "a.png")
    with pytest.raises(UserError, match=r"a\.png: links to a file outside the import roots"):
        import_dataset(studio, root / "photos", ImportOptions(
            classes_file=root / "classes.txt", masks_dir=root / "masks", within=[root]), project="p")


def labeling_projects(studio: Studio) -> list[str]:
    from services import labeling

    return [p.name for p in labeling.list_projects(studio)]
