"""The monthly AWS bill of the streaming platform, and of the legacy nightly batch it replaces,
from one month of traffic: pure arithmetic, no I/O.

Three inputs, kept apart so that each can be argued with on its own:

* :class:`Workload`: what the platform carried in a month (events, their size, batches, bytes
  stored), measured from a home (:mod:`figstream.cost.measure`) or given as a what-if;
* :class:`Footprint`: how the platform is deployed and what each event costs it in requests
  (the Lambda's memory, DynamoDB units per event, the always-on tasks of
  ``platform/aws/ecs/``, the legacy box); every default names where it comes from, and
  those that are estimates, not measurements, say so in :func:`assumptions`;
* :class:`~figstream.cost.prices.PriceTable`: the dated unit prices and free tiers.

:func:`usage` turns workload and footprint into one quantity per (service, meter), with the
AWS billing rules applied (64 KB chunks for EventBridge and SQS, ten messages per SQS batch
call, Lambda duration rounded up to the millisecond, a 1 KB write unit and 4 KB read unit for
DynamoDB, 730 hours a month). :func:`price` applies each meter's free tier and unit price and
rounds each charge to the cent; the totals are sums of rounded charges, so the bill adds up.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from figstream.cost.prices import PriceTable

CENT = Decimal("0.01")
CHUNK_BYTES = 64 * 1024  # EventBridge and SQS bill each 64 KB chunk of a payload as one unit
SQS_BATCH = 10  # ReceiveMessage and DeleteMessageBatch carry at most ten messages
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives a function one full vCPU at 1,769 MB
GB = 1024**3
SERVICES_ON = ("fargate", "ec2")


@dataclass(frozen=True)
class Task:
    """An always-on Fargate task: its name, vCPUs and memory (from its task definition)."""

    name: str
    vcpu: float
    memory_gb: float


# platform/aws/ecs/webserver.json and daemon.json (the daemon task holds the code server too)
DEFAULT_TASKS = (Task("webserver", 0.5, 1.0), Task("daemon + code server", 2.0, 8.0))


@dataclass(frozen=True)
class Workload:
    """One month of the platform's traffic."""

    events: float  # records landed, every stream
    avg_event_bytes: float  # bytes of one landed line
    bad_rate: float  # share of records dead-lettered
    batches: float  # landing batches
    batch_hours: float  # (batch, stream, hour) entries: one validate-batch invocation at most each
    stored_bytes: dict[str, float]  # S3 bytes held, by area: landing, archive, tables
    state_items: dict[str, float]  # DynamoDB items held: jobs, registry, claims
    streams: int = 2
    basis: str = "what-if"  # where the figures came from, shown with the bill

    def __post_init__(self) -> None:
        for name in ("events", "avg_event_bytes", "batches", "batch_hours"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"workload {name} must be a finite number >= 0, got {value}")
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError(f"workload bad_rate must be within 0..1, got {self.bad_rate}")
        if self.streams < 1:
            raise ValueError(f"workload streams must be >= 1, got {self.streams}")


