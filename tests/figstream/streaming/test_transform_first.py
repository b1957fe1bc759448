"""``_first_mask``, under dedupe by event id and the cross-board registry: the first row of
each key by an order, checked against a row-by-row model (nulls sort last, ties keep the
earlier row, null keys form one group)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from figstream.streaming import table_ops

keys = st.none() | st.sampled_from(["a", "b", "c", "é", ""])
times = st.none() | st.integers(0, 3)
ids = st.none() | st.sampled_from(["x", "y", "z"])


def model(rows: list[tuple]) -> list[bool]:
    def rank(i: int) -> tuple:
        _, time, event_id = rows[i]
        return (time is None, time or 0, event_id is None, event_id or "", i)

    first: dict = {}
    for i, (key, _, _) in enumerate(rows):
        if key not in first or rank(i) < rank(first[key]):
            first[key] = i
    return [first[key] == i for i, (key, _, _) in enumerate(rows)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, times, ids), max_size=30), st.integers(1, 4))
def test_first_mask_is_the_first_row_of_each_key(rows, chunks):
    table = pa.table(
        {
            "key": pa.array([r[0] for r in rows], pa.string()),
            "time": pa.array([r[1] for r in rows], pa.int64()),
            "event_id": pa.array([r[2] for r in rows], pa.string()),
        }
    )
    size = -(-len(rows) // chunks) or 1
    table = pa.concat_tables([table.slice(i, size) for i in range(0, max(len(rows), 1), size)])
    order = [("time", "ascending"), ("event_id", "ascending")]
    mask = table_ops._first_mask(table, "key", order)
    got = [True] * len(rows) if mask is None else mask.tolist()
    assert got == model(rows)
    kept = table_ops._first_per(table, "key", order)
    assert kept.to_pylist() == [r for r, first in zip(table.to_pylist(), got, strict=True) if first]
