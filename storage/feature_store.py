"""The feature store: a frozen backbone's features of each image, computed once, kept on disk.

Entries are keyed by (image content hash, feature spec key) and live under
``<data dir>/features/<spec folder>/<sha[:2]>/<sha>.feat`` (the spec folder is the key with its
``/`` written as ``,``); an entry is a dict of named half-precision
arrays (e.g. ``"s1/l1"``: scale 1, level 1). The store is bounded: after writes push it over
``cap_bytes`` the least recently used entries go (reads move an entry's mtime forward, as
:mod:`storage.files` does for images).

Safe for several processes on one data dir without a lock server:

* a write goes to a temporary file in the entry's folder, then ``os.replace`` puts it in place, so
  a reader sees the old entry, the new one, or none; two writers of one key both leave a whole file;
* every file carries a header (magic, content hash, spec key, array table, payload length) and a
  CRC-32 of its payload: a truncated, corrupted, misplaced or foreign file never reads as valid
  (it reads as missing, and is deleted);
* eviction deletes files by name; a reader that had opened one keeps its bytes (POSIX), one that
  comes after finds the entry missing and recomputes it. Evictions are serialized by an advisory
  lock file where the platform has ``fcntl`` (elsewhere two may overlap and evict a little more).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.files import TMP_PREFIX, write_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
SUFFIX = ".feat"
STALE_TMP_S = 3600.0
RESCAN_S = 60.0  # a temporary file this old was left by a killed writer
MAGIC = b"SLRFEAT1"
_LENGTHS = struct.Struct("<IQ")  # header length, payload length
_CRC = struct.Struct("<I")
_KEY_PART = r"[A-Za-z0-9][A-Za-z0-9._+=-]*"
_SPEC_KEY = re.compile(rf"{_KEY_PART}(/{_KEY_PART})*")
_SPEC_DIR = re.compile(rf"{_KEY_PART}(,{_KEY_PART})*")
_SHA = re.compile(r"[0-9a-f]{64}")
_LOCK_FILE = ".evict.lock"


class FeatureFileError(ValueError):
    """A feature file that is not a whole, valid entry of the key it is stored under."""


@dataclass(frozen=True)
class Usage:
    """What the store (or one spec / one set of images in it) holds."""

    entries: int
    bytes: int
    images: int  # distinct image contents among the entries
    cap_bytes: int

    @property
    def per_image_bytes(self) -> int:
        """Mean bytes per image (all specs of an image together); 0 when empty."""
        return self.bytes // self.images if self.images else 0

    def summary(self) -> str:
        """E.g. "334 images, 85.2 MB (261 KB per image) of a 4096 MB cap"."""
        return (f"{self.images} images, {megabytes(self.bytes)} ({kilobytes(self.per_image_bytes)} "
                f"per image) of a {megabytes(self.cap_bytes)} cap")


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e10 else f"{n / 1e9:.1f} GB"


def kilobytes(n: int) -> str:
    return f"{round(n / 1e3)} KB"


def check_spec_key(spec_key: str) -> str:
    """``spec_key`` if it is made of safe names (letters, digits, ``._+=-``, not starting with a
    dot) joined by ``/``, at most 200 characters; else ValueError."""
    if len(spec_key) > 200 or not _SPEC_KEY.fullmatch(spec_key):
        raise ValueError(f"not a usable feature spec key: {spec_key!r}")
    return spec_key


def spec_folder(spec_key: str) -> str:
    """The one folder name of a spec key (``/`` -> ``,``; no key part holds a comma)."""
    return check_spec_key(spec_key).replace("/", ",")


def check_sha(sha256: str) -> str:
    if not _SHA.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return sha256


def encode(sha256: str, spec_key: str, features: Mapping[str, np.ndarray]) -> bytes:
    """The file bytes of one entry: arrays cast to float16, C order."""
    arrays = []
    offset = 0
    for name, value in features.items():
        array = np.ascontiguousarray(value, dtype=np.float16)
        arrays.append((str(name), list(array.shape), offset, array.nbytes, array))
        offset += array.nbytes
    header = json.dumps({"content": sha256, "spec": spec_key,
                         "arrays": [[n, s, o, b] for n, s, o, b, _ in arrays]}).encode()
    payload = b"".join(a.tobytes() for *_, a in arrays)
    return b"".join((MAGIC, _LENGTHS.pack(len(header), len(payload)), header, payload,
                     _CRC.pack(zlib.crc32(payload))))


def decode(data: bytearray | bytes, sha256: str, spec_key: str) -> dict[str, np.ndarray]:
    """The arrays of an entry's bytes (views into ``data``; writable when it is a bytearray).
    Raises :class:`FeatureFileError` unless it is a whole entry of exactly this key."""
    start = len(MAGIC) + _LENGTHS.size
    if len(data) < start + _CRC.size or bytes(data[:len(MAGIC)]) != MAGIC:
        raise FeatureFileError("not a feature file")
    header_len, payload_len = _LENGTHS.unpack_from(data, len(MAGIC))
    if len(data) != start + header_len + payload_len + _CRC.size:
        raise FeatureFileError("truncated or overlong feature file")
    try:
        header = json.loads(bytes(data[start:start + header_len]))
        arrays = header["arrays"]
        if header["content"] != sha256 or header["spec"] != spec_key:
            raise FeatureFileError("feature file of another key")
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatureFileError(f"unreadable feature header ({exc})") from exc
    base = start + header_len
    payload = memoryview(data)[base:base + payload_len]
    if zlib.crc32(payload) != _CRC.unpack_from(data, base + payload_len)[0]:
        raise FeatureFileError("feature file checksum mismatch")
    out = {}
    try:
        for name, shape, offset, nbytes in arrays:
            count = int(np.prod(shape, dtype=np.int64))
            if count * 2 != nbytes or offset < 0 or offset + nbytes > payload_len:
                raise FeatureFileError("feature array outside its file")
            out[name] = np.frombuffer(data, dtype=np.float16, count=count,
                                      offset=base + offset).reshape(shape)
    except (ValueError, TypeError) as exc:
        raise FeatureFileError(f"bad feature array table ({exc})") from exc
    return out


class FeatureStore:
    """The bounded on-disk store of image features (see the module docstring)."""

    def __init__(self, root: str | Path, cap_bytes: int) -> None:
        if cap_bytes < 0:
            raise ValueError("the feature store cap cannot be negative")
        self.root = Path(root)
        self.cap_bytes = int(cap_bytes)
        # the store's size at the last scan plus what this instance wrote since; rescanned at
        # least every RESCAN_S, so the writes of other processes count against the cap too
        self._known_bytes: int | None = None
        self._scanned_at = 0.0

    def path_for(self, sha256: str, spec_key: str) -> Path:
        """Where the entry of (content, spec) lives (whether or not it is there)."""
        return self.root / spec_folder(spec_key) / sha256[:2] / f"{check_sha(sha256)}{SUFFIX}"

    # --- one entry ------------------------------------------------------------------------------

    def has(self, sha256: str, spec_key: str) -> bool:
        """Whether an entry file is there (its validity is checked when it is read)."""
        return self.path_for(sha256, spec_key).is_file()

    def get(self, sha256: str, spec_key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays (float16, writable), or None when missing or invalid (an invalid
        file is deleted). Marks the entry as used now (least-recently-used eviction)."""
        path = self.path_for(sha256, spec_key)
        try:
            with open(path, "rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                read = f.readinto(data)
        except FileNotFoundError:
            return None
        try:
            if read != len(data):
                raise FeatureFileError("short read")
            arrays = decode(data, sha256, spec_key)
        except FeatureFileError as exc:
            logger.warning("dropping an invalid feature file %s: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        return arrays

    def put(self, sha256: str, spec_key: str, features: Mapping[str, np.ndarray]) -> int:
        """Store (or replace) the entry atomically; returns its size in bytes. Evicts least
        recently used entries when the store has grown over its cap. OSError (a full disk, say)
        propagates and leaves nothing behind."""
        data = encode(sha256, spec_key, features)
        write_atomic(self.path_for(sha256, spec_key), data)
        now = time.monotonic()
        if self._known_bytes is None or now - self._scanned_at > RESCAN_S:
            self._known_bytes = self._scan_bytes()  # other processes' writes count too
            self._scanned_at = now
        else:
            self._known_bytes += len(data)
        if self._known_bytes > self.cap_bytes:
            self.evict()
        return len(data)

    def missing(self, hashes: Iterable[str], spec_key: str) -> list[str]:
        """Those of ``hashes`` (in order, once each) with no entry for ``spec_key``."""
        return [h for h in dict.fromkeys(hashes) if not self.has(h, spec_key)]

    def remove_content(self, sha256: str) -> int:
        """Delete every entry of an image content (all specs); returns the bytes freed."""
        if not _SHA.fullmatch(sha256):
            return 0  # nothing is ever stored under another name
        freed = 0
        for spec_dir in self._spec_dirs():
            path = spec_dir / sha256[:2] / f"{sha256}{SUFFIX}"
            try:
                size = path.stat().st_size
                path.unlink()
                freed += size
            except FileNotFoundError:
                continue
        return freed

    # --- the whole store ------------------------------------------------------------------------

    def _spec_dirs(self) -> list[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir() and _SPEC_DIR.fullmatch(p.name)]
        except FileNotFoundError:
            return []

    def _entries(self, spec_key: str | None = None) -> Iterator[tuple[Path, int, int]]:
        """(path, size, mtime_ns) of every entry file (of one spec when given)."""
        dirs = [self.root / spec_folder(spec_key)] if spec_key else self._spec_dirs()
        for spec_dir in dirs:
            for path in spec_dir.glob(f"*/*{SUFFIX}"):
                if path.name.startswith(TMP_PREFIX):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield path, st.st_size, st.st_mtime_ns

    def _scan_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def contents(self) -> set[str]:
        """The image content hashes that have at least one entry."""
        return {path.stem for path, *_ in self._entries()}

    def usage(self, spec_key: str | None = None, hashes: Iterable[str] | None = None) -> Usage:
        """Entries and bytes held: all, of one spec, and/or of some images only."""
        wanted = set(hashes) if hashes is not None else None
        entries = size = 0
        images: set[str] = set()
        for path, nbytes, _ in self._entries(spec_key):
            if wanted is not None and path.stem not in wanted:
                continue
            entries += 1
            size += nbytes
            images.add(path.stem)
        return Usage(entries=entries, bytes=size, images=len(images), cap_bytes=self.cap_bytes)

    def evict(self, cap_bytes: int | None = None) -> int:
        """Delete least recently used entries until the store holds at most ``cap_bytes``
        (default: its cap), and temporary files left by killed writers; returns the bytes freed.
        Returns 0 at once when another process is evicting."""
        cap = self.cap_bytes if cap_bytes is None else cap_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK_FILE, "a") as lock:
            if fcntl is not None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0
            self._remove_stale_temporaries()
            entries = sorted(self._entries(), key=lambda e: e[2])
            total = sum(e[1] for e in entries)
            freed = 0
            for path, size, _ in entries:
                if total - freed <= cap:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    freed += size
            self._known_bytes = total - freed
            self._scanned_at = time.monotonic()
        if freed:
            logger.info("feature store: evicted %s of least recently used features (cap %s)",
                        megabytes(freed), megabytes(cap))
        return freed

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - STALE_TMP_S
        for spec_dir in self._spec_dirs():
            for path in spec_dir.glob(f"*/{TMP_PREFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
