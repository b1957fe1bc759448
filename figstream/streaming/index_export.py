"""The ``search_index`` step: the active jobs as one Parquet snapshot, sorted by job id.

Skipped when nothing changed since the manifests it was built from; sorted in memory while the
active rows are few, merged bucket by bucket beyond that, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from figstream.storage.buckets import Manifest, merge_sorted, split
from figstream.storage.objects import ObjectStore, read_parquet
from figstream.streaming import tables as streaming_tables
from figstream.streaming.bucket_state import ACTIVE_BUCKETS, DUPLICATES_BUCKETS, concat_or_empty
from figstream.streaming.dedupe import registry_manifest
from figstream.streaming.jobs import job_state_manifest
from figstream.streaming.stores import Stores, release_arrow_memory

SEARCH_INDEX_KEY = "tables/search_index/snapshot.parquet"
SEARCH_INDEX_SOURCE = "tables/search_index/source.json"  # the manifest tokens it was built from


@dataclass
class IndexReport:
    rows: int
    preview: list[dict]  # job_id, board, title and location of the first rows


INDEX_SCHEMA = pa.schema(
    [streaming_tables.STATE_SCHEMA.field(n) for n in streaming_tables.SEARCH_INDEX_COLUMNS]
)


def _shadowed(objects: ObjectStore, registry: Manifest, state: Manifest) -> pa.ChunkedArray:
    """The duplicates whose original is active: the job_ids the index leaves out."""
    keys = registry.keys(DUPLICATES_BUCKETS)
    columns = ["job_id", "duplicate_of_job_id"]
    tables = [read_parquet(objects, k, columns=columns) for k in keys if objects.exists(k)]
    if not tables:
        return pa.chunked_array([], pa.string())
    duplicates = pa.concat_tables(tables)
    shadowed = []
    originals = duplicates["duplicate_of_job_id"]
    for bucket, rows in split(duplicates, state.of(originals)).items():
        key = state.bucket_key(ACTIVE_BUCKETS, bucket)
        if objects.exists(key):
            active = read_parquet(objects, key, columns=["job_id"])["job_id"]
            shadowed.append(rows["job_id"].filter(pc.is_in(rows["duplicate_of_job_id"], active)))
    return pa.chunked_array(shadowed, pa.string())


def _active_batches(objects: ObjectStore, key: str) -> Iterator[pa.RecordBatch]:
    """A bucket's active rows a row group at a time, read as they are needed. The merge steps
    through all the buckets at once, so what each holds counts 64 times: ``iter_batches`` read
    ahead about a whole bucket (~5.7 MiB of Arrow a bucket at 1.5M active rows, 365 MiB for
    the 64), ``read_row_group`` reads one (~1.7 MiB)."""
    if objects.exists(key):
        with objects.open(key) as source:
            parquet = pq.ParquetFile(source)
            for group in range(parquet.num_row_groups):
                yield from parquet.read_row_group(group, use_threads=False).to_batches()


# Active rows up to which the index is sorted in memory (~200 bytes a row, held about three
# times over: read, filtered, sorted): one Arrow sort of every bucket's rows instead of a k-way
# merge stepping through 64 streams a row group at a time in Python (0.8 s of a 1.6 s export
# at 280k rows). A bigger index (a busy day's state) is merged, holding a row group a bucket.
INDEX_SORT_ROWS = 400_000


def _few_active(objects: ObjectStore, keys: list[str]) -> pa.Table | None:
    """Every bucket's active rows as one table, or None once they pass INDEX_SORT_ROWS."""
    tables, held = [], 0
    for key in keys:
        if objects.exists(key):
            tables.append(read_parquet(objects, key))
            held += tables[-1].num_rows
            if held > INDEX_SORT_ROWS:
                return None
    return concat_or_empty(tables, INDEX_SCHEMA).cast(INDEX_SCHEMA)


def export_search_index(stores: Stores) -> IndexReport:
    """Write the search index, :func:`table_ops.search_index` of the whole state and
    duplicates, as one Parquet object by job_id: the buckets' active jobs sorted at once when
    they are few (:data:`INDEX_SORT_ROWS`), else merged a row group per bucket at a time, less
    the shadowed duplicates. Nothing is written when neither the state nor the registry
    changed since the index was last built."""
    objects = stores.objects
    state, registry = job_state_manifest(objects), registry_manifest(objects)
    source = {"job_state": state.token, "registry": registry.token}
    if objects.exists(SEARCH_INDEX_SOURCE) and objects.exists(SEARCH_INDEX_KEY):
        built = orjson.loads(objects.get(SEARCH_INDEX_SOURCE))
        if built["source"] == source:
            return IndexReport(built["rows"], built["preview"])
    shadowed = _shadowed(objects, registry, state)
    keys = state.keys(ACTIVE_BUCKETS)

    def unshadowed(chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        for chunk in chunks:
            yield chunk.filter(pc.invert(pc.is_in(chunk["job_id"], shadowed))).cast(INDEX_SCHEMA)

    chunks = unshadowed(merge_sorted((_active_batches(objects, k) for k in keys), "job_id"))
    # The manifest's count first (no reads when it says the index is big), then the rows read.
    few = _few_active(objects, keys) if state.total("active") <= INDEX_SORT_ROWS else None
    if few is not None:  # filtered before the sort, so that the sort moves fewer rows
        (few,) = unshadowed([few])
        chunks = iter([few.take(pc.sort_indices(few, [("job_id", "ascending")]))])
        del few
    rows, preview = 0, []
    # Written to the object as it is made: not held whole (52 MB on a 5M-event day).
    with objects.writer(SEARCH_INDEX_KEY) as sink, pq.ParquetWriter(sink, INDEX_SCHEMA) as writer:
        for chunk in chunks:
            if len(preview) < 5:
                head = chunk.slice(0, 5 - len(preview))
                preview += head.select(["job_id", "board", "title", "location"]).to_pylist()
            rows += chunk.num_rows
            writer.write_table(chunk)
    report = {"source": source, "rows": rows, "preview": preview}
    objects.put(SEARCH_INDEX_SOURCE, orjson.dumps(report))
    release_arrow_memory()
    return IndexReport(rows, preview)
