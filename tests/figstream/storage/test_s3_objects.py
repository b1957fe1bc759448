"""S3ObjectStore beyond the shared object-store suite: multipart uploads and their aborts,
listings across pages, readers of a replaced object without versioning, the bucket setup.

All over moto server (real HTTP), each test on its own bucket.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from figstream.cli.aws import ensure_bucket
from figstream.storage.objects import read_parquet
from figstream.storage.s3_objects import ObjectChangedError, S3ObjectStore

MiB = 1 << 20


@pytest.fixture
def s3(aws_config) -> S3ObjectStore:
    ensure_bucket(aws_config)
    return S3ObjectStore(aws_config, part_size=5 * MiB)


def _uploads(store: S3ObjectStore) -> list:
    return store._s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])


def test_a_big_object_streams_as_a_multipart_upload(s3):
    calls: list[str] = []

    def record(model, **_):
        calls.append(model.name)

    s3._s3.meta.events.register("before-call.s3.*", record)
    try:
        chunks = [bytes([i]) * (MiB + 7) for i in range(12)]  # 12 MiB and change, odd sizes
        with s3.writer("big/obj") as sink:
            for chunk in chunks:
                sink.write(chunk)
            assert not s3.exists("big/obj")  # nothing visible before the block ends
    finally:
        s3._s3.meta.events.unregister("before-call.s3.*", record)
    assert s3.get("big/obj") == b"".join(chunks)
    assert s3.size("big/obj") == sum(map(len, chunks))
    assert calls.count("UploadPart") == 3  # 5 + 5 + the rest
    assert calls.count("CreateMultipartUpload") == calls.count("CompleteMultipartUpload") == 1
    assert "PutObject" not in calls
    assert _uploads(s3) == []


@pytest.mark.parametrize("written", [100, 6 * MiB])
def test_an_exception_in_the_writer_aborts_and_leaves_the_old_object(s3, written):
    s3.put("k/obj", b"old")
    with pytest.raises(RuntimeError, match="mid-write"), s3.writer("k/obj") as sink:
        sink.write(b"x" * written)  # 6 MiB: one part is already uploaded
        raise RuntimeError("mid-write")
    assert s3.get("k/obj") == b"old"
    assert _uploads(s3) == [], "the multipart upload was aborted"
    with pytest.raises(RuntimeError), s3.writer("k/new") as sink:
        sink.write(b"y" * written)
        raise RuntimeError("mid-write")
    assert not s3.exists("k/new")
    assert s3.list("k/") == ["k/obj"]


def test_a_small_part_size_is_refused(aws_config):
    with pytest.raises(ValueError, match="at least 5 MiB"):
        S3ObjectStore(aws_config, part_size=MiB)


def test_listing_pages_past_a_thousand_keys(s3):
    keys = [f"landing/2026-11-{d:02d}/{n:05d}.jsonl" for d in (1, 2) for n in range(530)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put(k, b"x"), keys))
    assert s3.list("landing/") == keys
    assert s3.list("landing/", start_after=keys[10], limit=1005) == keys[11:1016]
    assert s3.list("landing/2026-11-02/") == keys[530:]
    assert s3.list("landing/", start_after=keys[-1]) == []


def test_a_key_may_also_be_a_prefix_on_s3(s3):
    """S3 allows what a directory tree cannot; the store does not add the local refusal."""
    s3.put("a/b", b"object")
    s3.put("a/b/c", b"deeper")
    assert s3.list("a/") == ["a/b", "a/b/c"]
    assert s3.get("a/b") == b"object"


def test_a_reader_without_versioning_fails_rather_than_mix_two_objects(aws_config):
    store = S3ObjectStore(aws_config)
    store._s3.create_bucket(Bucket=store.bucket)  # no versioning
    import pyarrow.parquet as pq

    from figstream.storage.objects import write_parquet

    table = pa.table({"n": list(range(10_000))})
    write_parquet(store, "t/r.parquet", table, row_group_size=1000)
    with store.open("t/r.parquet") as source:
        parquet = pq.ParquetFile(source)
        assert parquet.read_row_group(0)["n"].to_pylist() == list(range(1000))
        write_parquet(store, "t/r.parquet", table.slice(0, 5))
        with pytest.raises(ObjectChangedError, match="replaced or deleted while open"):
            parquet.read_row_group(9)
    assert read_parquet(store, "t/r.parquet").num_rows == 5


def test_ensure_bucket_is_idempotent_and_dry_run_changes_nothing(aws_config):
    store = S3ObjectStore(aws_config)
    planned = ensure_bucket(aws_config, dry_run=True)
    assert [line.split(" ")[0] for line in planned] == ["create", "enable", "put"]
    assert store._s3.list_buckets()["Buckets"] == [] or all(
        b["Name"] != store.bucket for b in store._s3.list_buckets()["Buckets"]
    )
    assert ensure_bucket(aws_config) == planned
    assert ensure_bucket(aws_config) == []
    assert store._s3.get_bucket_versioning(Bucket=store.bucket)["Status"] == "Enabled"
    rules = store._s3.get_bucket_lifecycle_configuration(Bucket=store.bucket)["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


_segment = st.text(alphabet="ab-0/.é", min_size=1, max_size=3).filter(
    lambda s: "/" not in s and not s.startswith(".")
)
_keys = st.lists(st.lists(_segment, min_size=1, max_size=3).map("/".join), max_size=10)
_example = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(keys=_keys, prefix=st.text(alphabet="ab-0/é", max_size=4),
       start_after=st.text(alphabet="ab-0/.é", max_size=6),
       limit=st.none() | st.integers(0, 5))  # fmt: skip
def test_list_agrees_with_sorting_all_keys_on_s3(s3, keys, prefix, start_after, limit):
    if "//" in prefix or prefix.startswith("/"):
        return
    root = f"ex{next(_example):04d}/"  # one bucket, a fresh key space per example
    for key in set(keys):
        s3.put(root + key, b"")
    expected = sorted(
        root + k for k in set(keys) if k.startswith(prefix) and root + k > root + start_after
    )
    assert s3.list(root + prefix, root + start_after, limit) == expected[:limit]
