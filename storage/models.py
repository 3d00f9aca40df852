"""SQLAlchemy 2.0 schema of SLRNet Studio.

Conventions shared by every layer:

* A class's ``index`` is the value it takes in a label map (mask, pseudo-label). Projects with a
  background class hold it as an ordinary row with ``index == 0`` and ``is_background`` set;
  projects without one (e.g. CamVid) number their classes from 0.
* Label maps are stored losslessly as single-channel PNG bytes (``uint8`` class index per pixel,
  ``IGNORE_INDEX`` = unknown / not labelled) at the image's full resolution.
* Images live on disk under the data dir, content-addressed by SHA-256; the row holds the path
  relative to the data dir.
* JSON columns hold plain dicts/lists (config, metrics, parameters).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TAG_SOURCES = ("human", "model")
MASK_SOURCES = ("human", "accepted")  # accepted = a pseudo-label the user accepted as-is
JOB_KINDS = ("import", "train", "predict", "export")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
RUN_STATUSES = ("running", "trained", "published", "failed", "cancelled", "interrupted")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    has_background: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    classes: Mapped[list[ClassLabel]] = relationship(
        back_populates="project", cascade="all, delete-orphan", order_by="ClassLabel.index"
    )
    # Never loaded as a list (a project can hold many thousands of images): the database's
    # ON DELETE CASCADE removes them with their project.
    images: Mapped[list[Image]] = relationship(
        back_populates="project", cascade="all, delete-orphan", lazy="raise", passive_deletes=True
    )


class ClassLabel(Base):
    __tablename__ = "classes"
    __table_args__ = (
        UniqueConstraint("project_id", "index"),
        UniqueConstraint("project_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # value in label maps; 0..254
    name: Mapped[str] = mapped_column(String(200))
    color: Mapped[str] = mapped_column(String(7))  # "#rrggbb"
    is_background: Mapped[bool] = mapped_column(Boolean, default=False)

    project: Mapped[Project] = relationship(back_populates="classes")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256"),
        UniqueConstraint("project_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500))  # the file name it was imported as
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(500))  # relative to the data dir
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When a user last saved its human tags, also as "none of the classes": a checked image is not
    # "untagged" any more (see storage.images.ImageFilter.UNTAGGED). None: never checked.
    tags_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Raised by one at every save of its human tags: a save that names the version it read is
    # refused once another save came in between (compare-and-set, see storage.labels.set_tags).
    tags_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    project: Mapped[Project] = relationship(back_populates="images")
    tags: Mapped[list[ImageTag]] = relationship(back_populates="image", cascade="all, delete-orphan")
    mask: Mapped[Mask | None] = relationship(
        back_populates="image", cascade="all, delete-orphan", uselist=False
    )


class ImageTag(Base):
    """An image-level label: class ``class_id`` is present in the image."""

    __tablename__ = "image_tags"
    __table_args__ = (UniqueConstraint("image_id", "class_id", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="human")  # TAG_SOURCES
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # model tags only
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    image: Mapped[Image] = relationship(back_populates="tags")
    class_label: Mapped[ClassLabel] = relationship()


class Mask(Base):
    """The human pixel mask of an image (one per image; edits replace it).

    ``png`` is a single-channel PNG of class indices; ``IGNORE_INDEX`` marks unknown pixels, so a
    partial mask (scribbles, a few regions) is a mask with ignore pixels and ``is_partial`` set.
    """

    __tablename__ = "masks"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), unique=True, index=True
    )
    png: Mapped[bytes] = mapped_column(LargeBinary)
    is_partial: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="human")  # MASK_SOURCES
    # 1 when created, raised by one at every replacement (compare-and-set, see storage.labels).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    image: Mapped[Image] = relationship(back_populates="mask")


class TrainingRun(Base):
    """One training run of a project; a finished run is a model version.

    ``status`` goes running -> trained (checkpoint final) -> published (pseudo-labels for every
    image written). Only published runs are "current": the UI and exports never show labels of a
    run that is not published.

    A project has at most one ``running`` run (a unique partial index: the one-training-per-project
    lock, across processes and machines). The running run's ``owner`` (``host:pid``) refreshes
    ``heartbeat_at`` while it trains; a run whose owner is gone may be taken over.
    """

    __tablename__ = "training_runs"
    __table_args__ = (
        Index("uq_training_runs_one_running", "project_id", unique=True,
              sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1, 2, ... once trained
    mode: Mapped[str] = mapped_column(String(16))  # wsss | ssss | ssss_tags
    backbone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")  # RUN_STATUSES
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint_path: Mapped[str | None] = mapped_column(String(500), nullable=True)  # rel. to data dir
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # last completed epoch
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(300), nullable=True)  # host:pid training it
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PseudoLabel(Base):
    """A model's label map for one image, per model version (training run)."""

    __tablename__ = "pseudo_labels"
    __table_args__ = (UniqueConstraint("image_id", "run_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)  # class indices, IGNORE_INDEX = uncertain
    confidence_png: Mapped[bytes] = mapped_column(LargeBinary)  # uint8, confidence * 255
    score: Mapped[float] = mapped_column(Float)  # mean confidence, 0..1 (low = worth labelling)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """Background work as the UI sees it; the queue only carries the job id."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # JOB_KINDS
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # JOB_STATUSES
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # loss curve, ETA, mIoU, ...
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. run id, export path
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
