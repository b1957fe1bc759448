"""The landing cursor's reconciliation, and the slice of it that compares the landing listing
with the landing index (``figstream.streaming.landing_index.reconcile_slice``).

Bad inputs tried: a batch planted below the listing start after the cursor moved past it, a
sweep cut short by its key limit and by its cap on late batches, batches above the sweep's end,
a cursor with nothing taken yet, and reconciliation turned off (0)."""

import datetime as dt
import json
from dataclasses import replace

from figstream.ingest.cursor import LandingCursor
from figstream.ingest.landing import batch_key
from figstream.streaming import landing_index
from figstream.streaming.stores import Stores

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
LOOKBACK = dt.timedelta(minutes=2)


def _land(stores: Stores, arrival: dt.datetime, seq: int) -> str:
    key = batch_key(arrival, "test", seq)
    record = {
        "id": f"e-{seq}",
        "type": "job.expired",
        "source": "hireloop",
        "version": 1,
        "time": arrival.isoformat(),
        "data": {"job_id": f"hireloop-{seq:07d}", "reason": "filled"},
    }
    stores.objects.put(key, json.dumps(record).encode())
    return key


def test_a_slice_finds_only_the_batches_the_index_never_saw(tmp_path):
    stores = Stores.local(tmp_path, "2026-11-01-00:00")
    seen = [_land(stores, T0 + dt.timedelta(minutes=m), m) for m in range(10)]
    landing_index.index_landing(stores, "postings", seen)
    late = _land(stores, T0 + dt.timedelta(minutes=3, seconds=30), 100)
    above = _land(stores, T0 + dt.timedelta(minutes=30), 101)  # the sensor's own listing's
    cursor = LandingCursor(watermark=above)
    sweep = landing_index.reconcile_slice(
        stores, "postings", cursor.reconcile_from(2), cursor.start_after(LOOKBACK),
        limit=1000, max_found=50,
    )  # fmt: skip
    assert sweep == landing_index.Sweep([late], "")
    # Indexed, it is seen: the next sweep finds nothing.
    landing_index.index_landing(stores, "postings", [late])
    again = landing_index.reconcile_slice(
        stores, "postings", "", cursor.start_after(LOOKBACK), limit=1000, max_found=50
    )
    assert again == landing_index.Sweep([], "")


def test_a_slice_is_bounded_and_resumes_where_it_stopped(tmp_path):
    stores = Stores.local(tmp_path, "2026-11-01-00:00")
    keys = [_land(stores, T0 + dt.timedelta(seconds=s), s) for s in range(7)]
    end = batch_key(T0 + dt.timedelta(hours=1), "test", 999)
    first = landing_index.reconcile_slice(stores, "postings", "", end, limit=3, max_found=50)
    assert first == landing_index.Sweep(keys[:3], keys[2])
    capped = landing_index.reconcile_slice(
        stores, "postings", first.resume_after, end, limit=3, max_found=2
    )
    assert capped == landing_index.Sweep(keys[3:5], keys[4])
    last = landing_index.reconcile_slice(
        stores, "postings", capped.resume_after, end, limit=3, max_found=50
    )
    assert last == landing_index.Sweep(keys[5:], "")


def test_the_sweep_is_due_every_interval_and_starts_days_back():
    watermark = batch_key(T0, "test", 1)
    cursor = LandingCursor(watermark=watermark, reconciled_at=1000.0)
    assert not cursor.reconcile_due(1299.0, 300) and cursor.reconcile_due(1300.0, 300)
    assert not cursor.reconcile_due(10**9, 0)  # 0 turns it off
    assert not LandingCursor().reconcile_due(10**9, 300)  # nothing taken: the listing covers all
    assert cursor.reconcile_from(2) == "landing/2026-11-01/20261101T000000000000Z"
    assert cursor.reconcile_from(1) == "landing/2026-11-02/20261102T000000000000Z"
    # A slice that stops keeps the sweep going on the next tick, with when it began.
    going = cursor.reconciled(["landing/x"], "landing/2026-11-01/resume", 2000.0)
    assert going.reconcile_due(2001.0, 300) and going.reconciled_at == 2000.0
    assert going.reconcile_from(2) == "landing/2026-11-01/resume"
    done = going.reconciled([], "", 2100.0)
    assert done.reconciled_at == 2000.0 and done.late == {"landing/x"}
    assert not done.reconcile_due(2200.0, 300)
    assert LandingCursor.loads(done.dumps()) == done


def test_the_cursor_writes_the_sweep_only_while_it_holds_something():
    idle = json.loads(LandingCursor(watermark="w", reconciled_at=5.0).dumps())
    assert "late" not in idle and "reconcile_after" not in idle
    # A cursor written before the reconciliation existed still reads.
    old = LandingCursor.loads(json.dumps({"watermark": "w", "recent": []}))
    assert old.reconciled_at == 0.0 and not old.late and not old.reconcile_after


