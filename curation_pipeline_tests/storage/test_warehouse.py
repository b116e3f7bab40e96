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
