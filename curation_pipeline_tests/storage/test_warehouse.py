"""Atomic, replaceable per-shard tables; keys never escape the warehouse."""

import pandas as pd
import pytest

from curation_pipeline.shards.keys import InvalidShardName
from curation_pipeline.storage.warehouse import Warehouse


def test_write_replace_and_read(tmp_path):
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"], "n": [1]}), metadata={"scorers": "x@1"})
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["b", "c"], "n": [2, 3]}))
    assert wh.read_table("pairs", "s1")["key"].tolist() == ["b", "c"]
    assert wh.shards("pairs") == ["s1"]
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    path = wh.table_path("pairs", "s1")
    with pytest.raises(RuntimeError):
        with wh.atomic_open(path) as handle:
            handle.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert wh.read_table("pairs", "s1")["key"].tolist() == ["a"]
    assert list(tmp_path.rglob(".tmp-*")) == []


@pytest.mark.parametrize("shard", ["../outside", "a/b", "x y"])
def test_keys_cannot_write_outside(tmp_path, shard):
    wh = Warehouse(str(tmp_path / "wh"))
    with pytest.raises(InvalidShardName):
        wh.write_table("pairs", shard, pd.DataFrame({"key": ["a"]}))
    with pytest.raises(InvalidShardName):
        wh.curated_path(shard)


def test_unknown_table_and_missing_partition_are_clear(tmp_path):
    wh = Warehouse(str(tmp_path))
    with pytest.raises(ValueError, match="unknown warehouse table"):
        wh.table_path("secrets", "s1")
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        wh.read_table("pairs", "s1")


@pytest.mark.parametrize("folder", ["run[2024]", "run*", "run?1", "a=b"])
def test_glob_characters_in_the_warehouse_path_are_characters(tmp_path, folder):
    """A sibling that a pattern would match must not show up, and the real files must."""
    wh = Warehouse(str(tmp_path / folder / "wh"))
    other = Warehouse(str(tmp_path / "run2" / "wh"))  # what run* or run?1-like patterns could reach
    other.write_table("pairs", "elsewhere", pd.DataFrame({"key": ["z"]}))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    assert wh.shards("pairs") == ["s1"]
    assert list(wh.shard_files("pairs")) == ["s1"]
    assert wh.read_all("pairs")["key"].tolist() == ["a"]


def test_orphans_under_a_path_with_glob_characters_are_found(tmp_path, monkeypatch):
    import time

    import curation_pipeline.storage.warehouse as warehouse

    wh = Warehouse(str(tmp_path / "run[1]" / "wh"))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    orphan = tmp_path / "run[1]" / "wh" / "pairs" / f".tmp-deadbeef-123-{'0' * 32}-s1.parquet.partial"
    orphan.write_bytes(b"left by a writer on another host")
    later = time.time() + 2 * warehouse.ORPHAN_AGE_S
    monkeypatch.setattr(warehouse.time, "time", lambda: later)
    assert [p.rsplit("/", 1)[-1] for p in wh.clean_temp_files()] == [orphan.name]
    assert not orphan.exists()


def test_a_failed_fsync_fails_the_write_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """Network and FUSE mounts report a failed write-back at fsync: nothing may be committed then."""
    import errno
    import os

    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        wh.write_table("pairs", "s1", pd.DataFrame({"key": ["b"]}))
    monkeypatch.undo()
    assert wh.read_table("pairs", "s1")["key"].tolist() == ["a"]
    assert list(tmp_path.rglob(".tmp-*")) == []

    def unsupported(fd):
        raise OSError(errno.EINVAL, "Invalid argument")  # a file system that cannot sync: let be

    monkeypatch.setattr(os, "fsync", unsupported)
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["c"]}))
    assert wh.read_table("pairs", "s1")["key"].tolist() == ["c"]