@dataclass(frozen=True)
class Footprint:
    """How the platform is deployed, and what an event costs it in requests."""

    # The validate-batch Lambda: no memory size in platform/aws, so the default of
    # resources/lambda_invoke.py's subprocess stand-in (1,024 MB).
    lambda_memory_mb: int = 1024
    # Per invocation outside the per-event work: the S3 round trips of its batch and outputs.
    # An estimate: the Lambda has not been timed on AWS.
    lambda_fixed_ms: float = 100.0
    # bench/README.md transform bench (b), 72k events/s in one process on AMD EPYC: 13.9 us an
    # event on one vCPU, slower in proportion below 1,769 MB.
    lambda_us_per_event_per_vcpu: float = 1e6 / 72_000
    # docs/deploy-aws.md: write and read units per valid event (claims, jobs, registry, day
    # rows, the trace index and its conflicting-redelivery lookup).
    write_units_per_event: float = 5.5
    read_units_per_event: float = 3.4
    # bench/README.md: the daemon evaluates sensors in a fixed 5 s loop; each stream's drain
    # then makes one (long-poll) receive and one queue-depth read of its dead-letter queue.
    sensor_tick_seconds: float = 5.0
    idle_requests_per_tick: int = 2
    # What EventBridge wraps around the detail it delivers to SQS (id, account, time, ...).
    eventbridge_envelope_bytes: int = 400
    # S3 requests per (batch, stream, hour): the Lambda's two output objects and the
    # fragments of each output table (figstream/streaming/compaction.py FRAGMENT_TABLES).
    s3_puts_per_batch_hour: float = 8.0
    # ... and the reads: the batch by the sensor's index and the Lambda, the two outputs,
    # each fragment once by the next step.
    s3_gets_per_batch_hour: float = 10.0
    # DynamoDB item sizes, bytes (storage is billed on the item plus 100 bytes of overhead).
    job_item_bytes: float = 1200.0
    registry_item_bytes: float = 250.0
    claim_item_bytes: float = 120.0
    dead_letter_overhead_bytes: float = 300.0  # a dead letter holds the original line too
    tasks: tuple[Task, ...] = DEFAULT_TASKS
    # Where the always-on tasks run: Fargate (platform/aws/ecs/, the default) or ECS on EC2,
    # as many m6a.xlarge (4 vCPU, 16 GiB) as hold their reservations, each with a root volume.
    services_on: str = "fargate"
    services_instance_vcpu: float = 4.0
    services_instance_memory_gb: float = 16.0
    services_volume_gb: float = 30.0
    # docs/deploy-aws.md: "db.t4g.medium is plenty for today's load"; RDS's 20 GB minimum.
    rds_storage_gb: float = 20.0
    # Legacy: bench/README.md transform bench (c), Luigi ~11k events/s on AMD EPYC in one
    # process; an m6a.large (2 vCPU AMD EPYC) started for the night, per-second billing with
    # EC2's 60 s minimum, and a volume for the feed dumps and outputs.
    legacy_events_per_second: float = 11_000.0
    legacy_min_seconds: float = 60.0
    legacy_volume_gb: float = 100.0

    def __post_init__(self) -> None:
        if not 128 <= self.lambda_memory_mb <= 10_240:
            raise ValueError(
                f"lambda memory must be within 128..10240 MB (Lambda's range), "
                f"got {self.lambda_memory_mb}"
            )
        if self.services_on not in SERVICES_ON:
            raise ValueError(
                f"services_on must be one of {', '.join(SERVICES_ON)}, got {self.services_on!r}"
            )
        if self.legacy_events_per_second <= 0 or self.sensor_tick_seconds <= 0:
            raise ValueError("legacy events per second and the sensor tick must be > 0")


def assumptions(footprint: Footprint) -> list[str]:
    """The figures of the footprint that are estimates, not read from config or measured."""
    return [
        f"Lambda {footprint.lambda_memory_mb} MB (no memory size in platform/aws; "
        "resources/lambda_invoke.py's default)",
        f"Lambda {footprint.lambda_fixed_ms:g} ms per invocation besides the events "
        "(estimate: not timed on AWS)",
        "at most one validate-batch invocation per (batch, stream, hour); runs that fold "
        "batches pay fewer",
        f"DynamoDB {footprint.write_units_per_event:g} write and "
        f"{footprint.read_units_per_event:g} read units per valid event (docs/deploy-aws.md)",
        f"legacy: one m6a.large at {footprint.legacy_events_per_second:,.0f} events/s "
        "(bench/README.md transform bench (c)) plus a "
        f"{footprint.legacy_volume_gb:g} GB volume",
    ]


@dataclass(frozen=True)
class Meter:
    """One quantity the bill charges for: a service's use of one priced meter."""

    service: str
    item: str
    price_key: str
    quantity: Decimal
    detail: str = ""


@dataclass(frozen=True)
class Charge:
    meter: Meter
    free: Decimal  # units the free tier covered
    billable: Decimal
    unit_price: Decimal
    cost: Decimal  # rounded to the cent


@dataclass(frozen=True)
class Bill:
    charges: list[Charge]
    currency: str = "USD"
    by_service: dict[str, Decimal] = field(init=False)
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        services: dict[str, Decimal] = defaultdict(Decimal)
        for charge in self.charges:
            services[charge.meter.service] += charge.cost
        object.__setattr__(self, "by_service", dict(services))
        object.__setattr__(self, "total", sum(services.values(), Decimal("0.00")))


def _count(value: float) -> Decimal:
    """A count of requests or units: whole ones, rounded up (a started unit is billed)."""
    return Decimal(math.ceil(value - 1e-9)) if value > 0 else Decimal(0)


def _amount(value: float) -> Decimal:
    """A continuous quantity (GB-months, GB-seconds, hours), to a thousandth."""
    return Decimal(repr(float(value))).quantize(Decimal("0.001"), ROUND_HALF_UP)


