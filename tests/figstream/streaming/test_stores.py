"""Arrow's allocator: glibc's heap where it can be trimmed, unless the environment names one."""

from __future__ import annotations

import pyarrow as pa
import pytest

from figstream.streaming import stores


@pytest.fixture
def pool():
    """Restore the process's Arrow pool after the test changes it."""
    previous = pa.default_memory_pool()
    yield
    pa.set_memory_pool(previous)


def test_arrow_allocates_from_glibc_where_it_is_trimmed(
    pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if stores._MALLOC_TRIM is None:
        pytest.skip("no malloc_trim in this C library")
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    stores._arrow_on_glibc()
    assert pa.default_memory_pool().backend_name == "system"
    stores.release_arrow_memory()  # trims the heap Arrow's buffers now come from


def test_a_pool_named_in_the_environment_is_kept(pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    stores._arrow_on_glibc()
    assert pa.default_memory_pool().backend_name == "mimalloc"
