"""The day rows' board index: (board, day), so a run's new rows of today sit together."""

from __future__ import annotations

import sqlite3

import pyarrow as pa

from figstream.storage.state import DAY_VERSIONED_SCHEMA, SqliteStateStore


def _rows(keys: list[tuple[str, str, str]]) -> pa.Table:
    t = 1_700_000_000_000_000
    out = []
    for job_id, day, board in keys:
        row = {name: None for name in DAY_VERSIONED_SCHEMA.names}
        row.update(
            job_id=job_id, day=day, board=board, status="active", last_event_time=t,
            last_event_id=f"e-{job_id}-{day}", version=0,
        )  # fmt: skip
        out.append(row)
    return pa.Table.from_pylist(out, schema=DAY_VERSIONED_SCHEMA)


def _indexes(path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'job_days'"
            )
        ]
        return {n: [r[2] for r in conn.execute(f"PRAGMA index_info({n})")] for n in names}


def test_a_boards_jobs_come_sorted_distinct_and_whole_over_many_days_and_batches(tmp_path):
    store = SqliteStateStore(tmp_path / "state.sqlite")
    days = ["2025-03-01", "2025-03-02", "2025-03-03"]
    # job ids in an order unlike their days', some on two boards over time
    keys = [(f"j{n:03d}", day, "hireloop" if n % 3 else "jobly") for n in range(50) for day in days]
    keys += [("j001", "2025-03-04", "jobly")]  # moved to jobly on a later day
    assert store.put_job_days(_rows(keys)) == []
    chunks = list(store.board_day_job_ids("jobly", batch_rows=7))
    assert all(len(c) <= 7 for c in chunks) and len(chunks) > 1
    got = [i for c in chunks for i in c]
    expected = sorted({j for j, _, b in keys if b == "jobly"})
    assert got == expected and "j001" in got
    assert [i for c in store.board_day_job_ids("nope") for i in c] == []
    assert _indexes(tmp_path / "state.sqlite")["job_days_board_day"] == ["board", "day"]


def test_a_file_with_the_old_board_index_gets_the_new_one_once(tmp_path):
    path = tmp_path / "state.sqlite"
    store = SqliteStateStore(path)
    assert store.put_job_days(_rows([("j1", "2025-03-01", "jobly")])) == []
    with sqlite3.connect(path) as conn:  # as an earlier version left it
        conn.execute("DROP INDEX job_days_board_day")
        conn.execute("CREATE INDEX job_days_board ON job_days (board)")
    assert "job_days_board" in _indexes(path)
    reopened = SqliteStateStore(path)
    indexes = _indexes(path)
    assert "job_days_board" not in indexes and indexes["job_days_board_day"] == ["board", "day"]
    assert [i for c in reopened.board_day_job_ids("jobly") for i in c] == ["j1"]
