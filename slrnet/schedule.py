"""How many images an epoch trains on (torch-free: the training plan prices runs with it)."""

from __future__ import annotations


def drops_last_batch(visits: int, batch_size: int) -> bool:
    """Whether an epoch's loader drops its last partial batch: yes unless the whole set is
    smaller than one batch (then it is the only batch)."""
    return visits > batch_size


def images_per_epoch(visits: int, batch_size: int) -> int:
    """Images an epoch of ``visits`` image visits trains on: whole batches only (see
    :func:`drops_last_batch`)."""
    return (visits // batch_size) * batch_size if drops_last_batch(visits, batch_size) else visits
