"""Concurrent saves of one image's labels, on SQLite and on a real PostgreSQL server: of saves that
start from the same version exactly one wins and the others are told that the labels changed;
unconditional tag saves never leave the union of several savers' tags."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from services import labeling
from services.context import Studio
from services.errors import UserError
from storage import images as image_repo
from tests import servers

postgres, any_studio = servers.postgres, servers.any_studio  # the fixtures
THREADS = 8
ROUNDS = 4


def _image(studio: Studio, width: int = 6, height: int = 4) -> tuple[labeling.ProjectInfo, int]:
    project = labeling.create_project(studio, "p", [f"c{k}" for k in range(THREADS * 3)])
    with studio.Session.begin() as session:
        image = image_repo.add_image(session, project.id, name="a.png", sha256="0" * 64,
                                     path="images/a", width=width, height=height)
        return project, image.id


def _together(work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(k)`` for k in 0..THREADS-1 on threads released at once; each result or exception."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def run(k: int) -> None:
        barrier.wait()
        try:
            results[k] = work(k)
        except Exception as exc:
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _one_winner(results: list[Any], changed: str) -> int:
    wins = [k for k, r in enumerate(results) if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1, f"{len(wins)} saves from one version were all accepted: {results}"
    for exc in losses:
        assert isinstance(exc, UserError) and changed in str(exc), repr(exc)
    return wins[0]


def test_concurrent_mask_saves_from_one_version_have_one_winner(any_studio: Studio) -> None:
    _, image = _image(any_studio)
    for round_ in range(ROUNDS):
        opened = labeling.edit_start(any_studio, image, "mask")
        winner = _one_winner(_together(lambda k, v=opened.version: labeling.save_mask(
            any_studio, image, np.full((4, 6), k, np.uint8), expected_version=v)),
            "changed since you opened it")
        stored = labeling.get_mask(any_studio, image)
        assert (stored == winner).all(), f"round {round_}: the stored mask is not the winner's"


def test_concurrent_tag_saves_from_one_version_have_one_winner(any_studio: Studio) -> None:
    project, image = _image(any_studio)
    ids = [c.id for c in project.classes[1:]]
    for _ in range(ROUNDS):
        version = labeling.get_tags_version(any_studio, image)
        winner = _one_winner(_together(lambda k, v=version: labeling.set_image_tags(
            any_studio, image, ids[3 * k: 3 * k + 3], expected_version=v)),
            "changed since you opened it")
        assert labeling.get_image_tags(any_studio, image) == sorted(ids[3 * winner: 3 * winner + 3])
        assert labeling.get_tags_version(any_studio, image) == version + 1


def test_unconditional_concurrent_tag_saves_leave_one_savers_tags(any_studio: Studio) -> None:
    project, image = _image(any_studio)
    ids = [c.id for c in project.classes[1:]]
    sets = [sorted(ids[3 * k: 3 * k + 3]) for k in range(THREADS)]
    for _ in range(ROUNDS):
        results = _together(lambda k: labeling.set_image_tags(any_studio, image, sets[k]))
        assert not [r for r in results if isinstance(r, BaseException)]
        assert labeling.get_image_tags(any_studio, image) in sets  # never a union of several


def test_a_mask_created_twice_at_once_has_one_winner(any_studio: Studio) -> None:
    _, image = _image(any_studio)
    _one_winner(_together(lambda k: labeling.save_mask(
        any_studio, image, np.full((4, 6), k, np.uint8), expected_version="")),
        "changed since you opened it")
    assert labeling.edit_start(any_studio, image, "mask").version.endswith(".1")
