"""Editing a project's class list never changes what stored labels mean: removing, reordering or
renaming classes keeps every tag on its class and every mask / pseudo-label pixel on its class, on
SQLite and on a real PostgreSQL server; removing a class that labels use asks what its labels
become."""

from __future__ import annotations

import numpy as np
import pytest

from services import labeling
from services.context import Studio
from services.errors import UserError
from slrnet.config import IGNORE_INDEX
from storage import images as image_repo
from storage import labels as label_repo
from storage import runs as run_repo
from tests import servers

postgres, any_studio = servers.postgres, servers.any_studio  # the fixtures


def _labelled(studio: Studio) -> tuple[dict[str, int], list[int]]:
    """Project "p" (background, cat, dog, bird); image 0 tagged dog with a mask of one column per
    class (and an unknown one), image 1 tagged cat and bird; a published pseudo-label on image 0."""
    project = labeling.create_project(studio, "p", ["cat", "dog", "bird"])
    ids = {c.name: c.id for c in project.classes}
    with studio.Session.begin() as session:
        images = [image_repo.add_image(session, project.id, name=f"{i}.png", sha256=f"{i:064x}",
                                       path=f"images/{i}", width=5, height=2).id for i in range(2)]
        run = run_repo.create_run(session, project.id, mode="wsss", backbone="tiny", config={})
        run_repo.mark_trained(session, run)
        label_repo.put_pseudo_label(session, images[0], run.id, np.array([[3, 2, 1, 0, 0]] * 2, np.uint8),
                                    np.full((2, 5), 0.5, np.float32))
        run_repo.mark_published(session, run)
    labeling.set_image_tags(studio, images[0], [ids["dog"]])
    labeling.set_image_tags(studio, images[1], [ids["cat"], ids["bird"]])
    labeling.save_mask(studio, images[0], np.array([[0, 1, 2, 3, IGNORE_INDEX]] * 2, np.uint8))
    return ids, images


def _meaning(studio: Studio, images: list[int]) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """What the labels say, by class name: each image's tags, the mask's and the pseudo-label's
    first row of pixels."""
    project = labeling.get_project(studio, "p")
    name_of_id = {c.id: c.name for c in project.classes}
    name_of_index = {c.index: c.name for c in project.classes} | {IGNORE_INDEX: "?"}
    tags = [sorted(name_of_id[c] for c in labeling.get_image_tags(studio, i)) for i in images]
    mask = labeling.get_mask(studio, images[0])
    with studio.Session.begin() as session:
        row = label_repo.current_pseudo_label(session, project.id, images[0])
        pseudo = label_repo.pseudo_label_arrays(row)[0]
    return tags, [[name_of_index[int(v)] for v in mask[0]]], [name_of_index[int(v)] for v in pseudo[0]]


def test_reordering_and_removing_classes_keeps_what_labels_mean(any_studio: Studio) -> None:
    _, images = _labelled(any_studio)
    before = _meaning(any_studio, images)
    assert before[0] == [["dog"], ["bird", "cat"]]
    # swap two lines: the indices move, every label keeps its class
    labeling.set_classes(any_studio, "p", ["dog", "cat", "bird"])
    assert _meaning(any_studio, images) == before
    # delete the line "cat": refused until the user says what its labels become
    with pytest.raises(UserError, match="'cat' still label images"):
        labeling.set_classes(any_studio, "p", ["dog", "bird"])
    assert _meaning(any_studio, images) == before
    labeling.set_classes(any_studio, "p", ["dog", "bird"], removed_labels="unknown")
    tags, mask, pseudo = _meaning(any_studio, images)
    assert tags == [["dog"], ["bird"]]  # the old code turned every dog tag into a bird tag
    assert mask == [["background", "?", "dog", "bird", "?"]]
    assert pseudo == ["bird", "dog", "?", "background", "background"]


def test_a_removed_class_can_become_background(any_studio: Studio) -> None:
    _, images = _labelled(any_studio)
    labeling.set_classes(any_studio, "p", ["cat", "bird"], removed_labels="background")
    tags, mask, _ = _meaning(any_studio, images)
    assert tags == [[], ["bird", "cat"]]
    assert mask == [["background", "cat", "background", "bird", "?"]]


def test_renaming_classes_works_and_keeps_labels(any_studio: Studio) -> None:
    # on PostgreSQL every rename failed: the placeholder name held a NUL byte
    _, images = _labelled(any_studio)
    before = _meaning(any_studio, images)
    labeling.set_classes(any_studio, "p", ["kitten", "dog", "budgie"])  # two lines edited in place
    renamed = {"cat": "kitten", "bird": "budgie"}

    def rename(names: list[str]) -> list[str]:
        return [renamed.get(n, n) for n in names]

    tags, mask, pseudo = _meaning(any_studio, images)
    assert tags == [sorted(rename(t)) for t in before[0]]
    assert mask == [rename(before[1][0])] and pseudo == rename(before[2])
    # a swap of two names given explicitly is a swap of names, not of labels
    labeling.set_classes(any_studio, "p", ["dog", "kitten", "budgie"],
                         renames={"kitten": "dog", "dog": "kitten"})
    assert _meaning(any_studio, images)[0] == [["kitten"], ["budgie", "dog"]]


def test_an_open_painting_is_refused_after_the_classes_moved(any_studio: Studio) -> None:
    _, images = _labelled(any_studio)
    opened = labeling.edit_start(any_studio, images[0], "mask")
    labeling.set_classes(any_studio, "p", ["bird", "dog", "cat"])
    with pytest.raises(UserError, match="changed since you opened it"):
        labeling.save_mask(any_studio, images[0], opened.labels, expected_version=opened.version)


def test_class_names_with_control_characters_are_refused(studio: Studio) -> None:
    with pytest.raises(UserError, match="control characters"):
        labeling.create_project(studio, "p", ["cat\x00", "dog"])
    with pytest.raises(UserError, match="control characters"):
        labeling.create_project(studio, "p", ["ca\nt"])
