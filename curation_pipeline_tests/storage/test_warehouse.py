"""Atomic, replaceable per-shard tables; keys never escape the warehouse."""

import pandas as pd
import pytest

from curation_pipeline.shards.keys import InvalidShardName
from curation_pipeline.storage.warehouse import RECENT_TABLES, FileChanged, Warehouse


def test_write_replace_and_read(tmp_path):
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"], "n": [1]}), metadata={"scorers": "x@1"})
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["b", "c"], "n": [2, 3]}))
    assert wh.read_table("pairs", "s1")["key"].tolist() == ["b", "c"]
    assert wh.shards("pairs") == ["s1"]
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_store_table_returns_the_schema_and_rows_its_footer_says(tmp_path):
    """What a reader of the file gets (a declared type cast, a timestamp[s] stored as timestamp[ms], the
    pipeline's own metadata), from the write itself."""
    import pyarrow.parquet as pq

    wh = Warehouse(str(tmp_path))
    frame = pd.DataFrame({"key": ["a", "b"], "width": [1.0, None],
                          "at": pd.Series(pd.to_datetime(["2024-01-01"] * 2)).astype("datetime64[s]")})
    stored = wh.store_table("pairs", "s1", frame, metadata={"scorers": "x@1"})
    assert stored.path == wh.table_path("pairs", "s1")
    footer = pq.ParquetFile(stored.path)
    assert stored.schema.equals(footer.schema_arrow, check_metadata=True)
    assert str(stored.schema.field("at").type) == "timestamp[ms]" and stored.schema.metadata[b"scorers"] == b"x@1"
    assert stored.rows == footer.metadata.num_rows == 2


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


def test_a_metadata_update_never_writes_old_rows_over_a_newer_table(warehouse_root, monkeypatch):
    """A check executed alone rewrites its table's metadata; another run that stores the table again
    between that read and that write keeps its rows (a real interleaving: the concurrent write goes
    through the normal writer once the update has read the file)."""
    wh = Warehouse(warehouse_root)
    wh.write_table("quality_scores", "s1", pd.DataFrame({"key": ["old"]}),
                   metadata={"failed_blocking_checks": "scores_in_range"})
    real_open = Warehouse.atomic_open

    def another_run_first(self, path, *args, **kwargs):
        monkeypatch.setattr(Warehouse, "atomic_open", real_open)
        wh.write_table("quality_scores", "s1", pd.DataFrame({"key": ["new", "newer"]}),
                       metadata={"failed_blocking_checks": ""})
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(Warehouse, "atomic_open", another_run_first)
    with pytest.raises(FileChanged, match="written again since it was read"):
        wh.update_table_metadata("quality_scores", "s1", {"failed_blocking_checks": "stale verdict"})
    assert Warehouse.atomic_open is real_open  # the other run did write, after the update's read
    rows, metadata = wh.read_table_and_metadata("quality_scores", "s1")
    assert rows["key"].tolist() == ["new", "newer"]
    assert metadata["failed_blocking_checks"] == ""
    assert [p for p in wh.fs.find(wh.join()) if "/.tmp-" in p] == []  # the refused write left no temp file


def test_a_metadata_update_applies_only_to_the_version_its_caller_read(tmp_path):
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    _, _, read = wh.read_table_versioned("pairs", "s1")
    wh.update_table_metadata("pairs", "s1", {"note": "1"}, read_version=read)  # unchanged since: applied
    rows, metadata, now = wh.read_table_versioned("pairs", "s1")
    assert (rows["key"].tolist(), metadata["note"]) == (["a"], "1") and now != read
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["b"]}))  # another run, after the caller's read
    with pytest.raises(FileChanged):
        wh.update_table_metadata("pairs", "s1", {"note": "2"}, read_version=now)
    rows, metadata = wh.read_table_and_metadata("pairs", "s1")
    assert rows["key"].tolist() == ["b"] and "note" not in metadata


