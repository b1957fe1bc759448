"""Object stores: atomic, durable puts; S3-like sorted listing; deletes; Parquet helpers.

The ``store`` fixture runs each test on both backends: ``local`` (LocalObjectStore on a
directory) and ``s3`` (S3ObjectStore on moto server over HTTP, versioned bucket as ``figstream
aws setup`` makes it). Tests of what only a directory tree has run on ``local`` alone: a key
that is also a prefix (S3 allows both), the temporary-file-and-rename protocol and its fsyncs,
stale temporary files after a crash, and the listing's directory skipping (S3 has no
directories to walk; ``StartAfter`` is its own skip).
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.storage.objects import LocalObjectStore, ObjectStore, read_parquet, write_parquet


def s3_store(aws_config):
    from figstream.cli.aws import ensure_bucket
    from figstream.storage.s3_objects import S3ObjectStore

    ensure_bucket(aws_config)
    return S3ObjectStore(aws_config)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return s3_store(request.getfixturevalue("aws_config"))
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """For what only a directory tree has (see the module docstring)."""
    return LocalObjectStore(tmp_path / "store")


def _is_local(store: ObjectStore) -> bool:
    return isinstance(store, LocalObjectStore)


def test_put_get_exists_overwrite(store):
    assert not store.exists("a/b.txt")
    store.put("a/b.txt", b"one")
    assert store.get("a/b.txt") == b"one"
    assert store.exists("a/b.txt")
    store.put("a/b.txt", bytearray(b"two"))
    assert store.get("a/b.txt") == b"two"
    if _is_local(store):
        assert (store.root / "a" / "b.txt").read_bytes() == b"two"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("/a", "empty path segment"),
        ("a/", "empty path segment"),
        ("a//b", "empty path segment"),
        ("a/../b", "starts with '.'"),
        (".", "starts with '.'"),
        ("a/.hidden", "starts with '.'"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("x" * 201, "segment longer"),
        ("a/" * 600 + "b", "longer than 1024"),
        ("a/\udcff", "not valid Unicode"),
    ],
)
def test_invalid_keys_are_refused(store, key, message):
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.delete(key)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=message):
        store.exists(key)
    assert store.list() == []


def test_get_missing_or_prefix_is_file_not_found(store):
    with pytest.raises(FileNotFoundError, match="no object 'nope'"):
        store.get("nope")
    store.put("dir/obj", b"x")
    with pytest.raises(FileNotFoundError, match="no object 'dir'"):
        store.get("dir")
    with pytest.raises(FileNotFoundError):
        store.get("dir/obj/deeper")
    assert not store.exists("dir")


def test_a_key_cannot_also_be_a_prefix(local_store):
    store = local_store
    store.put("a/b", b"object")
    with pytest.raises(FileExistsError, match="is an object, not a prefix"):
        store.put("a/b/c", b"x")
    store.put("p/q/r", b"x")
    with pytest.raises(FileExistsError, match="prefix of other keys"):
        store.put("p/q", b"x")
    assert store.list() == ["a/b", "p/q/r"]
    assert not [p for p in store.root.rglob(".*")], "no temporary file left behind"


def test_failed_rename_leaves_old_object_and_no_temp_file(local_store, monkeypatch):
    store = local_store
    store.put("k/obj", b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        store.put("k/obj", b"new")
    with pytest.raises(OSError):
        store.put("k/other", b"new")
    monkeypatch.undo()
    assert store.get("k/obj") == b"old"
    assert store.list("k/") == ["k/obj"]
    assert sorted(p.name for p in (store.root / "k").iterdir()) == ["obj"]


def test_stale_temp_files_from_a_crash_are_never_listed(local_store):
    store = local_store
    store.put("landing/2026-11-01/b1.jsonl", b"1\n")
    crashed = store.root / "landing" / "2026-11-01" / ".b2.jsonl.0123abcd.tmp"
    crashed.write_bytes(b"half a ba")
    assert store.list("landing/") == ["landing/2026-11-01/b1.jsonl"]
    assert not store.exists("landing/2026-11-01/b2.jsonl")
    with pytest.raises(ValueError, match="invalid last segment"):
        store.list("landing/2026-11-01/.b")


def test_readers_never_see_a_partial_object(store):
    """Concurrent writers replace a 2 MB object while a reader checks every read is whole."""
    size, rounds = 2 << 20, 40 if _is_local(store) else 6
    store.put("hot/obj", b"\x00" * size)
    errors: list[str] = []
    done = threading.Event()

    def writer(fill: int) -> None:
        for _ in range(rounds):
            store.put("hot/obj", bytes([fill]) * size)

    def reader() -> None:
        while not done.is_set():
            data = store.get("hot/obj")
            if len(data) != size or data.count(data[:1]) != size:
                errors.append(f"partial or mixed read of {len(data)} bytes")
            if store.list("hot/") != ["hot/obj"]:
                errors.append(f"listing showed {store.list('hot/')}")

    threads = [threading.Thread(target=writer, args=(f,)) for f in (1, 2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert errors == []
    assert store.get("hot/obj") in (b"\x01" * size, b"\x02" * size)


def test_put_fsyncs_file_then_renames_then_fsyncs_directories(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path / "root")
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        path = os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else "?"
        log.append((f"fsync-{kind}", path))
        return real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.put("landing/2026-11-01/b.jsonl", b"x\n")
    kinds = [kind for kind, _ in log]
    # New directories: each one's parent is fsynced after mkdir (root's parent, root, landing).
    assert kinds == ["fsync-dir"] * 3 + ["fsync-file", "replace", "fsync-dir"]
    if Path("/proc/self/fd").is_dir():
        root = str(store.root)
        assert [p for _, p in log[:3]] == [str(tmp_path), root, root + "/landing"]
        assert log[3][1].startswith(root + "/landing/2026-11-01/.b.jsonl.")
        assert log[5][1] == root + "/landing/2026-11-01"
    log.clear()
    store.put("landing/2026-11-01/c.jsonl", b"y\n")
    assert [kind for kind, _ in log] == ["fsync-file", "replace", "fsync-dir"]


def _days_store(store: ObjectStore) -> list[str]:
    keys = [
        f"landing/2026-11-{day:02d}/{stamp}.jsonl"
        for day in (1, 2, 3)
        for stamp in (f"202611{day:02d}T0{h}0000000000Z-000000" for h in range(3))
    ]
    for key in reversed(keys):
        store.put(key, key.encode())
    store.put("other/x", b"x")
    return keys


def test_list_prefix_start_after_and_limit_across_date_dirs(store):
    keys = _days_store(store)
    assert store.list("landing/") == keys
    assert store.list() == [*keys, "other/x"]
    assert store.list("landing/2026-11-0") == keys
    assert store.list("landing/2026-11-02") == keys[3:6]
    assert store.list("landing/2026-11-02/") == keys[3:6]
    assert store.list("land") == keys
    assert store.list("landing/2026-11-04/") == []
    assert store.list("nothing/here/") == []
    assert store.list("landing/", start_after=keys[4]) == keys[5:]
    assert store.list("landing/", start_after=keys[4], limit=2) == keys[5:7]
    assert store.list("landing/", start_after="landing/2026-11-02/") == keys[3:]
    assert store.list("landing/", start_after="landing/2026-11-02") == keys[3:]
    assert store.list("landing/", start_after="landing/2026-11-02/~") == keys[6:]
    assert store.list("landing/", start_after="a") == keys
    assert store.list("landing/", start_after="z") == []
    assert store.list("landing/", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.list("landing/", limit=-1)


def test_list_does_not_walk_directories_before_start_after(local_store, monkeypatch):
    store = local_store
    keys = _days_store(store)
    scanned: list[str] = []
    real_scandir = os.scandir

    def scandir(path):
        scanned.append(os.path.basename(os.fspath(path)))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert store.list("landing/", start_after=keys[4]) == keys[5:]
    assert scanned == ["landing", "2026-11-02", "2026-11-03"]


def test_list_sorts_like_s3_not_like_a_directory_walk(store):
    keys = ["a/b-c", "a/b/x", "a/b.d", "a/b0", "a/bb/y", "a/b!/z", "a/é", "a/z"]
    for key in keys:
        store.put(key, b"")
    assert store.list() == sorted(keys)
    assert store.list("a/b") == sorted(k for k in keys if k.startswith("a/b"))


_segment = st.text(alphabet="ab-0/.é", min_size=1, max_size=3).filter(
    lambda s: "/" not in s and not s.startswith(".")
)
_keys = st.lists(st.lists(_segment, min_size=1, max_size=3).map("/".join), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=_keys, prefix=st.text(alphabet="ab-0/é", max_size=4),
       start_after=st.text(alphabet="ab-0/.é", max_size=6),
       limit=st.none() | st.integers(0, 5))  # fmt: skip
def test_list_agrees_with_sorting_all_keys(keys, prefix, start_after, limit):
    # A key that is a "directory" of another cannot exist locally; keep only a valid set.
    usable: list[str] = []
    for key in keys:
        if not any(k == key or k.startswith(key + "/") or key.startswith(k + "/") for k in usable):
            usable.append(key)
    if "//" in prefix or prefix.startswith("/"):
        return
    with tempfile.TemporaryDirectory() as root:
        store = LocalObjectStore(root)
        for key in usable:
            store.put(key, b"")
        expected = sorted(k for k in usable if k.startswith(prefix) and k > start_after)
        assert store.list(prefix, start_after, limit) == expected[:limit]


def test_delete(store):
    keys = _days_store(store)
    store.delete(keys[0])
    store.delete(keys[0])  # deleting a missing key is fine, as in S3
    store.delete("never/was")
    assert keys[0] not in store.list("landing/")
    for key in store.list("landing/2026-11-01/"):
        store.delete(key)
    assert store.list("landing/2026-11-01/") == []
    if _is_local(store):
        assert not (store.root / "landing" / "2026-11-01").exists(), "empty dirs are pruned"
    for key in store.list("landing/"):
        store.delete(key)
    assert store.list() == ["other/x"]
    if _is_local(store):
        assert store.root.is_dir()


def test_parquet_round_trip_through_bytes(store):
    table = pa.table({"id": ["a", "b"], "n": [1, 2], "t": pa.array([None, 1.5])})
    size = write_parquet(store, "tables/x.parquet", table)
    assert size == len(store.get("tables/x.parquet")) > 0
    assert read_parquet(store, "tables/x.parquet").equals(table)
    assert read_parquet(store, "tables/x.parquet", columns=["n"]).column_names == ["n"]


def test_open_reads_ranges_of_the_object_it_opened(store):
    import pyarrow.parquet as pq

    table = pa.table({"n": list(range(10_000))})
    write_parquet(store, "tables/r.parquet", table, row_group_size=1000)
    with store.open("tables/r.parquet") as source:
        parquet = pq.ParquetFile(source)
        first = parquet.read_row_group(0)
        write_parquet(store, "tables/r.parquet", table.slice(0, 5))  # replaced while open
        last = parquet.read_row_group(9)  # still the object that was opened
    assert first["n"].to_pylist() == list(range(1000))
    assert last["n"].to_pylist() == list(range(9000, 10_000))
    assert read_parquet(store, "tables/r.parquet").num_rows == 5
    for missing in ("nope", "tables", "tables/r.parquet/deeper"):
        with pytest.raises(FileNotFoundError):
            store.open(missing)
        with pytest.raises(FileNotFoundError):
            store.size(missing)
    assert store.size("tables/r.parquet") == len(store.get("tables/r.parquet")) > 0


class _DictStore(ObjectStore):
    """The smallest store: what a store gets from the base class without overriding it."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key, data):
        self.objects[key] = bytes(data)

    def get(self, key):
        if key not in self.objects:
            raise FileNotFoundError(key)
        return self.objects[key]

    def exists(self, key):
        return key in self.objects

    def list(self, prefix="", start_after="", limit=None):
        keys = sorted(k for k in self.objects if k.startswith(prefix) and k > start_after)
        return keys if limit is None else keys[:limit]

    def delete(self, key):
        self.objects.pop(key, None)


@pytest.mark.parametrize("kind", ["local", "base", "s3"])
def test_writer_stores_the_object_when_the_block_ends_and_nothing_if_it_raises(
    request, tmp_path, kind
):
    import pyarrow.parquet as pq

    if kind == "s3":
        store = s3_store(request.getfixturevalue("aws_config"))
    else:
        store = LocalObjectStore(tmp_path) if kind == "local" else _DictStore()
    table = pa.table({"n": list(range(100))})
    with store.writer("t/a.parquet") as sink, pq.ParquetWriter(sink, table.schema) as writer:
        for start in range(0, 100, 30):  # row group by row group
            writer.write_table(table.slice(start, 30))
            assert not store.exists("t/a.parquet")  # not before the block ends
    assert read_parquet(store, "t/a.parquet").equals(table)
    assert store.size("t/a.parquet") == len(store.get("t/a.parquet"))
    with pytest.raises(RuntimeError, match="mid-write"), store.writer("t/a.parquet") as sink:
        sink.write(b"partial")
        raise RuntimeError("mid-write")
    assert read_parquet(store, "t/a.parquet").equals(table)  # the old object, whole
    assert store.list("t/") == ["t/a.parquet"]  # and no temporary file
    if kind == "local":
        assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["a.parquet"]
