"""What only the DynamoDB state store has, over moto server (real HTTP): its tables (created
twice, on-demand, TTL on the claims), the TTL attribute a claim carries, conditional writes
under concurrent writers in two processes, unprocessed batch items resent (and a call that
gives up), claims through transactions, job_id order across the shards, keys DynamoDB refuses
empty, exact values and the request counter. The semantics both stores share are tested in
``test_state.py``."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from figstream.storage import dynamo_state
from figstream.storage.dynamo_state import (
    JOB_SHARDS,
    DynamoError,
    DynamoStateStore,
    ensure_tables,
    table_definitions,
)
from tests.aws_server import aws_environ, emulator_config
from tests.figstream.storage.test_state import (  # noqa: F401 (a fixture)
    INCREMENTS,
    V2,
    job_row,
    serial_moto_endpoint,
    table,
)

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(aws_config) -> DynamoStateStore:
    ensure_tables(aws_config)
    return DynamoStateStore(aws_config)


def raw(store: DynamoStateStore, kind: str, key: dict) -> dict:
    return store.db.client.get_item(TableName=store.tables[kind], Key=key, ConsistentRead=True)[
        "Item"
    ]


def test_tables_are_created_once_on_demand_with_ttl_on_the_claims(aws_config):
    names = ensure_tables(aws_config)
    assert ensure_tables(aws_config) == names  # a second time is fine
    client = aws_config.client("dynamodb")
    prefix = f"{aws_config.prefix}-"
    assert sorted(names) == sorted(
        prefix + k
        for k in (
            "jobs",
            "claims",
            "registry",
            "mergers",
            "landing",
            "days",
            "merger_days",
            "deadletters",
            "redirects",
            "trace",
            "books",
        )
    )
    for request in table_definitions(aws_config):
        held = client.describe_table(TableName=request["TableName"])["Table"]
        assert held["TableStatus"] == "ACTIVE"
        assert held["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        want = {i["IndexName"] for i in request.get("GlobalSecondaryIndexes", [])}
        assert {i["IndexName"] for i in held.get("GlobalSecondaryIndexes", [])} == want
    ttl = client.describe_time_to_live(TableName=f"{prefix}claims")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_a_claim_carries_its_expiry_in_epoch_seconds_for_the_ttl_reaper(aws_config):
    ensure_tables(aws_config)
    store = DynamoStateStore(aws_config, claim_ttl_s=60)
    now = 1_700_000_000_000_001  # µs: the expiry rounds up to the next second
    store.claim_batches([("b1", ["2025-03-01-12:00/e1"])], now=now)
    item = raw(store, "claims", {"pk": {"S": "#2025-03-01-12:00/e1"}})
    assert item["expires_at"] == {"N": str(1_700_000_060 + 1)}
    assert item["expires_us"] == {"N": str(now + 60_000_000)}
    assert item["batch_id"] == {"S": "b1"}
    # Expired by the exact microsecond (as SQLite decides), whatever the reaper did.
    assert store.claim_batches([("b2", ["2025-03-01-12:00/e1"])], now=now + 59_999_999) == [
        {"2025-03-01-12:00/e1": "b1"}
    ]
    assert store.claim_batches([("b2", ["2025-03-01-12:00/e1"])], now=now + 60_000_000) == [
        {"2025-03-01-12:00/e1": "b2"}
    ]


def test_claims_through_transactions_decide_as_single_puts(aws_config):
    ensure_tables(aws_config)
    puts = DynamoStateStore(aws_config)
    other = aws_config.with_prefix(f"{aws_config.prefix}-t")
    ensure_tables(other)
    # One transaction at a time: moto answers concurrent TransactWriteItems with 500s.
    transact = DynamoStateStore(other, claim_mode="transact", threads=1)
    ids = [f"e{n:04d}" for n in range(250)]  # three transactions, some ids held already
    calls = [[("b0", ids[::7])], [("b1", ids[::2]), ("b2", ids)], [("b3", ids[::3])]]
    # With digests: a failed condition hands the stored claim's digest back (ALL_OLD).
    calls = [[(b, i, [f"{b}-{e}" for e in i]) for b, i in call] for call in calls]
    got = [transact.claim_versions(c, now=1) for c in calls]
    assert got == [puts.claim_versions(c, now=1) for c in calls]
    assert got[2][0]["e0000"] == ("b0", "b0-e0000")
    assert transact.request_counts().get("put_item", 0) == 0
    assert transact.request_counts()["transact_write_items"] >= 3
    with pytest.raises(ValueError, match="claim_mode"):
        DynamoStateStore(aws_config, claim_mode="batch")


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from figstream.storage.aws import AwsConfig
    from figstream.storage.dynamo_state import DynamoStateStore
    from tests.figstream.storage.test_state import increment

    worker, go = int(sys.argv[1]), Path(sys.argv[2])
    store = DynamoStateStore(AwsConfig.from_env())
    while not go.exists():
        time.sleep(0.005)
    print(increment(store, worker))
    """
)