def chunks(size_bytes: float) -> int:
    """64 KB chunks a payload of ``size_bytes`` is billed as (at least one)."""
    return max(1, math.ceil(size_bytes / CHUNK_BYTES))


def lambda_ms_per_invocation(footprint: Footprint, events_per_invocation: float) -> int:
    """Billed duration: the fixed part plus the events at the function's CPU share, rounded up
    to the millisecond."""
    share = min(1.0, footprint.lambda_memory_mb / LAMBDA_MB_PER_VCPU)
    per_event_ms = footprint.lambda_us_per_event_per_vcpu / share / 1000
    return math.ceil(footprint.lambda_fixed_ms + events_per_invocation * per_event_ms - 1e-9)


def _fmt(value: float) -> str:
    return f"{value:,.0f}"


def usage(workload: Workload, footprint: Footprint, hours_per_month: float = 730) -> list[Meter]:
    """The month's quantity of each priced meter of the streaming platform."""
    w, f = workload, footprint
    valid = w.events * (1 - w.bad_rate)
    ticks = hours_per_month * 3600 / f.sensor_tick_seconds * w.streams
    message_bytes = w.avg_event_bytes + f.eventbridge_envelope_bytes

    put_events = w.events * chunks(w.avg_event_bytes)
    sends = w.events * chunks(message_bytes)
    batch_chunks = math.ceil(SQS_BATCH * message_bytes / CHUNK_BYTES)
    receives = math.ceil(w.events / SQS_BATCH) * batch_chunks
    deletes = math.ceil(w.events / SQS_BATCH)
    idle = ticks * f.idle_requests_per_tick

    invocations = w.batch_hours
    per_invocation = w.events / invocations if invocations else 0.0
    ms = lambda_ms_per_invocation(f, per_invocation) if invocations else 0
    gb_seconds = invocations * ms / 1000 * f.lambda_memory_mb / 1024

    dead_letter_units = (
        w.events * w.bad_rate * math.ceil((w.avg_event_bytes + f.dead_letter_overhead_bytes) / 1024)
    )
    writes = valid * f.write_units_per_event + dead_letter_units + w.batch_hours
    reads = valid * f.read_units_per_event
    items = w.state_items
    state_bytes = (
        items.get("jobs", 0) * (f.job_item_bytes + 100)
        + items.get("registry", 0) * (f.registry_item_bytes + 100)
        + items.get("claims", 0) * (f.claim_item_bytes + 100)
        + w.events * w.bad_rate * (w.avg_event_bytes + f.dead_letter_overhead_bytes + 100)
    )

    stored = {area: w.stored_bytes.get(area, 0.0) for area in ("landing", "archive", "tables")}
    puts = w.batches + w.batch_hours * f.s3_puts_per_batch_hour
    lists = hours_per_month * 3600 / f.sensor_tick_seconds * w.streams
    gets = w.batch_hours * f.s3_gets_per_batch_hour

    return [
        Meter("EventBridge", "PutEvents", "eventbridge_events", _count(put_events),
              f"{_fmt(w.events)} events x {chunks(w.avg_event_bytes)} chunk"),
        Meter("SQS", "requests", "sqs_requests", _count(sends + receives + deletes + idle),
              f"deliveries {_fmt(sends)}, receives {_fmt(receives)}, deletes {_fmt(deletes)}, "
              f"idle polls and depth checks {_fmt(idle)}"),
        Meter("Lambda", "requests", "lambda_requests", _count(invocations),
              f"{_fmt(invocations)} validate-batch invocations, {per_invocation:,.1f} events each"),
        Meter("Lambda", "duration", "lambda_gb_seconds", _amount(gb_seconds),
              f"{ms} ms x {f.lambda_memory_mb} MB per invocation"),
        Meter("DynamoDB", "write units", "dynamodb_write_units", _count(writes),
              f"{_fmt(valid)} valid events x {f.write_units_per_event:g}, dead letters "
              f"{_fmt(dead_letter_units)}, landing index {_fmt(w.batch_hours)}"),
        Meter("DynamoDB", "read units", "dynamodb_read_units", _count(reads),
              f"{_fmt(valid)} valid events x {f.read_units_per_event:g}"),
        Meter("DynamoDB", "storage", "dynamodb_storage", _amount(state_bytes / GB),
              ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(items.items())) + " items"),
        Meter("S3", "storage", "s3_storage", _amount(sum(stored.values()) / GB),
              ", ".join(f"{k} {v / GB:,.3f} GB" for k, v in stored.items())),
        Meter("S3", "PUT and LIST", "s3_put_requests", _count(puts + lists),
              f"puts {_fmt(puts)}, landing lists {_fmt(lists)}"),
        Meter("S3", "GET", "s3_get_requests", _count(gets), f"{_fmt(gets)} object reads"),
        *_services(f, hours_per_month),
        Meter("RDS Postgres", "instance", "rds_instance_hours", _amount(hours_per_month),
              "Dagster's run, event-log and schedule storage"),
        Meter("RDS Postgres", "storage", "rds_storage", _amount(f.rds_storage_gb),
              f"{f.rds_storage_gb:g} GB gp3"),
    ]  # fmt: skip