def test_a_table_is_read_as_one_parquet_file_and_a_missing_column_still_raises(tmp_path, monkeypatch):
    """A shard's table is one file: read through ``ParquetFile``, whose read costs a third of
    ``pq.read_table``'s dataset set-up on these small tables; the same frame, columns in the order asked.
    ``ParquetFile`` leaves a missing column out silently, so a missing one goes through ``read_table``,
    which raises naming it, as every read did before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wh = Warehouse(str(tmp_path))
    frame = pd.DataFrame({"key": ["a", "b"], "n": [1, 2], "x": [0.5, None]})
    wh.write_table("pairs", "s1", frame, metadata={"scorers": "x@1"})
    RECENT_TABLES.clear()  # the file itself is read (test_table_cache: what this process wrote comes from memory)
    expected = pq.read_table(wh.table_path("pairs", "s1"), columns=["x", "key"]).to_pandas()
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read through the dataset API"))
    whole, stored = wh.read_table_and_metadata("pairs", "s1")
    pd.testing.assert_frame_equal(whole, frame)
    assert stored == {"scorers": "x@1"}
    RECENT_TABLES.clear()
    pd.testing.assert_frame_equal(wh.read_table("pairs", "s1", columns=["x", "key"]), expected)
    assert list(wh.read_table("pairs", "s1", columns=["key"], optional=["x", "gone"]).columns) == ["key", "x"]
    monkeypatch.setattr(pq, "read_table", real)
    with pytest.raises(pa.ArrowInvalid, match="gone"):
        wh.read_table("pairs", "s1", columns=["key", "gone"])
    with pytest.raises(pa.ArrowInvalid, match="gone"):  # a required column is never left out silently
        wh.read_table("pairs", "s1", columns=["key", "gone"], optional=["x"])


def test_a_file_is_published_only_while_the_files_it_was_made_from_are_the_versions_read(warehouse_root):
    """``atomic_open(requires=...)``: a curated tar is renamed into place only while its final_captions is
    the version its run read; another run's final_captions stored meanwhile refuses it (FileChanged, nothing
    published, no temp file left), locally and on object storage."""
    wh = Warehouse(warehouse_root)
    wh.write_table("final_captions", "s1", pd.DataFrame({"key": ["a"]}))
    _, _, read = wh.read_table_versioned("final_captions", "s1")
    source = {wh.table_path("final_captions", "s1"): read}
    target = wh.curated_path("s1")
    with wh.atomic_open(target, requires=source) as handle:  # unchanged since: published
        handle.write(b"first")
    with pytest.raises(FileChanged, match=r"final_captions/s1\.parquet, which .*curated/s1\.tar was made from, was "
                                          r"written again since it was read; .* not published"):
        with wh.atomic_open(target, requires=source) as handle:
            handle.write(b"second")
            wh.write_table("final_captions", "s1", pd.DataFrame({"key": ["a", "b"]}))  # another run's
    wh.fs.rm_file(wh.table_path("final_captions", "s1"))
    with pytest.raises(FileChanged, match="was removed since it was read"):
        with wh.atomic_open(target, requires=source) as handle:
            handle.write(b"third")
    assert wh.fs.cat_file(target) == b"first"
    assert [p for p in wh.fs.find(wh.join()) if "/.tmp-" in p] == []


def test_a_committed_object_whose_temporary_copy_cannot_be_removed_is_a_write_done(tmp_path, monkeypatch, caplog):
    """On object storage the commit is a copy, then the temporary object's delete: once the copy is in, the
    new object is live, so a failed delete (a dropped connection) is logged, not a failed write that the run,
    the report and a retry would take for one. fsspec's in-memory store stands in for S3 (no rename either)."""
    import logging
    import uuid

    import fsspec

    root = f"memory:///wh-{uuid.uuid4().hex}"
    wh = Warehouse(root)
    assert not wh.is_local
    wh.write_table("pairs", "s", pd.DataFrame({"key": ["old"]}))
    removed = wh.fs.rm_file

    def dropped(path):
        if ".partial" in path:
            raise ConnectionError("connection reset")
        return removed(path)

    monkeypatch.setattr(wh.fs, "rm_file", dropped)
    with caplog.at_level(logging.WARNING, logger="curation_pipeline.storage.warehouse"):
        wh.write_table("pairs", "s", pd.DataFrame({"key": ["new"]}))
    assert wh.read_table("pairs", "s")["key"].tolist() == ["new"]
    assert "could not remove its temporary copy" in caplog.text and "connection reset" in caplog.text
    monkeypatch.setattr(wh.fs, "rm_file", removed)  # the store is shared: leave it as found
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def test_a_write_clears_its_own_files_orphans_without_listing_the_folder(tmp_path, monkeypatch):
    """A table's folder holds a file per shard: listing it at every write made a pool of N shards cost N² (20,000
    shards: 0.1 s a write, and the pairs step's sweep of the whole warehouse 0.7 s). Temp files go to the folder's
    .tmp folder, where a write finds its own file's by their prefix; other files' are left for the report's sweep."""
    from curation_pipeline_tests.faults.test_publishing import dead_pid

    from curation_pipeline.storage.warehouse import TEMP_DIR, temp_name

    wh = Warehouse(str(tmp_path))
    folder = tmp_path / "pairs"
    (folder / TEMP_DIR).mkdir(parents=True)
    for i in range(200):
        (folder / f"s{i}.parquet").write_bytes(b"x")
    dead = dead_pid()
    temps = folder / TEMP_DIR
    mine = temps / temp_name("s1.parquet", pid=dead)  # a killed writer of the file written now
    live = temps / temp_name("s1.parquet")  # this process: alive, so never its orphan
    other = temps / temp_name("s2.parquet", pid=dead)  # another file's: the report's sweep takes it
    alike = temps / temp_name("s1.parquet.bak", pid=dead)  # a name that only starts like it
    beside = folder / temp_name("s1.parquet", pid=dead)  # where temp files went before: the sweep takes it
    for path in (mine, live, other, alike, beside):
        path.write_bytes(b"partial")

    def no_listing(*args, **kwargs):
        raise AssertionError("a write listed the folder")

    monkeypatch.setattr(type(wh.fs), "ls", no_listing)
    monkeypatch.setattr(type(wh.fs), "find", no_listing)
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    assert not mine.exists() and live.exists() and other.exists() and alike.exists() and beside.exists()
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(
        [*(f"s{i}.parquet" for i in range(200)), beside.name]) and (folder / "s1.parquet").stat().st_size > 1
    monkeypatch.undo()
    assert sorted(p.rsplit("/", 1)[-1] for p in wh.clean_temp_files()) == sorted([other.name, alike.name, beside.name])
    assert live.exists()