def test_two_processes_writing_the_same_jobs_conditionally_lose_no_write(
    serial_moto_endpoint,  # noqa: F811
    tmp_path,
):
    """Two writers read-modify-write the same three jobs at once; every refused write is
    re-read and redone, so the sum holds every increment. (On a serial emulator, which
    applies each conditional write atomically as DynamoDB does: see the fixture.)"""
    config = emulator_config(serial_moto_endpoint)
    ensure_tables(config)
    store = DynamoStateStore(config)
    env = {**os.environ, **aws_environ(config)}
    go = tmp_path / "go"
    script = WORKER.format(root=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(w), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (0, 1)
    ]
    go.touch()
    out = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in out]
    got = store.get_jobs(["j0", "j1", "j2"])
    assert sum(got["salary_min"].to_pylist()) == 2 * INCREMENTS
    assert sum(got["version"].to_pylist()) == 2 * INCREMENTS  # one version per write


def half_unprocessed(store: DynamoStateStore, operation: str, times: int) -> list[int]:
    """Make the store's next ``times`` calls of a batch operation send only the first half
    of their items to DynamoDB and hand the rest back unprocessed, as DynamoDB does when a
    partition is throttled. Returns the sizes of every request sent."""
    real = store.db.call
    sizes: list[int] = []
    left = [times]
    field, unprocessed = {
        "batch_write_item": (None, "UnprocessedItems"),
        "batch_get_item": ("Keys", "UnprocessedKeys"),
    }[operation]

    def call(op: str, **kwargs):
        if op != operation:
            return real(op, **kwargs)
        ((name, request),) = kwargs["RequestItems"].items()
        items = request if field is None else request[field]
        sizes.append(len(items))
        if left[0] <= 0 or len(items) < 2:
            return real(op, **kwargs)
        left[0] -= 1
        keep, back = items[: len(items) // 2], items[len(items) // 2 :]
        send = keep if field is None else {**request, field: keep}
        response = real(op, RequestItems={name: send})
        rest = back if field is None else {**request, field: back}
        return {**response, unprocessed: {name: rest}}

    store.db.call = call
    return sizes


def test_unprocessed_items_and_keys_are_resent_until_done(store, monkeypatch):
    monkeypatch.setattr(dynamo_state, "_back_off", lambda attempt: None)
    ids = [f"k{n}" for n in range(60)]
    store.claim_batches([("b1", ids)], now=1)
    sizes = half_unprocessed(store, "batch_get_item", 3)
    assert store.drop_claims([*ids, "never-claimed"]) == 60  # reads, then deletes
    assert sizes == [61, 31, 16, 8]  # half handed back three times, then all done
    sizes = half_unprocessed(store, "batch_write_item", 5)
    store.claim_batches([("b1", ids)], now=1)
    assert store.drop_claims(ids) == 60
    assert len(sizes) > 3  # three 25/25/10 deletes, some sent again
    assert store.claim_batches([("b2", ids)], now=1) == [dict.fromkeys(ids, "b2")]  # all gone


def test_a_batch_call_gives_up_after_bounded_resends(store, monkeypatch):
    monkeypatch.setattr(dynamo_state, "_back_off", lambda attempt: None)
    store.claim_batches([("b1", ["a", "b"])], now=1)

    def never(op: str, **kwargs):
        ((name, request),) = kwargs["RequestItems"].items()
        return {"UnprocessedItems": {name: request}}

    store.db.call = never
    with pytest.raises(DynamoError, match="still unprocessed"):
        store.db.batch_write(
            store.tables["claims"], [{"DeleteRequest": {"Key": {"pk": {"S": "#a"}}}}]
        )


def test_jobs_stream_in_job_id_order_across_the_shards(store):
    ids = [f"job-{n:04d}" for n in range(0, 700, 3)] + ["", "Z", "é", "\x00x", "a\U0001f600"]
    store.put_jobs(table([job_row(j, T0, "e1", board="" if j < "k" else "hb") for j in ids]))
    pages = list(store.iter_jobs(batch_rows=50))
    flat = [j for page in pages for j in page["job_id"].to_pylist()]
    assert flat == sorted(ids)  # UTF-8 byte order is code point order, as SQLite sorts
    assert max(p.num_rows for p in pages) == 50
    assert len({dynamo_state.shard(j) for j in ids}) == JOB_SHARDS
    # Empty strings are values like any other (keys carry a prefix): a job, a board.
    (empty,) = store.get_jobs([""]).to_pylist()
    assert (empty["job_id"], empty["board"]) == ("", "")
    board = [j for t in store.board_jobs("", batch_rows=40) for j in t["job_id"].to_pylist()]
    assert board == sorted(j for j in ids if j < "k")
    assert store.index_batches("s", [("", "k", 0)]) == 1
    assert store.partitions_for("s", "k") == [""]


def test_values_round_trip_exactly_as_stored_items(store):
    row = job_row(
        "j1",
        T0,
        "e\x00é",
        salary_min=-(2**63),
        salary_max=2**63 - 1,
        remote=False,
        title="",
        url=None,
        updated_at=datetime(1, 1, 1, tzinfo=UTC),
    )
    store.put_jobs(table([row]))
    (got,) = store.get_jobs(["j1"]).to_pylist()
    assert got == {**row, "version": 1}
    item = raw(store, "jobs", {"pk": {"S": dynamo_state.shard("j1")}, "sk": {"S": "#j1"}})
    assert item["salary_min"] == {"N": str(-(2**63))}  # an integer, never a float
    assert item["title"] == {"S": ""} and "url" not in item  # null: absent; "" kept
    assert item["remote"] == {"BOOL": False}
    assert item["updated_at"] == {"N": str(-62_135_596_800_000_000)}


def test_duplicates_of_queries_only_the_flagged_originals(store):
    registry = pa.Table.from_pylist(
        [
            {"job_id": j, "dedupe_key": "k", "board": "b", "event_time": T0, "event_id": j}
            for j in ("a", "b", "c", "d")
        ]
    )
    store.register(registry)
    assert store.set_duplicates([("b", "a"), ("c", "a")]) == 2
    before = store.request_counts().get("query", 0)
    assert store.duplicates_of(["a", "b", "c", "d", "zz"])["job_id"].to_pylist() == ["b", "c"]
    assert store.request_counts()["query"] - before == 1  # a's alone
    assert store.set_duplicates([("b", None), ("c", "d")]) == 2  # d flagged before c names it
    assert store.duplicates_of(["a"]).num_rows == 0  # a's flag stays: a query, no rows
    assert store.duplicates_of(["d"])["job_id"].to_pylist() == ["c"]
    (a,) = store.first_postings(["a"]).to_pylist()
    assert a["duplicate_of"] is None and a["dedupe_key"] == "k"  # the flag is no column


def test_every_call_is_counted_per_operation(store):
    store.put_jobs(table([job_row(f"j{n}", T0, "e1") for n in range(3)]))
    store.get_jobs([f"j{n}" for n in range(250)])  # three BatchGetItem calls
    store.claim_batches([("b1", ["a", "b"])])
    counts = store.request_counts()
    assert counts["put_item"] == 3 + 2
    assert counts["batch_get_item"] == 3
    assert set(counts) == {"put_item", "batch_get_item"}


def test_a_store_pickles_without_its_client_and_pool(store):
    store.get_jobs(["x", "y"])
    copy = pickle.loads(pickle.dumps(store))
    assert copy.request_counts() == {}
    assert copy.put_jobs(table([job_row("p", T0, "e1")])) == []
    assert store.get_jobs(["p"]).num_rows == 1
    assert isinstance(copy.get_jobs(["p"]), pa.Table)


def test_an_item_written_before_v2_reads_its_v2_columns_as_null(store):
    v2 = list(V2)  # every column v2 added to a job row
    store.put_jobs(table([job_row("j1", T0, "e1", city="Austin", structure_city="Austin")]))
    key = {"pk": {"S": dynamo_state.shard("j1")}, "sk": {"S": "#j1"}}
    item = raw(store, "jobs", key)
    assert item["city"] == {"S": "Austin"}
    # The item as an earlier version wrote it: none of v2's attributes.
    old = {name: value for name, value in item.items() if name not in v2}
    store.db.client.put_item(TableName=store.tables["jobs"], Item=old)
    (row,) = store.get_jobs(["j1"]).to_pylist()
    assert all(row[name] is None for name in v2) and row["title"] == "j1 @ e1"
    (index,) = store.index_rows(["j1"]).to_pylist()
    assert index["visible"] and index["city"] is None
    assert store.put_jobs(table([job_row("j1", T0, "e2", version=1, city="Dallas")])) == []
    assert store.get_jobs(["j1"])["city"].to_pylist() == ["Dallas"]