def _services(f: Footprint, hours_per_month: float) -> list[Meter]:
    """The always-on tasks: Fargate bills what each task reserves; on EC2 the tasks share as
    many instances as hold their vCPUs and memory."""
    vcpu = sum(t.vcpu for t in f.tasks)
    memory = sum(t.memory_gb for t in f.tasks)
    tasks = ", ".join(f"{t.name} {t.vcpu:g} vCPU/{t.memory_gb:g} GB" for t in f.tasks)
    if f.services_on == "fargate":
        return [
            Meter("ECS Fargate", "vCPU", "fargate_vcpu_hours", _amount(vcpu * hours_per_month),
                  tasks),
            Meter("ECS Fargate", "memory", "fargate_gb_hours",
                  _amount(memory * hours_per_month), tasks),
        ]  # fmt: skip
    count = max(
        1,
        math.ceil(vcpu / f.services_instance_vcpu - 1e-9),
        math.ceil(memory / f.services_instance_memory_gb - 1e-9),
    )
    return [
        Meter("ECS on EC2", "instances", "ec2_services_instance_hours",
              _amount(count * hours_per_month), f"{count} instance(s) for {tasks}"),
        Meter("ECS on EC2", "volumes", "ebs_storage", _amount(count * f.services_volume_gb),
              f"{count} x {f.services_volume_gb:g} GB gp3"),
    ]  # fmt: skip


def legacy_usage(workload: Workload, footprint: Footprint, hours_per_month: float = 730):
    """The legacy nightly batch on EC2 for the same events: one instance started each night
    for as long as Luigi takes over the day's events."""
    nights = hours_per_month / 24
    per_night = workload.events / nights
    seconds = max(footprint.legacy_min_seconds, per_night / footprint.legacy_events_per_second)
    hours = nights * math.ceil(seconds) / 3600
    return [
        Meter("EC2 (legacy)", "instance", "ec2_legacy_instance_hours", _amount(hours),
              f"{nights:.2f} nights x {math.ceil(seconds):,} s for {_fmt(per_night)} events"),
        Meter("EC2 (legacy)", "volume", "ebs_storage", _amount(footprint.legacy_volume_gb),
              f"{footprint.legacy_volume_gb:g} GB gp3"),
    ]  # fmt: skip


def price(meters: list[Meter], table: PriceTable) -> Bill:
    """Each meter's free tier and unit price applied, each charge rounded to the cent.

    A free tier is per account and meter, so two meters on one price would share it: refused.
    """
    keys = [m.price_key for m in meters]
    shared = sorted({k for k in keys if keys.count(k) > 1})
    if shared:
        raise ValueError(f"meters share a price (and so a free tier): {', '.join(shared)}")
    charges = []
    for meter in meters:
        entry = table[meter.price_key]
        free = min(meter.quantity, entry.free)
        billable = meter.quantity - free
        cost = (billable * entry.price / entry.per).quantize(CENT, ROUND_HALF_UP)
        charges.append(Charge(meter, free, billable, entry.unit_price, cost))
    return Bill(charges, table.currency)


@dataclass(frozen=True)
class Estimate:
    """The streaming platform's bill beside the legacy batch's for the same workload."""

    workload: Workload
    streaming: Bill
    legacy: Bill
    assumptions: list[str]

    @property
    def difference(self) -> Decimal:
        """Streaming minus legacy: positive when streaming costs more."""
        return self.streaming.total - self.legacy.total


def estimate(workload: Workload, footprint: Footprint, table: PriceTable) -> Estimate:
    hours = float(table.hours_per_month)
    return Estimate(
        workload=workload,
        streaming=price(usage(workload, footprint, hours), table),
        legacy=price(legacy_usage(workload, footprint, hours), table),
        assumptions=assumptions(footprint),
    )
