"""The validate-batch handler, called in this process: what it writes and reports, and that the
claim step fed with it gives exactly what the in-process ingest gives.

Bad inputs tried: records that are malformed JSON, truncated, of an unknown type, with a time
outside the partition, non-UTF-8, a rejected record over the inline limit, a bad record delivered
twice; events with every field missing or mistyped (see ``BAD_EVENTS``); events that try to
choose the function's store (another local root, a traversal out of its data home, a local
store on Lambda, another bucket, an extra key) and batch keys that traverse, are absolute,
name another bucket or prefix, or hold a NUL or a newline (``HOSTILE_KEYS``).
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from figstream.events.envelope import format_time
from figstream.ingest.landing import batch_key
from figstream.settings import routing_path
from figstream.storage.objects import read_parquet
from figstream.storage.state import state_path
from figstream.streaming import ingest
from figstream.streaming import stores as streaming_stores
from lambdas import validate_batch
from resources.lambda_invoke import check_outputs, read_outputs

ARRIVAL = datetime(2026, 11, 2, 10, 30, tzinfo=UTC)
HOUR = "2026-11-02-10:00"
FIRST = "2026-10-01-00:00"


def posting(n: int, minute: int, hour: int = 10, title: str = "Engineer") -> bytes:
    record = {
        "id": f"e{n}", "type": "job.posted", "source": "alpha", "version": 1,
        "time": format_time(ARRIVAL.replace(hour=hour, minute=minute)),
        "data": {
            "job_id": f"j{n}", "board": "alpha", "title": title, "company": "Acme",
            "location": "Berlin", "employment_type": "full_time", "remote": False,
            "salary_min": 50000, "salary_max": 60000, "currency": "USD",
            "url": f"https://alpha.example/{n}",
        },
    }  # fmt: skip
    return orjson.dumps(record)


BAD_TRUNCATED = b'{"id": "x", "type": "job.posted"'
BAD_TYPE = b'{"id": "u1", "type": "job.teleported", "source": "alpha", "version": 1, "time": "2026-11-02T10:05:00Z", "data": {}}'  # noqa: E501
BAD_LONG = posting(90, 7).replace(b'"salary_min":50000', b'"salary_min":"' + b"9" * 300 + b'"')


def land(stores: streaming_stores.Stores) -> list[str]:
    """Three batches of one hour: duplicates within and across batches, bad records of several
    kinds (one delivered twice), a late event placed by arrival, a long and a non-UTF-8 one."""
    batches = [
        [posting(1, 1), posting(2, 2), posting(1, 1), BAD_TRUNCATED, BAD_LONG],
        [posting(3, 3), posting(2, 2), b"not json", BAD_TRUNCATED, b"\xff\xfe not utf-8"],
        [posting(4, 4), posting(5, 5, title="Ing\u00e9nieur"), posting(3, 3), BAD_TYPE, b""],
    ]
    keys = []
    for seq, lines in enumerate(batches):
        key = batch_key(ARRIVAL + timedelta(seconds=seq), "test", seq)
        stores.objects.put(key, b"\n".join(lines))
        keys.append(key)
    return keys


def event(stores: streaming_stores.Stores, keys: list[str], **changes) -> dict:
    body = {
        "stream": "postings",
        "partition": HOUR,
        "batch_keys": keys,
        "first_partition": FIRST,
        "routing": routing_path().read_text(encoding="utf-8"),
        "objects": validate_batch.store_spec(stores.objects),
    }
    body.update(changes)
    return body


def books(home: Path, stores: streaming_stores.Stores) -> tuple:
    """Fragments, dead letters and claims, as the claim step left them."""
    fragments = {
        key: read_parquet(stores.objects, key)
        for key in stores.objects.list(f"tables/raw_events/{HOUR}/")
    }
    letters = sorted(
        (d.batch_id, d.line_no, d.event_id, d.code, d.detail, d.payload, d.partition_key)
        for d in stores.dead_letters.list(limit=None)
    )
    with sqlite3.connect(state_path(home)) as db:
        claims = db.execute("SELECT event_id, batch_id FROM event_claims ORDER BY 1").fetchall()
    return fragments, letters, claims


def deploy_at(monkeypatch, home: Path) -> None:
    """The function's own environment: the local profile, ``home`` its data home, not on
    Lambda (the store comes from here, never from the event)."""
    monkeypatch.setenv("FIGSTREAM_PROFILE", "local")
    monkeypatch.setenv("FIGSTREAM_HOME", str(home))
    monkeypatch.delenv("AWS_EXECUTION_ENV", raising=False)


@pytest.fixture
def landed(tmp_path: Path, monkeypatch):
    stores = streaming_stores.Stores.local(tmp_path / "lambda", FIRST)
    deploy_at(monkeypatch, tmp_path / "lambda")
    return stores, land(stores)


def test_the_handler_reports_counts_and_bounded_dead_letters(landed) -> None:
    stores, keys = landed
    summary = validate_batch.handler(event(stores, keys), None)
    expected = [
        ingest.validate_batch(stores.objects.get(k), k, "postings", HOUR, stores.router, FIRST)
        for k in keys
    ]
    codes: dict[str, int] = {}
    for batch in expected:
        for code in batch.rejected["code"].to_pylist():
            codes[code] = codes.get(code, 0) + 1
    assert summary["records"] == sum(b.records for b in expected) == 14
    assert summary["valid"] == sum(b.valid.num_rows for b in expected) == 8
    assert summary["rejected"] == sum(codes.values()) == 6
    assert summary["rejected_by_code"] == dict(sorted(codes.items()))
    assert summary["empty"] == [] and summary["batches"] == 3
    letters = summary["dead_letters"]
    assert len(letters) + summary["dead_letters_omitted"] == 6
    long = next(d for d in letters if d["bytes"] == len(BAD_LONG))
    assert "payload" not in long and long["payload_ref"] == f"{keys[0]}#L5"
    binary = next(d for d in letters if d["bytes"] == len(b"\xff\xfe not utf-8"))
    assert binary["payload_ref"] == f"{keys[1]}#L5"
    assert any(d.get("payload") == BAD_TRUNCATED.decode() for d in letters)
    # What it wrote is exactly what validating here gives.
    for key, batch in zip(keys, expected, strict=True):
        valid_key, rejected_key = validate_batch.output_keys(key, "postings", HOUR)
        assert read_parquet(stores.objects, valid_key).equals(batch.valid)
        assert read_parquet(stores.objects, rejected_key).equals(batch.rejected)


def test_the_claim_step_on_the_handlers_outputs_matches_the_in_process_ingest(
    tmp_path: Path, landed
) -> None:
    stores, keys = landed
    local = streaming_stores.Stores.local(tmp_path / "local", FIRST)
    assert land(local) == keys
    expected = ingest.ingest(local, "postings", HOUR, keys)

    summary = validate_batch.handler(event(stores, keys), None)
    check_outputs(stores.objects, "postings", HOUR, keys, summary)
    outputs = read_outputs(stores.objects, "postings", HOUR, keys, summary)
    got = ingest.ingest(stores, "postings", HOUR, keys, outputs)

    counts = ("records", "valid", "duplicates", "dead_lettered", "batches", "batch_ids")
    assert [getattr(got, c) for c in counts] == [getattr(expected, c) for c in counts]
    assert (got.duplicates, got.dead_lettered) == (4, 5)  # e1, e2, e3 and the repeated bad one
    assert books(tmp_path / "lambda", stores) == books(tmp_path / "local", local)
    # The handler's outputs are intermediate: read once, then gone.
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == []


def test_a_batch_without_the_partitions_records_is_reported_empty(landed) -> None:
    stores, keys = landed
    other_hour = batch_key(ARRIVAL + timedelta(seconds=9), "test", 9)
    stores.objects.put(other_hour, posting(7, 1, hour=9))  # an event of 09:00, on time
    summary = validate_batch.handler(event(stores, [keys[0], other_hour]), None)
    assert summary["empty"] == [1] and summary["records"] == 5
    assert not stores.objects.exists(validate_batch.output_keys(other_hour, "postings", HOUR)[0])


def test_a_retry_overwrites_the_same_objects(landed) -> None:
    stores, keys = landed
    first = validate_batch.handler(event(stores, keys), None)
    written = stores.objects.list(validate_batch.OUTPUT_PREFIX)
    assert len(written) == 6
    assert validate_batch.handler(event(stores, keys), None) == first
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == written


def _pipes_event(body: dict) -> dict:
    def encode(value: dict) -> str:
        return base64.b64encode(zlib.compress(json.dumps(value).encode())).decode()

    context = {"asset_keys": ["raw_events"], "run_id": "r1", "extras": {}}
    return {
        **body,
        "DAGSTER_PIPES_CONTEXT": encode({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode({"buffered_stdio": "stderr"}),
    }


def test_a_warm_function_reports_through_pipes_on_every_invocation(landed, monkeypatch) -> None:
    # dagster_pipes keeps one context per process and open_dagster_pipes returns it again,
    # closed, on a warm start (dagster-io/dagster#22094); each invocation opens its own.
    stores, keys = landed
    for round_ in range(2):
        stream = io.StringIO()
        monkeypatch.setattr("sys.stderr", stream)
        validate_batch.handler(_pipes_event(event(stores, keys[: round_ + 1])), None)
        messages = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [m["method"] for m in messages] == ["opened", "report_custom_message", "closed"]
        payload = messages[1]["params"]["payload"]
        assert payload["kind"] == validate_batch.MESSAGE_KIND and payload["batches"] == round_ + 1
        assert len(stream.getvalue().encode()) < 3500  # fits the 4 KB log tail with END/REPORT


def test_a_failure_is_reported_in_the_pipes_closed_message(landed, monkeypatch) -> None:
    stores, _ = landed
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with pytest.raises(FileNotFoundError):
        missing = batch_key(ARRIVAL + timedelta(seconds=30), "test", 30)
        validate_batch.handler(_pipes_event(event(stores, [missing])), None)
    closed = json.loads(stream.getvalue().splitlines()[-1])
    assert closed["method"] == "closed"
    assert "FileNotFoundError" in closed["params"]["exception"]["name"]


def test_many_dead_letters_stay_within_the_message_budget(tmp_path: Path, monkeypatch) -> None:
    stores = streaming_stores.Stores.local(tmp_path, FIRST)
    deploy_at(monkeypatch, tmp_path)
    key = batch_key(ARRIVAL, "test", 0)
    stores.objects.put(key, b"\n".join(b'{"id": "x%d", "type": 1}' % i for i in range(2000)))
    summary = validate_batch.handler(event(stores, [key]), None)
    assert summary["rejected"] == 2000
    assert len(summary["dead_letters"]) + summary["dead_letters_omitted"] == 2000
    assert 0 < len(json.dumps(summary["dead_letters"])) <= validate_batch.SAMPLE_BYTES
    assert len(json.dumps(summary)) < 2600


BAD_EVENTS = [
    ("not an object", ["a"], "expected a JSON object"),
    ("stream missing", {"stream": None}, "'stream'"),
    ("stream unknown", {"stream": "payments"}, "not a stream of the routing rules"),
    ("partition not an hour", {"partition": "2026-11-02"}, "not an hourly partition key"),
    ("partition impossible", {"partition": "2026-13-02-10:00"}, "not a real hour"),
    ("first partition mistyped", {"first_partition": 7}, "'first_partition'"),
    ("no batches", {"batch_keys": []}, "empty"),
    ("batches not a list", {"batch_keys": "landing/x"}, "expected a list of strings"),
    ("too many batches", {"batch_keys": ["k"] * 51}, "at most 50"),
    ("not a landing key", {"batch_keys": ["tables/raw_events/x.parquet"]}, "'batch_keys'"),
    ("objects not an object", {"objects": "s3://someone-elses/"}, "'objects'"),
    ("objects unknown kind", {"objects": {"kind": "ftp"}}, "unknown kind 'ftp'"),
    ("local root relative", {"objects": {"kind": "local", "root": "data"}}, "absolute 'root'"),
    ("routing not routing", {"routing": "streams: [1, 2]"}, "event field 'routing'"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in BAD_EVENTS],
                         ids=[c[0] for c in BAD_EVENTS])  # fmt: skip
def test_a_bad_event_is_refused_naming_the_field(landed, changes, message) -> None:
    stores, keys = landed
    body = changes if isinstance(changes, list) else event(stores, keys, **changes)
    with pytest.raises(ValueError, match=message):
        validate_batch.handler(body, None)
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == []


def test_an_s3_event_for_another_bucket_is_refused(landed, aws_config) -> None:
    stores, keys = landed
    body = event(stores, keys, objects={"kind": "s3", "bucket": "someone-elses"})
    with pytest.raises(ValueError, match=f"deployed for '{aws_config.bucket_name}'"):
        validate_batch.handler(body, None)
    # Nor a local store: the event cannot switch the function to a directory.
    body = event(stores, keys, objects={"kind": "local", "root": str(stores.objects.root)})
    with pytest.raises(ValueError, match="a local store, but this function's is s3"):
        validate_batch.handler(body, None)
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == []


# --- the store is the function's own; the event only names batches ------------------------------


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def test_an_event_without_objects_uses_the_functions_own_store(landed) -> None:
    stores, keys = landed
    body = event(stores, keys)
    del body["objects"]
    summary = validate_batch.handler(body, None)
    assert summary["records"] == 14 and summary["batches"] == 3
    assert len(stores.objects.list(validate_batch.OUTPUT_PREFIX)) == 6


def test_a_local_root_other_than_the_functions_is_refused_and_nothing_is_written(
    landed, tmp_path: Path
) -> None:
    stores, keys = landed
    # Another directory holding the same batches: a function that obeyed the event would
    # read them there and write its outputs beside them.
    elsewhere = streaming_stores.Stores.local(tmp_path / "elsewhere", FIRST)
    assert land(elsewhere) == keys
    before = files(tmp_path / "elsewhere")
    home = stores.objects.root
    for root in (
        str(tmp_path / "elsewhere"),
        f"{home}/../elsewhere",  # traversal out of the data home
        "/",
        "/tmp",
    ):
        body = event(stores, keys, objects={"kind": "local", "root": root})
        with pytest.raises(ValueError, match="but this function's store is its data home"):
            validate_batch.handler(body, None)
    assert files(tmp_path / "elsewhere") == before
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == []


def test_extra_keys_in_objects_are_refused(landed) -> None:
    stores, keys = landed
    spec = {**validate_batch.store_spec(stores.objects), "endpoint": "http://evil.example"}
    with pytest.raises(ValueError, match="unknown key\\(s\\) 'endpoint' for a local store"):
        validate_batch.handler(event(stores, keys, objects=spec), None)
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == []


def test_on_lambda_a_local_store_is_refused_whatever_the_profile(landed, monkeypatch) -> None:
    # The Lambda runtime sets AWS_EXECUTION_ENV; there the store is S3 even with
    # FIGSTREAM_PROFILE unset or local, so the function's own data home is refused too.
    stores, keys = landed
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.11")
    monkeypatch.setenv("FIGSTREAM_AWS_PREFIX", "prod")
    assert validate_batch.configured_spec() == {"kind": "s3", "bucket": "prod-data"}
    with pytest.raises(ValueError, match="a local store, but this function's is s3"):
        validate_batch.handler(event(stores, keys), None)
    assert stores.objects.list(validate_batch.OUTPUT_PREFIX) == []


HOSTILE_KEYS = [
    "landing/../tables/raw_events/x.jsonl",
    "landing/2026-11-02/../../../etc/passwd",
    "landing/2026-11-02/20261102T103000000000Z-test-000000.jsonl/../../x.jsonl",
    "/landing/2026-11-02/20261102T103000000000Z-test-000000.jsonl",
    "landing/2026-11-02/..%2f..%2fetc%2fpasswd.jsonl",
    "landing\\2026-11-02\\20261102T103000000000Z-test-000000.jsonl",
    "s3://someone-elses/landing/2026-11-02/20261102T103000000000Z-test-000000.jsonl",
    "landing/2026-11-02/20261102T103000000000Z-test-000000.jsonl\x00.parquet",
    "landing/2026-11-02/20261102T103000000000Z-test-000000.jsonl\nlanding/x",
    "validated/2026-11-02/20261102T103000000000Z-test-000000.jsonl",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_batch_keys_are_refused_before_anything_is_read_or_written(landed, key) -> None:
    stores, keys = landed
    before = files(stores.objects.root)
    with pytest.raises(ValueError, match="event field 'batch_keys': not a landing batch key"):
        validate_batch.handler(event(stores, [keys[0], key]), None)
    assert files(stores.objects.root) == before
