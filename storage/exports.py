"""Queries of the export: a project's label maps, streamed in id order a batch at a time.

Rows are plain tuples (no ORM objects), so a long export does not fill the session's identity map,
and each batch is fetched with a keyset condition (``images.id > last id``), so memory holds one
batch of PNG blobs at a time on every database backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, case, null, select
from sqlalchemy.orm import Session

from storage.models import Image, Mask, PseudoLabel

Source = Literal["best", "human", "model"]


@dataclass(frozen=True)
class LabelRow:
    """One image with the label blobs an export of ``source`` needs (None where absent)."""

    image_id: int
    name: str
    width: int
    height: int
    mask_png: bytes | None
    pseudo_png: bytes | None
    confidence_png: bytes | None


def iter_label_rows(
    session: Session,
    project_id: int,
    *,
    source: Source,
    run_id: int | None,
    batch_size: int = 64,
) -> Iterator[LabelRow]:
    """Every image of the project in id order, with its human mask and/or pseudo-label of ``run_id``.

    ``source="human"`` fetches masks only, ``"model"`` pseudo-labels only, ``"best"`` the mask where
    there is one and the pseudo-label otherwise (the other blob is not read). Pseudo-labels are
    fetched only when ``run_id`` is given. Images without the requested labels still come, with
    None blobs, so the caller can count them.
    """
    want_mask = source in ("best", "human")
    want_pseudo = source in ("best", "model") and run_id is not None
    mask_png = Mask.png if want_mask else null()
    if want_pseudo and source == "best":
        pseudo_png = case((Mask.id.is_(None), PseudoLabel.png), else_=null())
        confidence_png = case((Mask.id.is_(None), PseudoLabel.confidence_png), else_=null())
    elif want_pseudo:
        pseudo_png, confidence_png = PseudoLabel.png, PseudoLabel.confidence_png
    else:
        pseudo_png = confidence_png = null()

    stmt = select(
        Image.id, Image.name, Image.width, Image.height, mask_png, pseudo_png, confidence_png
    ).where(Image.project_id == project_id)
    if want_mask:
        stmt = stmt.outerjoin(Mask, Mask.image_id == Image.id)
    if want_pseudo:
        stmt = stmt.outerjoin(
            PseudoLabel, and_(PseudoLabel.image_id == Image.id, PseudoLabel.run_id == run_id)
        )
    stmt = stmt.order_by(Image.id).limit(batch_size)

    last_id = 0
    while True:
        rows = session.execute(stmt.where(Image.id > last_id)).all()
        for row in rows:
            yield LabelRow(*row)
        if len(rows) < batch_size:
            return
        last_id = rows[-1][0]
