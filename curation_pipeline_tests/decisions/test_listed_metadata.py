"""The settle sensor's read of every shard's decisions metadata: a file is read again only once replaced."""

import os
import time
from collections import OrderedDict

import pandas as pd
import pytest

from curation_pipeline.decisions import dedup
from curation_pipeline.decisions.dedup import listed_metadata
from curation_pipeline.storage.warehouse import Warehouse

TABLE = "caption_decisions"


@pytest.fixture
def wh(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup, "_FOOTERS", OrderedDict())  # this test's process cache
    return Warehouse(str(tmp_path / "warehouse"))


def _write(wh, shard, digest, age_s=10.0):
    """A decisions file, last modified ``age_s`` ago (a file modified within ``SETTLED_S`` is not kept)."""
    wh.write_table(TABLE, shard, pd.DataFrame({"key": ["1"] * len(digest)}), {"digest": digest})
    path = wh.table_path(TABLE, shard)
    os.utime(path, (time.time() - age_s,) * 2)


@pytest.fixture
def reads(monkeypatch):
    done = []
    original = Warehouse.table_metadata
    monkeypatch.setattr(Warehouse, "table_metadata",
                        lambda self, table, shard: done.append(shard) or original(self, table, shard))
    return done


def _digests(wh, files=None):
    found = listed_metadata(wh, TABLE, wh.shard_files(TABLE) if files is None else files)
    return {shard: m["digest"] if isinstance(m, dict) else type(m) for shard, m in found.items()}


def test_each_file_is_read_once_until_replaced(wh, reads):
    for shard in ("a", "b", "c"):
        _write(wh, shard, f"{shard}-1")
    assert _digests(wh) == {"a": "a-1", "b": "b-1", "c": "c-1"} and sorted(reads) == ["a", "b", "c"]
    reads.clear()
    again = listed_metadata(wh, TABLE, wh.shard_files(TABLE))
    assert {s: m["digest"] for s, m in again.items()} == {"a": "a-1", "b": "b-1", "c": "c-1"} and reads == []
    again["a"]["digest"] = "changed by a caller"  # a copy: the cache keeps what the file says
    assert _digests(wh)["a"] == "a-1" and reads == []
    _write(wh, "b", "b-22")  # replaced: another size, time and inode
    assert _digests(wh)["b"] == "b-22" and reads == ["b"]
    reads.clear()
    files = wh.shard_files(TABLE)
    path_c = wh.table_path(TABLE, "c")
    with open(path_c, "wb") as handle:  # damaged since the listing
        handle.write(b"not parquet")
    os.utime(path_c, (time.time() - 10,) * 2)
    os.unlink(wh.table_path(TABLE, "a"))  # gone since the listing
    files["a"] = {**files["a"], "ino": -1}  # (listed as another version than the one read)
    assert _digests(wh, files) == {"a": FileNotFoundError, "b": "b-22", "c": "c-1"}  # c: as listed, read before
    reads.clear()
    for _ in range(2):  # the listing now shows c's new version; an error is never kept: read again
        assert issubclass(_digests(wh)["c"], (OSError, ValueError))
    assert reads == ["c", "c"]


def test_a_file_modified_within_a_clock_tick_is_read_again(wh, reads):
    """On a file system of whole seconds, two rewrites in one can bring back the size, time and inode."""
    _write(wh, "a", "a-1", age_s=0.0)
    assert _digests(wh) == {"a": "a-1"}
    assert _digests(wh) == {"a": "a-1"} and reads == ["a", "a"]
    os.utime(wh.table_path(TABLE, "a"), (time.time() - 10,) * 2)  # settled: kept from now on
    _digests(wh)
    _digests(wh)
    assert reads == ["a", "a", "a"]


def test_the_least_recently_used_files_are_dropped_first(wh, reads, monkeypatch):
    monkeypatch.setattr(dedup, "FOOTERS_KEPT", 2)
    for shard in ("a", "b", "c"):
        _write(wh, shard, shard)
    files = wh.shard_files(TABLE)
    listed_metadata(wh, TABLE, {s: files[s] for s in ("a", "b")})
    listed_metadata(wh, TABLE, {"a": files["a"]})  # a used again: b is now the least recently used
    listed_metadata(wh, TABLE, {"c": files["c"]})
    reads.clear()
    listed_metadata(wh, TABLE, files)
    assert reads == ["b"]
    assert list(dedup._FOOTERS) == [wh.table_path(TABLE, "c"), wh.table_path(TABLE, "b")]  # a: least recent
