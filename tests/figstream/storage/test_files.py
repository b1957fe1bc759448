"""The shared atomic file writer: all or nothing, durable, hidden while it writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from figstream.storage.files import atomic_file, write_atomic


def test_the_new_file_appears_whole_and_only_when_the_block_ends(tmp_path: Path):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    with atomic_file(target) as fh:
        fh.write(b"new\n")
        assert target.read_bytes() == b"old\n"
        (tmp,) = [p for p in tmp_path.iterdir() if p != target]
        assert tmp.name.startswith(".out.jsonl.") and tmp.suffix == ".tmp"
    assert target.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_block_that_raises_leaves_the_old_file_and_no_temporary_file(tmp_path: Path):
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_mode_sets_the_permission_bits(tmp_path: Path):
    target = tmp_path / "ledger.yaml"
    write_atomic(target, [b"a: 1\n"], mode=0o640)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    umask = os.umask(0)
    os.umask(umask)
    write_atomic(target, [b"a: 2\n"])
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("sync_directory", [True, False])
def test_the_directory_is_fsynced_unless_the_caller_does_it(tmp_path, monkeypatch, sync_directory):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(tmp_path / "x", [b"x"], sync_directory=sync_directory)
    assert synced == (["file", "dir"] if sync_directory else ["file"])


def test_make_parent_is_called_again_when_the_directory_vanishes(tmp_path: Path):
    target = tmp_path / "a" / "b"
    calls: list[Path] = []

    def make_parent(directory: Path) -> None:
        calls.append(directory)
        if len(calls) > 1:  # the first time, as if a concurrent delete pruned it meanwhile
            directory.mkdir(exist_ok=True)

    with atomic_file(target, make_parent=make_parent) as fh:
        fh.write(b"x")
    assert calls == [tmp_path / "a", tmp_path / "a"]
    assert target.read_bytes() == b"x"
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "missing" / "c"):
        pass