def _window_keys(n: int) -> list[str]:
    """``n`` live producer keys a second apart, ending at T0 + 119 s (all within the window)."""
    return [
        batch_key(T0 + dt.timedelta(seconds=119 - n + i), f"producer-{i % 4}", i) for i in range(n)
    ]


def _never_asked(keys: list[str]) -> set[str]:
    raise AssertionError(f"the index was read for {len(keys)} keys")


def test_the_cursor_stays_short_under_load_and_knows_its_window_again():
    keys = _window_keys(120)
    cursor = LandingCursor().advance(keys, LOOKBACK)
    cursor.days_due |= {"2026-11-02"}
    cursor = replace(cursor, days_requested_at=1764763200.123456, reconciled_at=1764763201.5)
    raw = cursor.dumps()
    assert len(raw) <= 300, raw
    assert not any(k in raw for k in keys[:-1])  # only the watermark is written out
    loaded = LandingCursor.loads(raw)
    # The same window listed again: known from the digest, without reading the index.
    assert loaded.start_after(LOOKBACK) < keys[0]
    resolved = loaded.resolve(keys, LOOKBACK, _never_asked)
    assert resolved.recent == set(keys) and resolved.new_keys(keys) == []
    assert LandingCursor.loads(resolved.dumps()).window == loaded.window


def test_a_batch_visible_late_in_the_window_is_new_and_the_index_tells_which():
    keys = _window_keys(30)
    cursor = LandingCursor.loads(LandingCursor().advance(keys, LOOKBACK).dumps())
    late = batch_key(T0 + dt.timedelta(seconds=100, microseconds=1), "slow", 7)
    listed = sorted([*keys, late])
    asked = []

    def indexed(window: list[str]) -> set[str]:
        asked.append(window)
        return set(keys)  # every taken key is indexed; the late one is not

    resolved = cursor.resolve(listed, LOOKBACK, indexed)
    assert asked == [listed] and resolved.new_keys(listed) == [late]
    after = resolved.advance([late], LOOKBACK)
    assert LandingCursor.loads(after.dumps()).resolve(listed, LOOKBACK, _never_asked).recent == {
        *keys,
        late,
    }


def test_a_tick_that_indexed_batches_and_died_has_them_taken_again():
    keys = _window_keys(30)
    cursor = LandingCursor.loads(LandingCursor().advance(keys, LOOKBACK).dumps())
    late = batch_key(T0 + dt.timedelta(seconds=100, microseconds=1), "slow", 7)
    listed = sorted([*keys, late])
    # The dead tick indexed the late batch but its cursor was never saved: the index alone
    # would call it taken. The digest does not match: the window is taken again.
    resolved = cursor.resolve(listed, LOOKBACK, lambda window: set(window))
    assert late in resolved.new_keys(listed)
    assert set(resolved.new_keys(listed)) == set(listed) - {cursor.watermark}


def test_a_cursor_of_the_previous_version_loads_and_is_converted():
    keys = _window_keys(40)
    old = json.dumps({
        "watermark": keys[-1], "recent": keys, "days_due": ["2026-11-02"],
        "days_requested_at": 12.5, "reconciled_at": 3.0, "late": ["landing/x"],
    })  # fmt: skip
    cursor = LandingCursor.loads(old)
    assert cursor.watermark == keys[-1] and cursor.recent == set(keys)
    assert cursor.days_due == {"2026-11-02"} and cursor.late == {"landing/x"}
    new = LandingCursor.loads(cursor.dumps())
    assert "recent" not in json.loads(cursor.dumps()) and len(cursor.dumps()) < len(old) / 4
    # What the old cursor had taken is still taken; a key beyond it is new.
    beyond = batch_key(T0 + dt.timedelta(seconds=200), "p", 1)
    resolved = new.resolve([*keys, beyond], LOOKBACK, _never_asked)
    assert resolved.new_keys([*keys, beyond]) == [beyond]


def test_history_owed_is_one_span_and_is_used_up_a_chunk_at_a_time():
    a, b = _window_keys(2)
    cursor = LandingCursor().owe_history(["2026-11-01-05:00", "2026-11-01-02:00"], [b])
    cursor = cursor.owe_history(["2026-11-01-09:00"], [a])
    first, last, lo, hi = cursor.history
    assert (first, last) == ("2026-11-01-02:00", "2026-11-01-09:00")
    assert (lo, hi) == (a.rsplit("/", 1)[1].removesuffix(".jsonl"), b.split("/")[-1][:-6])
    assert cursor.history_after("2026-11-01-04:00").history[0] == "2026-11-01-05:00"
    assert cursor.history_after("2026-11-01-09:00").history == []
    assert LandingCursor.loads(cursor.dumps()).history == cursor.history
