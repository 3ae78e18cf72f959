import errno
import os

import pytest
import webdataset as wds

from synthvlp.errors import UserError
from synthvlp.store import Ledger, atomic_open, read_shard, tar_bytes, write_shard


def _samples(n: int):
    return [{"__key__": f"s{i:08d}", "png": bytes([i]) * 10, "txt": f"caption {i}".encode(), "json": b"{}"} for i in range(n)]


def test_shard_round_trip_through_webdataset(tmp_path):
    path = tmp_path / "shard-000000.tar"
    write_shard(path, _samples(5))
    loaded = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in loaded] == [f"s{i:08d}" for i in range(5)]
    assert loaded[3]["txt"] == b"caption 3"
    assert [s["__key__"] for s in read_shard(path)] == [s["__key__"] for s in loaded]


def test_tar_bytes_are_deterministic():
    assert tar_bytes({"a.txt": b"1", "b.txt": b"2"}) == tar_bytes({"a.txt": b"1", "b.txt": b"2"})


def test_keys_with_dots_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must not contain"):
        write_shard(tmp_path / "x.tar", [{"__key__": "a.b", "txt": b""}])


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write(b"partial")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_disk_full_is_a_named_user_error(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="out.bin: no space left on device; finished work is kept"):
        with atomic_open(tmp_path / "out.bin") as handle:
            handle.write(b"x")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_ledger_detects_truncation_corruption_and_changes(tmp_path):
    ledger = Ledger(tmp_path, tmp_path / ".state")
    source, output = tmp_path / "in.txt", tmp_path / "out.tar"
    source.write_text("input")
    write_shard(output, _samples(3))
    ledger.commit("images", "unit-000000", "fp", [source], [output])
    assert ledger.check("images", "unit-000000", "fp", [source]) == (True, "")
    assert ledger.check("images", "unit-000000", "other", [source]) == (False, "its settings changed")
    original = output.read_bytes()
    output.write_bytes(original[:-100])
    assert "truncated" in ledger.check("images", "unit-000000", "fp", [source])[1]
    output.write_bytes(original[:-1] + b"\x01")
    assert "corrupt" in ledger.check("images", "unit-000000", "fp", [source])[1]
    output.write_bytes(original)
    source.write_text("changed")
    assert "input in.txt changed" in ledger.check("images", "unit-000000", "fp", [source])[1]
    assert ledger.check("images", "unit-000001", "fp", []) == (False, "")
