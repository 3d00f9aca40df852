"""File disclosure through imports: server paths from the web only under import roots (after
symbolic links), and errors that never quote what a file holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.context import Studio
from services.errors import UserError
from services.import_options import ImportOptions
from services.import_sources import check_server_path, parse_import_roots
from services.importing import import_dataset
from tests.image_bytes import image_bytes, write
from tests.import_data import snapshot

SECRET = "root:$6$s3cr3tHASH:19000:0:99999:7:::"


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    return write(tmp_path / "etc" / "shadow", f"{SECRET}\ndaemon:*:19000:0:99999:7:::\n".encode())


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    write(folder / "a.jpg", image_bytes(32, 24, seed=1))
    return folder


def test_a_system_file_as_tags_csv_is_not_quoted(studio: Studio, images: Path, secret: Path) -> None:
    import_dataset(studio, images, ImportOptions(
        classes_file=write(images.parent / "c.txt", b"cat\n")), project="p")
    before = snapshot(studio)
    with pytest.raises(UserError, match="not a tags CSV") as info:
        import_dataset(studio, images, ImportOptions(tags_csv=secret), project="p")
    assert "s3cr3t" not in str(info.value) and "19000" not in str(info.value)
    assert snapshot(studio) == before


@pytest.mark.parametrize(
    "content",
    [
        f"{SECRET}\n".encode(),  # /etc/passwd-like: ':'
        b"cat\n/usr/bin/python\n",  # a path
        b"cat\ndo\x07g\n",  # a control character
        b"\x89PNG\r\n\x1a\n\x00\x00binary",  # not text
        b"x" * 101 + b"\n",  # too long
        b"".join(b"c%d\n" % i for i in range(300)),  # too many
    ],
    ids=["passwd", "path", "control", "binary", "long", "many"],
)
def test_implausible_class_files_are_refused_unquoted(
    studio: Studio, images: Path, tmp_path: Path, content: bytes
) -> None:
    classes = write(tmp_path / "classes.txt", content)
    before = snapshot(studio)
    with pytest.raises(UserError, match="class") as info:
        import_dataset(studio, images, ImportOptions(classes_file=classes), project="p")
    assert "s3cr3t" not in str(info.value) and "python" not in str(info.value) and "\n" not in str(info.value)
    assert snapshot(studio) == before


def test_cli_refuses_etc_passwd_as_class_file(tmp_path: Path, images: Path) -> None:
    import launch

    passwd = Path("/etc/passwd")
    if not passwd.is_file():
        pytest.skip("no /etc/passwd here")
    code = launch.main(["import", str(images), "--data", str(tmp_path / "data"), "--classes", str(passwd)])
    assert code == 2


def test_server_paths_must_lie_under_an_import_root(tmp_path: Path, secret: Path, images: Path) -> None:
    root = tmp_path / "shared"
    (root / "set").mkdir(parents=True)
    os.symlink(secret.parent, root / "link")  # a link inside the root pointing out of it
    roots = parse_import_roots([root])
    assert check_server_path(roots, str(root / "set"), "folder") == (root / "set").resolve()
    assert check_server_path(roots, "set", "folder") == (root / "set").resolve()  # relative: to the root
    for outside in (str(secret), str(images), str(root / "link" / "shadow"), str(root / ".." / "etc"), "/"):
        with pytest.raises(UserError, match="must lie under an import root") as info:
            check_server_path(roots, outside, "tags CSV")
        assert "does not exist" not in str(info.value)
    with pytest.raises(UserError, match="importing from folders on the server is off"):
        check_server_path((), str(root / "set"), "folder")


def test_import_roots_from_options_and_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert parse_import_roots([a], env=f"{b}{os.pathsep}{a}") == (a.resolve(), b.resolve())
    assert parse_import_roots([], env="") == ()
    with pytest.raises(UserError, match="is not a folder"):
        parse_import_roots([tmp_path / "missing"])
