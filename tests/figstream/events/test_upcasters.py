"""Upcasters chain a (type, version) up to the latest registered version.

Only v1 exists today, so the real chain is the identity. The mechanism is exercised with a
test-local registry (``UPCASTERS.extended``) holding a fake job.expired v2 (the reason
"expired" renamed "lapsed") and v3 (a new field derived from the reason), which must leave the
default registry untouched. Failure modes tried: a missing step, a gap in the versions, a step
whose output lacks a field, a double registration, an unknown version.
"""

from typing import Literal

import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from figstream.events.envelope import Envelope, parse_time
from figstream.events.schemas import (
    REGISTRY,
    JobExpiredV1,
    JobId,
    _Data,
)
from figstream.events.upcasters import (
    UPCASTERS,
    RegistryError,
    UpcastError,
    Upcasters,
    arrow_schema,
    check_registry,
)
from figstream.streaming.parse import parse_batch


class JobExpiredV2(_Data):
    job_id: JobId
    reason: Literal["filled", "lapsed", "withdrawn"]


class JobExpiredV3(_Data):
    job_id: JobId
    reason: Literal["filled", "lapsed", "withdrawn"]
    reopenable: bool


def _v1_to_v2(data: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    reason = pc.if_else(pc.equal(data["reason"], "expired"), "lapsed", data["reason"])
    return data.set_column(data.schema.get_field_index("reason"), "reason", reason)


def _v2_to_v3(data: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return data.append_column("reopenable", pc.not_equal(data["reason"], "filled"))


@pytest.fixture
def upcasters() -> Upcasters:
    fake = UPCASTERS.extended({("job.expired", 2): JobExpiredV2, ("job.expired", 3): JobExpiredV3})
    fake.register("job.expired", 1)(_v1_to_v2)
    fake.register("job.expired", 2)(_v2_to_v3)
    return fake


def expired_v1(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"job_id": j, "reason": r} for j, r in rows], schema=arrow_schema(JobExpiredV1)
    )


def test_the_real_registry_is_complete_and_v1_is_the_identity():
    check_registry()
    for event_type in {t for t, _ in REGISTRY}:
        assert UPCASTERS.latest(event_type) == max(v for t, v in REGISTRY if t == event_type)
    data = expired_v1([("a-1", "filled")])
    version, out = UPCASTERS.upcast("job.expired", 1, data)
    assert version == 1 and out.equals(data)


def test_the_chain_reaches_the_latest_version(upcasters):
    upcasters.check()
    data = expired_v1([("a-1", "filled"), ("a-2", "expired"), ("a-3", "withdrawn")])
    version, out = upcasters.upcast("job.expired", 1, data)
    assert version == 3
    assert out.schema == arrow_schema(JobExpiredV3)
    assert out.to_pylist() == [
        {"job_id": "a-1", "reason": "filled", "reopenable": False},
        {"job_id": "a-2", "reason": "lapsed", "reopenable": True},
        {"job_id": "a-3", "reason": "withdrawn", "reopenable": True},
    ]
    # From the middle of the chain only the remaining step runs.
    middle = pa.Table.from_pylist(
        [{"job_id": "a-4", "reason": "lapsed"}], schema=arrow_schema(JobExpiredV2)
    )
    assert upcasters.upcast("job.expired", 2, middle)[1].column("reopenable").to_pylist() == [True]


def test_extending_leaves_the_default_registry_alone(upcasters):
    assert UPCASTERS.latest("job.expired") == 1
    assert ("job.expired", 1) not in UPCASTERS.steps
    assert upcasters.registry is not UPCASTERS.registry
    assert set(UPCASTERS.registry) == set(REGISTRY)


def test_check_refuses_a_version_without_upcaster():
    fake = UPCASTERS.extended({("job.expired", 2): JobExpiredV2})
    with pytest.raises(RegistryError, match=r"job.expired v1 has no upcaster to v2"):
        check_registry(fake)
    with pytest.raises(UpcastError, match="no upcaster"):
        fake.upcast("job.expired", 1, expired_v1([("a-1", "filled")]))


def test_check_refuses_a_gap_in_versions():
    fake = UPCASTERS.extended({("job.expired", 3): JobExpiredV3})
    fake.register("job.expired", 1)(_v1_to_v2)
    with pytest.raises(RegistryError, match=r"v2 is not registered \(gap\)"):
        fake.check()


def test_a_step_that_drops_a_field_fails_loudly():
    fake = UPCASTERS.extended({("job.expired", 2): JobExpiredV2})
    fake.register("job.expired", 1)(lambda data: data.drop_columns(["reason"]))
    with pytest.raises(UpcastError, match="lacks fields"):
        fake.upcast("job.expired", 1, expired_v1([("a-1", "filled")]))


def test_registering_twice_and_unknown_versions_are_refused(upcasters):
    with pytest.raises(ValueError, match="already has an upcaster"):
        upcasters.register("job.expired", 1)(_v1_to_v2)
    with pytest.raises(UpcastError):
        upcasters.upcast("job.expired", 7, expired_v1([]))
    with pytest.raises(UpcastError):
        upcasters.latest("job.deleted")


def test_a_single_envelope_is_upcast(upcasters):
    envelope = Envelope(
        "e-1",
        "job.expired",
        "hireloop",
        1,
        parse_time("2026-11-20T10:00:00Z"),
        {"job_id": "hireloop-1", "reason": "expired"},
    )
    assert UPCASTERS.upcast_envelope(envelope) is envelope
    upcast = upcasters.upcast_envelope(envelope)
    assert upcast.version == 3
    assert upcast.data == {"job_id": "hireloop-1", "reason": "lapsed", "reopenable": True}


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z]{1,8}-[0-9]{1,4}", fullmatch=True),
            st.sampled_from(["filled", "expired", "withdrawn"]),
        ),
        max_size=30,
    )
)
def test_the_chain_equals_the_steps_applied_row_by_row(rows):
    fake = UPCASTERS.extended({("job.expired", 2): JobExpiredV2, ("job.expired", 3): JobExpiredV3})
    fake.register("job.expired", 1)(_v1_to_v2)
    fake.register("job.expired", 2)(_v2_to_v3)
    version, out = fake.upcast("job.expired", 1, expired_v1(rows))
    expected = []
    for job_id, reason in rows:
        reason = "lapsed" if reason == "expired" else reason
        expected.append({"job_id": job_id, "reason": reason, "reopenable": reason != "filled"})
    assert version == 3 and out.to_pylist() == expected


def test_parse_batch_hands_consumers_the_latest_version(upcasters):
    line = {
        "id": "e-1",
        "type": "job.expired",
        "source": "hireloop",
        "version": 1,
        "time": "2026-11-20T10:00:00Z",
        "data": {"job_id": "hireloop-1", "reason": "expired"},
    }
    odd_time = {**line, "id": "e-2", "time": "2026-11-20T11:00:00+01:00"}  # the slow path
    data = b"\n".join(orjson.dumps(r) for r in (line, odd_time))
    valid = parse_batch(data, "b-1", upcasters).valid
    assert valid["version"].to_pylist() == [3, 3]
    assert valid["reason"].to_pylist() == ["lapsed", "lapsed"]
    assert parse_batch(data, "b-1").valid["version"].to_pylist() == [1, 1]