def test_credentials_typed_into_an_object_storage_url_are_never_echoed():
    """s3fs takes no credentials from a URL (s3://KEY:SECRET@bucket reads as a bucket named so); the error said
    the URL and botocore's message, both holding the secret, and chained that message as its cause."""
    import botocore.exceptions

    from curation_pipeline.storage.warehouse import StorageUnreachable, object_storage_errors

    url = "s3://AKIDEXAMPLE:Very-Secret-77@curation/wh"
    with pytest.raises(StorageUnreachable) as caught:
        with object_storage_errors(url):
            raise botocore.exceptions.ParamValidationError(report='Invalid bucket name "AKIDEXAMPLE:Very-Secret-77'
                                                                  '@curation"')
    said = str(caught.value)
    assert said.startswith('cannot reach s3://***@curation/wh: Parameter validation failed:\nInvalid bucket name '
                           '"***@curation"')
    assert "Very-Secret" not in said and "AKIDEXAMPLE" not in said and caught.value.__cause__ is None
    # an AWS secret often holds "/": botocore then takes the part before it for the bucket
    with pytest.raises(StorageUnreachable) as slashed:
        with object_storage_errors("s3://KEYID:wJalrXUtn/SEKRIT3+x@b/raw"):
            raise botocore.exceptions.ParamValidationError(report='Invalid bucket name "KEYID:wJalrXUtn"')
    said = str(slashed.value)
    assert said.startswith("cannot reach s3://***@b/raw: ") and '"***:***"' in said
    assert not any(part in said for part in ("KEYID", "wJalrXUtn", "SEKRIT3"))
    with pytest.raises(StorageUnreachable) as plain:  # a URL without credentials keeps its cause
        with object_storage_errors("s3://curation/wh"):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert plain.value.__cause__ is not None and "cannot reach s3://curation/wh: Could not connect" in str(plain.value)


def test_a_local_commit_syncs_the_folder_it_renames_into(tmp_path, monkeypatch):
    """The temp file's fsync keeps its bytes, not the folder entry the rename made: a power cut after a
    publish could bring back the file it replaced while Dagster recorded the new one."""
    import os

    import pandas as pd

    from curation_pipeline.storage.warehouse import Warehouse

    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    assert str(tmp_path / "pairs") in synced, synced
