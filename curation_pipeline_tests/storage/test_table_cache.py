"""A table read again, or read after this process wrote it, comes from memory only at the version on disk,
and exactly as a read of the file gives it."""

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation_pipeline.storage.table_cache import TableCache
from curation_pipeline.storage.warehouse import RECENT_TABLES, Warehouse


def _frame() -> pd.DataFrame:
    """A column of every kind the pipeline's tables hold, with missing values, and some Parquet reads
    back in another Arrow type than written (a vector's list, timestamp[s], a categorical's indices)."""
    return pd.DataFrame({
        "shard": ["s1"] * 3, "key": ["a", "b", "c"], "caption": ["x", None, "ünï"],
        "n": [1, 2, 3], "width": [1.0, None, 3.0], "ok": [True, False, None],
        "dup_caption_emb": [[0.5, 1.5], None, [2.0, -1.0]],  # declared a vector (list<float32>)
        "at": pd.Series(pd.to_datetime(["2024-01-01", None, "2024-01-03"], utc=True)).astype("datetime64[s, UTC]"),
        "kind": pd.Categorical(["p", "q", "p"]), "raw": [b"\x00", b"", None]})


class _Reads:
    """Counts the Parquet files the warehouse opens for their rows."""

    def __init__(self, monkeypatch):
        self.count, real = 0, pq.ParquetFile

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(pq, "ParquetFile", counted)


def _fresh(wh: Warehouse, table: str, shard: str, **kwargs):
    RECENT_TABLES.clear()
    return wh.read_table_versioned(table, shard, **kwargs)


@pytest.mark.parametrize("table", ["quality_scores", "pairs"])
def test_a_table_written_here_reads_back_from_memory_as_the_file_gives_it(tmp_path, monkeypatch, table):
    wh = Warehouse(str(tmp_path))
    wh.write_table(table, "s1", _frame(), metadata={"scorers": "x@1"})
    reads = _Reads(monkeypatch)
    hit, hit_meta, hit_version = wh.read_table_versioned(table, "s1")
    subset = wh.read_table(table, "s1", columns=["width", "key"], optional=["gone", "dup_caption_emb"])
    assert reads.count == 0
    fresh, fresh_meta, fresh_version = _fresh(wh, table, "s1")
    assert reads.count == 1
    pd.testing.assert_frame_equal(hit, fresh, check_exact=True)
    assert (hit_meta, hit_version) == (fresh_meta, fresh_version) and fresh_meta["scorers"] == "x@1"
    assert str(hit["at"].dtype) == "datetime64[ms, UTC]" and hit["kind"].dtype == "category"
    pd.testing.assert_frame_equal(subset, _fresh(wh, table, "s1", columns=["width", "key"],
                                                 optional=["gone", "dup_caption_emb"])[0], check_exact=True)
    assert list(subset.columns) == ["width", "key", "dup_caption_emb"]


def test_a_second_read_comes_from_memory_and_a_missing_column_still_raises(tmp_path, monkeypatch):
    wh = Warehouse(str(tmp_path))
    (tmp_path / "pairs").mkdir()  # a file this process did not write
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({"key": ["a"], "n": [1]})), wh.table_path("pairs", "s1"))
    reads = _Reads(monkeypatch)
    first = wh.read_table("pairs", "s1", columns=["key"])  # a part: read, not kept
    again = wh.read_table("pairs", "s1")  # the whole table: read and kept
    third = wh.read_table("pairs", "s1", columns=["n", "n"], optional=["key", "n"])
    assert reads.count == 2 and list(first.columns) == ["key"] and list(again.columns) == ["key", "n"]
    assert list(third.columns) == ["n", "key"] and third["n"].tolist() == [1]  # each column once, as a file read
    with pytest.raises(pa.ArrowInvalid, match="gone"):  # as a read of the file raises
        wh.read_table("pairs", "s1", columns=["key", "gone"], optional=["n"])
    assert wh.table_metadata("pairs", "s1") == {} and reads.count == 3


def test_a_file_another_writer_replaced_is_read_again(warehouse_root):
    wh = Warehouse(warehouse_root)
    wh.write_table("caption_decisions", "s1", pd.DataFrame({"key": ["old"]}), metadata={"note": "old"})
    assert wh.read_table("caption_decisions", "s1")["key"].tolist() == ["old"]  # now kept on either store
    # another process's write: a new file renamed into place (here, as that process's warehouse does it)
    other = pd.DataFrame({"key": ["new", "newer"]})
    with wh.atomic_open(wh.table_path("caption_decisions", "s1")) as handle:
        pq.write_table(pa.Table.from_pandas(other, preserve_index=False), handle)
    if wh.is_local:  # asked first, before any read of the new file
        assert "note" not in wh.table_metadata("caption_decisions", "s1")
    rows, metadata = wh.read_table_and_metadata("caption_decisions", "s1")
    assert rows["key"].tolist() == ["new", "newer"] and "note" not in metadata
    wh.fs.rm_file(wh.table_path("caption_decisions", "s1"))
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        wh.read_table("caption_decisions", "s1")


