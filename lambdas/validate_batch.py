"""The ``validate-batch`` Lambda: the ingest step's parse, validation and upcasting of landed
batches, run as an AWS Lambda function and reporting back through Dagster Pipes.

The ingest asset (``assets/streaming.py``) invokes it through dagster-aws's
``PipesLambdaClient`` (``resources/lambda_invoke.py``) with one (stream, hourly partition) and
up to :data:`MAX_BATCHES` landing keys. For each batch the handler runs
:func:`figstream.streaming.ingest.validate_batch` (the very function the in-process path runs)
and writes what it made of it as two Parquet objects, deterministic in (batch, stream,
partition) so that a retry overwrites them (:func:`output_keys`): the valid events, upcast to
the latest schema version, and the rejected records with their reason code and original bytes.
The asset reads them back, claims the event ids, writes the fragments and the dead letters
exactly as in process, and deletes them. Claims stay on the Dagster side: they need the state
store, and the function needs nothing but the object store (least privilege).

Through Pipes the handler reports one custom message (:func:`summarise`): the counts (records,
valid, rejected by reason code), the batches that held none of the partition's records, and the
dead letters, bounded: a sample of at most :data:`SAMPLE_BYTES` of JSON, each with its id, reason
and payload, a payload over :data:`INLINE_PAYLOAD` bytes by reference (``<landing key>#L<line>``;
every one is also in the rejected-records object), and how many were left out. The bound is
there because ``PipesLambdaClient`` reads the Pipes messages from the invocation's
``LogResult``, which is only the last 4 KB of the log. The same dict is the function's return
value, so a plain invoke without Pipes sees it too.

The event (a JSON object; ``PipesLambdaClient`` adds its ``DAGSTER_PIPES_*`` keys)::

    {"stream": "postings", "partition": "2026-11-01-13:00",
     "batch_keys": ["landing/2026-11-01/20261101T130102000000Z-000001.jsonl", ...],
     "first_partition": "2026-11-01-00:00",
     "routing": "<the text of platform/routing.yaml the sensors indexed with>",
     "objects": {"kind": "s3", "bucket": "<name>"} | {"kind": "local", "root": "/data"}}

The routing rules travel in the event so that the function assigns lines to hours exactly as
the code location's sensors did when they indexed the batches.

The object store is the function's own, never the caller's choice (:func:`configured_spec`):
on AWS Lambda (the runtime sets ``AWS_EXECUTION_ENV=AWS_Lambda_<runtime>``) always S3, the
bucket, endpoint, region and retries of its environment (``figstream.storage.aws.AwsConfig``),
whatever ``FIGSTREAM_PROFILE`` says; elsewhere (the subprocess client, a test) the profile's
store: that S3 bucket, or the data home's directory (``$FIGSTREAM_HOME``) on the local profile.
The event only names the batches: ``batch_keys`` are landing keys (one ASCII pattern, no
traversal: :func:`figstream.ingest.landing.parse_batch_key`), and ``objects``, optional, must
name exactly that store (its kind, and its bucket or root, no other key), so a caller cannot
make the function read or write a directory or a bucket it was not deployed with.

Importable without Dagster: it imports only ``dagster_pipes`` (a single module, shipped in the
deployment package) and the figstream core.

Bad inputs tried (see ``tests/lambdas/test_validate_batch.py``): an event that is not an object,
missing or mistyped fields, an unknown stream, a partition key that is not an hour, no batch
keys, more than :data:`MAX_BATCHES`, a key that is not a landing key, a batch that is not
there, an ``objects`` field that is not an object, of an unknown kind, with an unknown key, of
another kind than the function's store, naming an S3 bucket other than the function's or a
local root other than its data home, a local store asked of a function running on Lambda,
routing text that is not valid routing; each raises ``ValueError`` (or ``FileNotFoundError``)
naming the field before anything is written, which the Lambda runtime returns as a
``FunctionError`` and ``PipesLambdaClient`` raises in the step. Malformed records are not
errors: they are counted and reported as dead letters.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dagster_pipes import (
    PipesContext,
    PipesDefaultContextLoader,
    PipesDefaultMessageWriter,
    PipesMappingParamsLoader,
)

from figstream.ingest.archive import read_batch
from figstream.ingest.landing import parse_batch_key
from figstream.ingest.routing import Router
from figstream.storage.objects import LocalObjectStore, ObjectStore, write_parquet
from figstream.streaming.ingest import ValidatedBatch, validate_batch
from figstream.streaming.stores import HOUR_FORMAT

MESSAGE_KIND = "figstream.validate_batch/v1"
MAX_BATCHES = 50  # per invocation: well inside the function's 60 s timeout
OUTPUT_PREFIX = "validated/"
SAMPLE_BYTES = 1800  # JSON of the dead-letter sample; the message rides in a 4 KB log tail
INLINE_PAYLOAD = 160  # payload bytes sent inline; longer ones by reference
DETAIL_CHARS = 120
_HOUR = re.compile(r"\d{4}-\d\d-\d\d-\d\d:00")


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``lambdas.validate_batch.handler``)."""
    pipes = open_pipes(event)
    if pipes is None:  # invoked without Pipes: the return value is the whole answer
        return validate(event)
    with pipes:  # an exception is reported in the Pipes "closed" message too
        summary = validate(event)
        pipes.report_custom_message(summary)
    return summary


