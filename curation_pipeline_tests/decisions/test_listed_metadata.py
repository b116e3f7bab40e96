"""The settle sensor's read of every shard's decisions metadata: a file is read again only once replaced."""

import pandas as pd

from curation_pipeline.decisions import dedup
from curation_pipeline.decisions.dedup import listed_metadata
from curation_pipeline.storage.warehouse import Warehouse


def test_each_file_is_read_once_until_replaced(tmp_path, monkeypatch):
    wh = Warehouse(str(tmp_path / "warehouse"))
    for shard in ("a", "b", "c"):
        wh.write_table("caption_decisions", shard, pd.DataFrame({"key": ["1"]}), {"digest": f"{shard}-1"})
    monkeypatch.setattr(dedup, "_FOOTERS", type(dedup._FOOTERS)())  # this test's process cache
    reads = []
    original = Warehouse.table_metadata
    monkeypatch.setattr(Warehouse, "table_metadata",
                        lambda self, table, shard: reads.append(shard) or original(self, table, shard))

    def listed():
        return listed_metadata(wh, "caption_decisions", wh.shard_files("caption_decisions"))

    first = listed()
    assert {shard: m["digest"] for shard, m in first.items()} == {"a": "a-1", "b": "b-1", "c": "c-1"}
    assert sorted(reads) == ["a", "b", "c"]
    reads.clear()
    first["a"]["digest"] = "changed by a caller"  # a copy: the cache keeps what the file says
    assert {shard: m["digest"] for shard, m in listed().items()} == {"a": "a-1", "b": "b-1", "c": "c-1"}
    assert reads == []
    wh.write_table("caption_decisions", "b", pd.DataFrame({"key": ["1", "2"]}), {"digest": "b-2"})  # replaced
    assert listed()["b"]["digest"] == "b-2" and reads == ["b"]
    reads.clear()
    files = wh.shard_files("caption_decisions")
    (tmp_path / "warehouse" / "caption_decisions" / "c.parquet").write_bytes(b"not parquet")  # damaged since
    wh.write_table("caption_decisions", "a", pd.DataFrame({"key": ["3"]}), {"digest": "a-2"})
    (tmp_path / "warehouse" / "caption_decisions" / "a.parquet").unlink()  # gone since the listing
    files["a"] = {**files["a"], "ino": -1}  # (the listing saw another file than the cached one)
    found = listed_metadata(wh, "caption_decisions", files)
    assert isinstance(found["a"], FileNotFoundError)
    assert found["b"]["digest"] == "b-2"
    assert found["c"]["digest"] == "c-1"  # listed as the file read before: the listing is what is asked about
    reads.clear()
    for _ in range(2):  # read, as the listing now shows another file; an error is never kept: read again
        damaged = listed_metadata(wh, "caption_decisions", wh.shard_files("caption_decisions"))["c"]
        assert isinstance(damaged, (OSError, ValueError))
    assert reads == ["c", "c"]
