"""Parsing in worker processes (``transform.parse_in``) gives what parsing in-process gives.

One spawned pool serves the module: starting workers is the slow part.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import orjson
import pyarrow as pa
import pytest

from figstream import transform
from figstream.generate import generate
from figstream.transform import parse_batches, parse_in


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


@pytest.fixture(scope="module")
def passes(tmp_path_factory) -> list[list[tuple[str, bytes]]]:
    root = tmp_path_factory.mktemp("day")
    generate(root, date(2026, 11, 20), days=1, events_per_day=2000, seed=7, bad_rate=0.05)
    batches = [(p.stem, p.read_bytes()) for p in sorted((root / "landing").rglob("*.jsonl"))]
    odd = [
        b"",
        b"   ",
        b'{"id":"e-5","type":"job.exp',
        b"\xef\xbb\xbf" + orjson.dumps({"id": "e-6", "type": "job.expired"}),
        b"[1, 2]",
    ]
    batches.append(("odd", b"\r\n".join(odd)))
    return [batches[i : i + 3] for i in range(0, len(batches), 3)] + [[]]


def _leftovers() -> set[str]:
    """Shared-memory files of this process and its workers (other test runs may share the
    directory)."""
    pids = {os.getpid(), *(child.pid for child in multiprocessing.active_children())}
    return {
        name
        for name in os.listdir(transform._SHARED_DIR)
        if name.startswith("figstream-") and int(name.split("-")[2]) in pids
    }


def test_worker_processes_give_what_one_process_gives(pool, passes):
    together = list(parse_in(pool, passes, ahead=2))
    assert len(together) == len(passes)
    for got, batches in zip(together, passes, strict=True):
        want = parse_batches(batches)
        assert got.batch_ids == want.batch_ids
        assert got.records == want.records
        assert got.valid.schema == want.valid.schema and got.valid.equals(want.valid)
        assert got.rejected.schema == want.rejected.schema and got.rejected.equals(want.rejected)
    assert sum(p.rejected.num_rows for p in together) > 0
    assert not _leftovers()


def test_an_abandoned_iteration_leaves_nothing_in_shared_memory(pool, passes):
    results = parse_in(pool, passes, ahead=3)
    first = next(results)
    results.close()
    assert first.batch_ids == tuple(batch_id for batch_id, _ in passes[0])
    assert not _leftovers()


def test_a_failing_worker_raises_and_leaves_nothing_behind(pool, passes):
    broken = [passes[0], [(123, b"")], *passes[1:]]  # a batch id that is not a string
    results = parse_in(pool, broken, ahead=4)
    assert next(results).batch_ids == tuple(batch_id for batch_id, _ in passes[0])
    with pytest.raises(pa.ArrowTypeError):
        next(results)
    assert not _leftovers()