def open_pipes(event: Any) -> PipesContext | None:
    """A Pipes context for this invocation, or None when the event carries no Pipes params.

    ``dagster_pipes.open_dagster_pipes`` keeps one context per process and returns it again
    once it is set, closed or not; a warm Lambda serves many invocations in one process, so
    each invocation opens its own (and makes it the current one).
    """
    if not isinstance(event, Mapping):
        return None
    params = PipesMappingParamsLoader(event)
    if not params.is_dagster_pipes_process():
        return None
    context = PipesContext(params, PipesDefaultContextLoader(), PipesDefaultMessageWriter())
    PipesContext.set(context)
    return context


# --- the event ---------------------------------------------------------------------------------


def parse_event(event: Any) -> dict[str, Any]:
    """The event's fields, checked; ``ValueError`` naming the first bad one."""
    if not isinstance(event, Mapping):
        raise ValueError(f"event: expected a JSON object, got {type(event).__name__}")
    out: dict[str, Any] = {}
    for name in ("stream", "partition", "first_partition", "routing"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"event field {name!r}: expected a non-empty string, got {value!r}")
        out[name] = value
    for name in ("partition", "first_partition"):
        if not _HOUR.fullmatch(out[name]):
            raise ValueError(f"event field {name!r}: {out[name]!r} is not an hourly partition key "
                             "(YYYY-MM-DD-HH:00)")  # fmt: skip
        try:
            datetime.strptime(out[name], HOUR_FORMAT)
        except ValueError:
            raise ValueError(f"event field {name!r}: {out[name]!r} is not a real hour") from None
    keys = event.get("batch_keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"event field 'batch_keys': expected a list of strings, got {keys!r}")
    if not keys:
        raise ValueError("event field 'batch_keys': empty; name at least one landed batch")
    if len(keys) > MAX_BATCHES:
        raise ValueError(f"event field 'batch_keys': {len(keys)} batches, at most {MAX_BATCHES} "
                         "per invocation")  # fmt: skip
    for key in keys:
        try:
            parse_batch_key(key)
        except ValueError as exc:
            raise ValueError(f"event field 'batch_keys': {exc}") from None
    out["batch_keys"] = keys
    objects = event.get("objects")
    if objects is not None and not isinstance(objects, Mapping):
        raise ValueError(f"event field 'objects': expected an object, got {objects!r}")
    out["objects"] = None if objects is None else dict(objects)
    return out


def store_spec(store: ObjectStore) -> dict[str, str]:
    """The ``objects`` field that names ``store`` to the function."""
    if isinstance(store, LocalObjectStore):
        return {"kind": "local", "root": str(store.root)}
    config = getattr(store, "config", None)
    if type(store).__name__ == "S3ObjectStore" and config is not None:
        return {"kind": "s3", "bucket": config.bucket_name}
    raise ValueError(f"the validate-batch function cannot reach {store!r}: "
                     "a local directory or the S3 store only")  # fmt: skip


def on_lambda(environ: Mapping[str, str]) -> bool:
    """Whether this process is the AWS Lambda runtime (not the subprocess client, a test)."""
    return environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")


def configured_spec(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The store this function was deployed with, from its own environment only: S3 on AWS
    Lambda whatever the profile, else the profile's (the S3 bucket, or the data home)."""
    from figstream.settings import data_home, profile
    from figstream.storage.aws import AwsConfig

    env = os.environ if environ is None else environ
    if on_lambda(env) or profile() == "aws":
        return {"kind": "s3", "bucket": AwsConfig.from_env(dict(env)).bucket_name}
    return {"kind": "local", "root": str(data_home())}


def check_spec(spec: Mapping[str, Any] | None, configured: Mapping[str, str]) -> None:
    """``ValueError`` unless the event's ``objects`` (when given) names the configured store."""
    if spec is None:
        return
    kind = spec.get("kind")
    if kind not in ("local", "s3"):
        raise ValueError(f"event field 'objects': unknown kind {kind!r} (expected 'local' or 's3')")
    field = "root" if kind == "local" else "bucket"
    extra = sorted(map(repr, set(spec) - {"kind", field}))
    if extra:
        raise ValueError(f"event field 'objects': unknown key(s) {', '.join(extra)} for a "
                         f"{kind} store (only 'kind' and {field!r})")  # fmt: skip
    if kind != configured["kind"]:
        raise ValueError(f"event field 'objects': a {kind} store, but this function's is "
                         f"{configured['kind']} (its environment's, not the event's)")  # fmt: skip
    value = spec.get(field)
    if kind == "s3":
        if value != configured["bucket"]:
            raise ValueError(f"event field 'objects': bucket {value!r}, but this function is "
                             f"deployed for {configured['bucket']!r}")  # fmt: skip
        return
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"event field 'objects': a local store needs an absolute 'root', "
                         f"got {value!r}")  # fmt: skip
    if os.path.realpath(value) != os.path.realpath(configured["root"]):
        raise ValueError(f"event field 'objects': root {value!r}, but this function's store is "
                         f"its data home {configured['root']!r}")  # fmt: skip


def open_store(spec: Mapping[str, Any] | None) -> ObjectStore:
    """The function's own object store (:func:`configured_spec`), once the event's ``objects``
    field, when given, is found to name it (:func:`check_spec`)."""
    configured = configured_spec()
    check_spec(spec, configured)
    if configured["kind"] == "local":
        return LocalObjectStore(configured["root"])
    from figstream.storage.aws import AwsConfig
    from figstream.storage.s3_objects import S3ObjectStore

    return S3ObjectStore(AwsConfig.from_env())


def output_keys(batch_key: str, stream: str, partition: str) -> tuple[str, str]:
    """Where the function leaves what it made of a batch: (valid events, rejected records),
    beside the landing key's layout and outside ``landing/`` (which only holds batches)."""
    _, batch_id = parse_batch_key(batch_key)
    day = batch_key.split("/")[1]
    base = f"{OUTPUT_PREFIX}{day}/{batch_id}/{stream}/{partition}"
    return f"{base}/valid.parquet", f"{base}/rejected.parquet"


# --- the work ---------------------------------------------------------------------------------


def validate(event: Any) -> dict[str, Any]:
    """Validate the event's batches, write their outputs, and return the summary."""
    request = parse_event(event)
    store = open_store(request["objects"])
    router = Router.from_text(request["routing"], "event field 'routing'")
    stream, partition = request["stream"], request["partition"]
    if stream not in router.streams:
        raise ValueError(f"event field 'stream': {stream!r} is not a stream of the routing "
                         f"rules ({', '.join(sorted(router.streams))})")  # fmt: skip
    batches: list[tuple[str, ValidatedBatch | None]] = []
    for key in request["batch_keys"]:
        data = read_batch(store, key)  # the landing object, or its archived copy
        batch = validate_batch(data, key, stream, partition, router, request["first_partition"])
        if batch is not None:
            valid_key, rejected_key = output_keys(key, stream, partition)
            write_parquet(store, valid_key, batch.valid)
            write_parquet(store, rejected_key, batch.rejected)
        batches.append((key, batch))
    return summarise(stream, partition, batches)


def summarise(
    stream: str, partition: str, batches: list[tuple[str, ValidatedBatch | None]]
) -> dict[str, Any]:
    """The result message: counts, the empty batches (by position), a bounded dead-letter
    sample. Its JSON stays under ~2.5 KB however many records were rejected."""
    codes: Counter[str] = Counter()
    records = valid = 0
    sample: list[dict[str, Any]] = []
    used = omitted = 0
    for key, batch in batches:
        if batch is None:
            continue
        records += batch.records
        valid += batch.valid.num_rows
        codes.update(batch.rejected["code"].to_pylist())
        for row in batch.rejected.to_pylist():
            letter = _dead_letter(key, row)
            size = len(json.dumps(letter)) + 2
            if not omitted and used + size <= SAMPLE_BYTES:
                sample.append(letter)
                used += size
            else:
                omitted += 1
    return {
        "kind": MESSAGE_KIND,
        "stream": stream,
        "partition": partition,
        "batches": len(batches),
        "empty": [i for i, (_, batch) in enumerate(batches) if batch is None],
        "records": records,
        "valid": valid,
        "rejected": sum(codes.values()),
        "rejected_by_code": dict(sorted(codes.items())),
        "dead_letters": sample,
        "dead_letters_omitted": omitted,
    }


def _dead_letter(batch_key: str, row: dict[str, Any]) -> dict[str, Any]:
    payload: bytes = row["payload"]
    letter: dict[str, Any] = {
        "id": row["event_id"],
        "code": row["code"],
        "detail": row["detail"][:DETAIL_CHARS],
        "line": row["line_no"],
        "bytes": len(payload),
    }
    text = None
    if len(payload) <= INLINE_PAYLOAD:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is None:
        letter["payload_ref"] = f"{batch_key}#L{row['line_no']}"
    else:
        letter["payload"] = text
    return letter