def test_a_file_changed_in_place_is_read_again(tmp_path):
    """Not how the warehouse writes; still, a new size or modification time is a new version."""
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    path = wh.table_path("pairs", "s1")
    with open(path, "r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"junkjunk")  # the footer's length and magic: the same size
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(pa.ArrowInvalid):
        wh.read_table("pairs", "s1")


def test_the_cache_keeps_the_latest_version_within_its_bytes():
    cache = TableCache(limit=3000)
    tables = {name: pa.table({"x": pa.array(range(125), pa.int64())}) for name in "abc"}  # 1000 bytes each
    for name, table in tables.items():
        cache.put(name, "v1", table)
    assert cache.size == 3000 and cache.get("a", "v1") is tables["a"]
    cache.put("d", "v1", tables["b"])  # over the limit: the least recently used ("b") goes
    assert cache.get("b", "v1") is None and cache.get("a", "v1") is tables["a"] and cache.size == 3000
    assert cache.get("a", "v2") is None  # another version is not this one
    cache.put("a", "v2", tables["c"])  # one version a key: the new one replaces it
    assert cache.get("a", "v1") is None and cache.get("a", "v2") is tables["c"] and cache.size == 3000
    assert cache.get("d", "v1") is tables["b"] and cache.get("c", "v1") is tables["c"]  # nothing else dropped
    cache.put("e", "v1", pa.table({"x": pa.array(range(500), pa.int64())}))  # larger than the limit: not kept
    assert cache.get("e", "v1") is None and cache.size == 3000


def test_a_read_of_every_shard_keeps_none(tmp_path, monkeypatch):
    """The evaluation's pool-wide reads read each table once: memory is for a shard's steps."""
    wh = Warehouse(str(tmp_path))
    (tmp_path / "final_captions").mkdir()
    for shard in ("s1", "s2"):  # files this process did not write
        pq.write_table(pa.Table.from_pandas(pd.DataFrame({"key": [shard]})), wh.table_path("final_captions", shard))
    RECENT_TABLES.clear()
    assert wh.read_all("final_captions")["key"].tolist() == ["s1", "s2"]
    assert RECENT_TABLES.size == 0
    reads = _Reads(monkeypatch)
    wh.read_table("final_captions", "s1")
    wh.read_table("final_captions", "s1")
    assert reads.count == 1 and RECENT_TABLES.size > 0


def test_a_file_written_again_on_the_freed_inode_at_the_same_size_and_time_is_read_again(tmp_path):
    """Two writes of another process after this one's: the second file often gets the first's inode back
    (ext4 reuses it at once); of the same size, with its modification time set back to the first's, only the
    inode's change time (which setting it sets) tells it from the file written here."""
    wh = Warehouse(str(tmp_path))
    path = wh.table_path("caption_decisions", "s1")
    wh.write_table("caption_decisions", "s1", pd.DataFrame({"key": ["keep"]}))
    first = os.stat(path)
    time.sleep(0.02)  # past a coarse timestamp tick (1-10 ms before Linux 6.13): the utime below sets another
    other = Warehouse(str(tmp_path / "other"))  # the bytes another process's warehouse writes
    written = [open(other.write_table("caption_decisions", shard, pd.DataFrame({"key": [shard]})), "rb").read()
               for shard in ("swap", "drop")]
    for data in written:  # back to back: the second file's inode is the one the first freed
        with wh.atomic_open(path) as handle:
            handle.write(data)
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    now = os.stat(path)
    assert now.st_size == first.st_size and now.st_mtime_ns == first.st_mtime_ns
    assert wh.read_table("caption_decisions", "s1")["key"].tolist() == ["drop"]


def test_a_frame_changed_after_it_was_written_changes_no_later_read(tmp_path):
    """With pandas copying on write (the default from pandas 3), a frame's reset_index no longer copies: the
    table kept must still be the writer's own copy."""
    wh = Warehouse(str(tmp_path))
    for copy_on_write in (False, True):
        values = np.array([1.0, 2.0])
        with pd.option_context("mode.copy_on_write", copy_on_write):
            wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a", "b"], "n": values}, copy=False))
        values[:] = 999.0  # the writer changes the array its frame was built on
        assert wh.read_table("pairs", "s1")["n"].tolist() == [1.0, 2.0]
