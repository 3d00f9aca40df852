"""The ``Studio`` bundle: data dir, database and image store, shared by the CLI, the UI and workers."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.errors import UserError
from storage.db import default_database_url, open_database
from storage.feature_store import FEATURES_DIR, FeatureStore
from storage.files import ImageStore

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "SLRNET_DATA"
MAX_PIXELS_ENV = "SLRNET_MAX_PIXELS"
FEATURE_CACHE_ENV = "SLRNET_FEATURE_CACHE_MB"
DEFAULT_FEATURE_CACHE_MB = 4096  # ~15,000 images at 160 px (README: the feature store)
DEFAULT_DATA_DIR = "data"
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass
class Studio:
    """Everything a service needs. Services own transactions: ``with studio.Session.begin() as s:``.

    A context manager: ``with Studio.open(data_dir) as studio: ...`` closes it at the end.
    """

    data_dir: Path
    engine: Engine
    Session: sessionmaker[Session]
    images: ImageStore
    features: FeatureStore
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Folders the web UI may import from on the server (``serve --import-root`` /
    # ``$SLRNET_IMPORT_ROOTS``), resolved; empty: the UI offers no server-side import.
    import_roots: tuple[Path, ...] = ()

    @classmethod
    def open(cls, data_dir: str | Path | None = None, database_url: str | None = None) -> Studio:
        """Open (creating if needed) the data dir and its database, migrated to the current schema.

        ``data_dir`` defaults to ``$SLRNET_DATA`` or ``./data``; ``database_url`` to
        ``$SLRNET_DATABASE_URL`` or ``<data_dir>/studio.db``; ``max_pixels`` comes from
        ``$SLRNET_MAX_PIXELS`` (default 100 megapixels); the feature store's cap from
        ``$SLRNET_FEATURE_CACHE_MB`` (default 4096).
        """
        root = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise UserError(f"data dir {root} is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        engine, session_factory = open_database(database_url or default_database_url(root))
        features = FeatureStore(root / FEATURES_DIR, _feature_cache_mb_from_env() * 1_000_000)
        logger.debug("opened studio at %s (%s)", root, engine.url.render_as_string(hide_password=True))
        return cls(
            data_dir=root,
            engine=engine,
            Session=session_factory,
            images=ImageStore(root, features),
            features=features,
            max_pixels=_max_pixels_from_env(),
        )

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Studio:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _max_pixels_from_env() -> int:
    return _whole_number_from_env(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, minimum=1)


def _feature_cache_mb_from_env() -> int:
    return _whole_number_from_env(FEATURE_CACHE_ENV, DEFAULT_FEATURE_CACHE_MB, minimum=0)


def _whole_number_from_env(name: str, default: int, *, minimum: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise UserError(f"{name} must be {bound}, got {value}")
    return value
