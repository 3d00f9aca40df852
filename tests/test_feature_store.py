"""The on-disk feature store: round trip, invalid files, LRU eviction, several processes at once."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from storage.feature_store import FeatureStore, Usage, check_spec_key, decode, encode

SPEC = "fake-v1/s160/s1+s1f"  # the shape of slrnet.features.FeatureSpec.key


def sha(i: int | str) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def feats(seed: int, size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"s1/l1": rng.standard_normal((4, size, size)).astype(np.float32),
            "s1/l2": rng.standard_normal((6, size // 2, size // 2)).astype(np.float16)}


def test_round_trip_in_half_precision(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    original = feats(0)
    size = store.put(sha(0), SPEC, original)
    assert store.has(sha(0), SPEC) and not store.has(sha(0), "other-spec") and not store.has(sha(1), SPEC)
    got = store.get(sha(0), SPEC)
    assert got is not None and set(got) == {"s1/l1", "s1/l2"}
    for name, value in original.items():
        assert got[name].dtype == np.float16 and got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value.astype(np.float16))
    got["s1/l1"][0, 0, 0] = 1  # writable arrays (torch.from_numpy wants them)
    assert size == store.path_for(sha(0), SPEC).stat().st_size
    assert size < 2 * sum(v.size for v in original.values()) + 400  # half precision, small header
    assert store.missing([sha(1), sha(0), sha(1)], SPEC) == [sha(1)]


@pytest.mark.parametrize("cut", [1, 10, 100, -1, -4, -200])
def test_truncated_file_reads_as_missing_and_is_deleted(tmp_path: Path, cut: int) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    store.put(sha(0), SPEC, feats(0))
    path = store.path_for(sha(0), SPEC)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    assert store.get(sha(0), SPEC) is None
    assert not path.exists()


def test_corrupt_foreign_and_misplaced_files_never_read_as_valid(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    store.put(sha(0), SPEC, feats(0))
    path = store.path_for(sha(0), SPEC)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # a flipped payload bit: the checksum fails
    path.write_bytes(bytes(data))
    assert store.get(sha(0), SPEC) is None
    # another image's entry copied under this name
    store.put(sha(1), SPEC, feats(1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(store.path_for(sha(1), SPEC).read_bytes())
    assert store.get(sha(0), SPEC) is None
    # a file of something else, and an empty one
    for junk in (b"\x93NUMPY" + b"\0" * 200, b""):
        path.write_bytes(junk)
        assert store.get(sha(0), SPEC) is None
    with pytest.raises(ValueError):
        decode(encode(sha(0), SPEC, feats(0)), sha(0), "another-spec")


def test_keys_must_be_safe_names(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    for bad in ("../x", "a/../b", "a//b", "/a", "a/", "", ".hidden", "a b", "a,b", "x" * 201):
        with pytest.raises(ValueError):
            check_spec_key(bad)
    with pytest.raises(ValueError):
        store.put("not-a-hash", SPEC, feats(0))
    check_spec_key("efficientnet_lite0-57934424/s320/s1+s1f+s0.5+s0.5f")
    assert store.path_for(sha(0), "a/b").parent.parent.name == "a,b"


def _set_mtime(store: FeatureStore, h: str, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(store.path_for(h, SPEC), (t, t))


def test_eviction_removes_least_recently_used_first_and_reads_count_as_use(tmp_path: Path) -> None:
    one = len(encode(sha(0), SPEC, feats(0)))
    store = FeatureStore(tmp_path, cap_bytes=3 * one)
    for i in range(3):
        store.put(sha(i), SPEC, feats(i))
        _set_mtime(store, sha(i), 100 - i)  # 0 oldest, 2 newest
    assert store.get(sha(0), SPEC) is not None  # 0 is now the most recently used
    store.put(sha(3), SPEC, feats(3))  # over the cap: the least recently used (1) goes
    assert store.missing([sha(i) for i in range(4)], SPEC) == [sha(1)]
    usage = store.usage()
    assert usage == Usage(entries=3, bytes=3 * one, images=3, cap_bytes=3 * one)
    assert usage.per_image_bytes == one
    assert "3 images" in usage.summary()
    _set_mtime(store, sha(3), 50)
    assert store.get(sha(2), SPEC) is not None
    assert store.evict(cap_bytes=one) == 2 * one
    assert store.missing([sha(i) for i in range(4)], SPEC) == [sha(0), sha(1), sha(3)]  # 2 was read last


def test_usage_per_spec_and_images_and_remove_content(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    a = store.put(sha(0), SPEC, feats(0))
    b = store.put(sha(0), "other-spec", feats(0, size=16))
    c = store.put(sha(1), SPEC, feats(1))
    assert store.usage().bytes == a + b + c and store.usage().images == 2
    assert store.usage(SPEC) == Usage(entries=2, bytes=a + c, images=2, cap_bytes=10**9)
    assert store.usage(hashes=[sha(0)]) == Usage(entries=2, bytes=a + b, images=1, cap_bytes=10**9)
    assert store.contents() == {sha(0), sha(1)}
    assert store.remove_content(sha(0)) == a + b
    assert store.remove_content(sha(0)) == 0
    assert store.contents() == {sha(1)}
    assert store.usage(SPEC).bytes == c


def test_empty_store(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "not-yet", cap_bytes=0)
    assert store.usage() == Usage(0, 0, 0, 0) and store.usage().per_image_bytes == 0
    assert store.get(sha(0), SPEC) is None and store.missing([sha(0)], SPEC) == [sha(0)]
    assert store.remove_content(sha(0)) == 0 and store.evict() == 0


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    store.put(sha(0), SPEC, feats(0))

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        store.put(sha(0), SPEC, feats(1))
    monkeypatch.undo()
    folder = store.path_for(sha(0), SPEC).parent
    assert [p.name for p in folder.iterdir()] == [f"{sha(0)}.feat"]  # no temporary file left
    np.testing.assert_array_equal(store.get(sha(0), SPEC)["s1/l1"], feats(0)["s1/l1"].astype(np.float16))


# --- several processes / threads ----------------------------------------------------------------

def _writer(root: str, seed: int, rounds: int) -> None:
    store = FeatureStore(root, cap_bytes=10**9)
    for _ in range(rounds):
        store.put(sha("shared"), SPEC, feats(seed, size=64))


def test_two_processes_writing_one_key_leave_a_whole_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), seed, 30)) for seed in (1, 2)]
    reader = FeatureStore(tmp_path, cap_bytes=10**9)
    expected = [feats(s, size=64)["s1/l1"].astype(np.float16) for s in (1, 2)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        got = reader.get(sha("shared"), SPEC)  # never a torn entry: one writer's whole arrays
        if got is not None:
            assert any(np.array_equal(got["s1/l1"], e) for e in expected)
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reader.get(sha("shared"), SPEC) is not None
    folder = reader.path_for(sha("shared"), SPEC).parent
    assert [p.name for p in folder.iterdir()] == [f"{sha('shared')}.feat"]


def test_reading_while_another_evicts(tmp_path: Path) -> None:
    writer = FeatureStore(tmp_path, cap_bytes=10**9)
    for i in range(40):
        writer.put(sha(i), SPEC, feats(i, size=32))
    expected = {sha(i): feats(i, size=32)["s1/l2"].astype(np.float16) for i in range(40)}
    reader = FeatureStore(tmp_path, cap_bytes=10**9)
    errors: list[BaseException] = []
    done = threading.Event()

    def read_all() -> None:
        try:
            while not done.is_set():
                for h, want in expected.items():
                    got = reader.get(h, SPEC)
                    assert got is None or np.array_equal(got["s1/l2"], want)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read_all) for _ in range(2)]
    for t in threads:
        t.start()
    evictor = FeatureStore(tmp_path, cap_bytes=0)
    for i in range(40):  # evict, refill, evict: readers see whole entries or none
        evictor.evict()
        writer.put(sha(i), SPEC, feats(i, size=32))
    evictor.evict()
    done.set()
    for t in threads:
        t.join()
    assert not errors
    assert evictor.usage().entries == 0


def _evict_and_refill(root: str, rounds: int) -> None:
    writer, evictor = FeatureStore(root, cap_bytes=10**9), FeatureStore(root, cap_bytes=0)
    for _ in range(rounds):
        evictor.evict()
        for i in range(10):
            writer.put(sha(i), SPEC, feats(i, size=32))


def test_reading_while_another_process_evicts_and_refills(tmp_path: Path) -> None:
    expected = {sha(i): feats(i, size=32)["s1/l1"].astype(np.float16) for i in range(10)}
    proc = multiprocessing.get_context("spawn").Process(target=_evict_and_refill, args=(str(tmp_path), 20))
    reader = FeatureStore(tmp_path, cap_bytes=10**9)
    proc.start()
    while proc.is_alive():
        for h, want in expected.items():
            got = reader.get(h, SPEC)  # a whole entry, or none: never a torn or stale-length one
            assert got is None or np.array_equal(got["s1/l1"], want)
    proc.join()
    assert proc.exitcode == 0
    assert reader.usage().entries == 10  # the last refill is whole


def test_stale_temporaries_are_cleaned_by_eviction(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, cap_bytes=10**9)
    store.put(sha(0), SPEC, feats(0))
    folder = store.path_for(sha(0), SPEC).parent
    stale, fresh = folder / ".tmp-old", folder / ".tmp-new"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    store.evict()
    assert not stale.exists() and fresh.exists() and store.has(sha(0), SPEC)
    assert store.usage().entries == 1  # temporaries are not entries


def test_the_cap_counts_what_other_processes_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import storage.feature_store as module

    one = len(encode(sha(0), SPEC, feats(0)))
    a = FeatureStore(tmp_path, cap_bytes=4 * one)
    b = FeatureStore(tmp_path, cap_bytes=4 * one)
    a.put(sha(0), SPEC, feats(0))
    a.put(sha(1), SPEC, feats(1))
    for i in (2, 3, 4):  # b's first write scans the store: 5 entries, one over the cap
        b.put(sha(i), SPEC, feats(i))
    assert a.usage().entries == 4
    b.put(sha(5), SPEC, feats(5))  # b counts its own writes: one over again
    assert a.usage().entries == 4
    monkeypatch.setattr(module, "RESCAN_S", 0.0)
    b.put(sha(6), SPEC, feats(6))
    a.put(sha(7), SPEC, feats(7))  # a has not scanned since its first write: it rescans now
    assert a.usage().entries == 4 and a.usage().bytes <= a.cap_bytes
