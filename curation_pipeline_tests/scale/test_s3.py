"""Raw shards and the warehouse on object storage: a real S3 server (s3rver, its own process,
bound to 127.0.0.1), reached through fsspec / s3fs and the standard AWS variables only."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import duckdb
import pandas as pd
import pytest

from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline
from curation_pipeline_tests.scale.helpers import (
    SECRET,
    fresh_s3fs,
    table_differences,
    upload_shards,
)


def _listing(fs, prefix: str) -> list[str]:
    return sorted(fs.find(prefix))


@pytest.mark.slow
def test_the_pipeline_runs_from_s3_to_s3_as_it_runs_locally(s3, curated):
    server, fs = s3
    shards = curated["shards"]
    upload_shards(fs, RAW_SAMPLES, f"s3://{server.bucket}/raw", shards)
    raw, root = f"s3://{server.bucket}/raw", f"s3://{server.bucket}/warehouse"
    instance, results = run_pipeline(raw, root, shards)
    assert all(r.success for r in results.values()), {k: r.success for k, r in results.items()}

    remote, local = Warehouse(root), Warehouse(str(curated["warehouse"]))
    assert remote.shards("final_captions") == shards
    assert table_differences(local, remote, shards) == []  # same Parquet rows, same curated tar bytes
    # nothing half-written is left behind: only committed tables, tars and the report
    objects = _listing(fs, f"{server.bucket}/warehouse")
    assert not [o for o in objects if ".tmp-" in o or o.endswith(".partial")], objects
    assert f"{server.bucket}/warehouse/quality.duckdb" in objects

    # the report read its Parquet from S3; a reader downloads the database and queries it
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "quality.duckdb")
        fs.get(f"{server.bucket}/warehouse/quality.duckdb", db)
        con = duckdb.connect(db, read_only=True)
        con.register_filesystem(fresh_s3fs())  # the views point at s3:// Parquet
        summary = con.execute("SELECT shard, pairs_read FROM shard_summary ORDER BY shard").fetchall()
        views = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
        con.close()
    assert [s for s, _ in summary] == shards and views == sum(n for _, n in summary) == 80
    # the lineage reads the same rows from S3 (its files' details from its listings) as locally
    from curation_pipeline.reporting.lineage import caption_history

    here, there = caption_history(local), caption_history(remote)
    assert len(here.final) == 80 and here.final["outcome"].eq("rewritten").any()
    pd.testing.assert_frame_equal(here.final, there.final)
    assert len(here.attempts) == len(there.attempts) > 0

    # credentials come from the environment and are never written to Dagster's logs or metadata
    logged = "\n".join(str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))
    assert SECRET not in logged and "AWS_SECRET_ACCESS_KEY" not in logged


def test_publishing_on_s3_writes_then_verifies_then_commits(s3, monkeypatch):
    server, fs = s3
    wh = Warehouse(f"s3://{server.bucket}/wh")
    target = wh.curated_path("sample-000000")

    # 1. verification fails: nothing is committed, no temp object is left
    seen = {}

    def refuse(local_copy: str) -> None:
        seen["bytes"] = open(local_copy, "rb").read()
        raise RuntimeError("refused by verify")

    with pytest.raises(RuntimeError, match="refused by verify"):
        with wh.atomic_open(target, verify=refuse) as handle:
            handle.write(b"first version")
    assert seen["bytes"] == b"first version"  # verify saw the uploaded object, read back
    assert not fs.exists(target) and _listing(fs, f"{server.bucket}/wh") == []

    # 2. an upload that does not read back as written is not committed
    with wh.atomic_open(target) as handle:
        handle.write(b"good version")
    real_open = type(wh.fs).open

    def corrupt_open(self, path, mode="rb", **kwargs):
        handle = real_open(self, path, mode, **kwargs)
        if "wb" in mode:
            write = handle.write
            handle.write = lambda data: write(bytes(data).replace(b"new", b"bad"))
        return handle

    monkeypatch.setattr(type(wh.fs), "open", corrupt_open)
    with pytest.raises(OSError, match="not committed"):
        with wh.atomic_open(target) as handle:
            handle.write(b"new version")
    monkeypatch.setattr(type(wh.fs), "open", real_open)
    assert fs.cat_file(target) == b"good version"  # readers still see the last good object
    assert _listing(fs, f"{server.bucket}/wh") == [target]
    with contextlib.suppress(FileNotFoundError):
        fs.rm(target)


def test_an_s3_warehouse_under_a_prefix_with_glob_characters(s3, monkeypatch):
    """s3fs's glob finds nothing under such a prefix: the warehouse lists instead, and commits with
    file-level calls. Orphans from another host are removed by their LastModified (S3 has no mtime)."""
    import time

    import pandas as pd

    import curation_pipeline.storage.warehouse as warehouse

    server, fs = s3
    wh = Warehouse(f"s3://{server.bucket}/run[1]/wh")
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    assert wh.shards("pairs") == ["s1"] and wh.read_all("pairs")["key"].tolist() == ["a"]
    orphan = f"{server.bucket}/run[1]/wh/pairs/.tmp-deadbeef-123-{'0' * 32}-s1.parquet.partial"
    fs.pipe_file(orphan, b"a crashed pod's upload")
    assert wh.clean_temp_files() == []  # young: its writer, on another host, may still be at it
    later = time.time() + 2 * warehouse.ORPHAN_AGE_S
    monkeypatch.setattr(warehouse.time, "time", lambda: later)
    assert wh.clean_temp_files() == [orphan]
    assert _listing(fs, f"{server.bucket}/run[1]/wh") == [f"{server.bucket}/run[1]/wh/pairs/s1.parquet"]
    # a write clears its own file's orphans, found by their prefix (one listing of those, not of the folder)
    mine = f"{server.bucket}/run[1]/wh/pairs/.tmp/{warehouse.temp_name('s1.parquet', pid=123, host='deadbeef')}"
    other = f"{server.bucket}/run[1]/wh/pairs/.tmp/{warehouse.temp_name('s2.parquet', pid=123, host='deadbeef')}"
    fs.pipe_file(mine, b"a crashed pod's upload")
    fs.pipe_file(other, b"another file's")
    wh.write_table("pairs", "s1", pd.DataFrame({"key": ["b"]}))
    assert _listing(fs, f"{server.bucket}/run[1]/wh") == [other, f"{server.bucket}/run[1]/wh/pairs/s1.parquet"]


def test_a_mistyped_bucket_fails_instead_of_being_created(s3):
    import pandas as pd

    server, fs = s3
    before = sorted(fs.ls(""))
    with pytest.raises(FileNotFoundError):
        Warehouse(f"s3://{server.bucket}-typo/wh").write_table("pairs", "s1", pd.DataFrame({"key": ["a"]}))
    assert sorted(fs.ls("", refresh=True)) == before


def test_a_missing_warehouse_bucket_is_bad_input_before_any_run(s3, tmp_path, monkeypatch):
    """Refused before any run, naming the bucket, like a missing raw location; a new prefix in an existing
    bucket is no error (nothing is there yet either)."""
    from click.testing import CliRunner

    from curation_pipeline.cli import EXIT_BAD_INPUT, main

    server, fs = s3
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    local = tmp_path / "raw"
    local.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000001.tar", local)
    missing = f"s3://{server.bucket}-missing/wh"
    result = CliRunner().invoke(main, ["run", "--raw", str(local), "--warehouse", missing, "--no-report"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"bucket '{server.bucket}-missing' of warehouse {missing} does not exist" in result.output
    assert "FAILED" not in result.output and "Traceback" not in result.output  # no run was started
    # the report and lineage said "no report ... build it" and "run the pipeline first"
    for command in (["report"], ["lineage", "--shard", "sample-000001"]):
        result = CliRunner().invoke(main, [*command, "--warehouse", missing])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert f"bucket '{server.bucket}-missing' of warehouse {missing} does not exist" in result.output
    Warehouse(f"s3://{server.bucket}/a-new-prefix/wh").check_reachable()


@pytest.mark.parametrize("where", ["raw", "warehouse"])
@pytest.mark.parametrize("credentials", ["none", "wrong"])
def test_missing_credentials_are_one_clear_error_before_any_run(s3, tmp_path, monkeypatch, where, credentials):
    from click.testing import CliRunner

    from curation_pipeline.cli import EXIT_BAD_INPUT, main

    server, fs = s3
    upload_shards(fs, RAW_SAMPLES, f"s3://{server.bucket}/raw", ["sample-000001"])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    if credentials == "wrong":  # the server refuses them (AccessDenied / InvalidAccessKeyId)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOT-A-KEY")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role look-up off loopback
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    fresh_s3fs()
    local = tmp_path / "raw"
    local.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000001.tar", local)
    raw, warehouse = ((f"s3://{server.bucket}/raw", str(tmp_path / "wh")) if where == "raw"
                      else (str(local), f"s3://{server.bucket}/wh"))
    result = CliRunner().invoke(main, ["run", "--raw", raw, "--warehouse", warehouse, "--no-report"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    url = raw if where == "raw" else warehouse
    assert f"cannot reach {url}: " in result.output
    assert credentials == "wrong" or "Unable to locate credentials" in result.output
    assert "not-the-secret" not in result.output
    assert "AWS_ACCESS_KEY_ID" in result.output and "Traceback" not in result.output
    assert "FAILED" not in result.output and not (tmp_path / "wh").exists()  # no run was started


def test_the_new_shard_sensor_keys_runs_from_the_listing_not_a_request_per_file(s3, tmp_path, monkeypatch):
    """On S3 a request per new file (a HEAD) held a tick with thousands of new shards past Dagster's 60 s limit,
    so it saved no cursor and the next tick started over. The listing's own details give the same run keys."""
    import dagster as dg

    from curation_pipeline import automation
    from curation_pipeline.resources import WarehouseResource

    server, fs = s3
    for name in ("a-1", "b-2", "c-3"):
        fs.put(str(RAW_SAMPLES / "sample-000000.tar"), f"{server.bucket}/raw/{name}.tar")
    raw = f"s3://{server.bucket}/raw"
    by_head = {key: automation._file_run_key(key, f"{raw}/{key}.tar") for key in ("a-1", "b-2", "c-3")}
    monkeypatch.setattr(automation, "raw_stat", lambda url: pytest.fail(f"a request for {url}"))
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={
            "warehouse": WarehouseResource(raw_root=raw, root=str(tmp_path / "wh"))}) as context:
        assert not automation.new_shards_sensor(context).run_requests  # each waits a tick, as on a local disk
        requests = automation.new_shards_sensor(context).run_requests
    assert {r.partition_key: r.run_key for r in requests} == by_head
    assert all(key.startswith(f"shard:{k}:") and len(key.split(":")) == 4 for k, key in by_head.items())


def test_a_raw_folder_on_s3_is_listed_in_one_request_whatever_its_subfolders(s3, monkeypatch):
    """A listing a subfolder was a request each on every sensor tick (400 date folders: 400 requests a tick, for
    messages only): the folder is listed once, its subfolders not looked into, and passed over as a disk's
    without shards are (10 list requests here before)."""
    import collections

    import s3fs

    from curation_pipeline.resources import WarehouseResource
    from curation_pipeline_tests.scale.helpers import fresh_s3fs

    server, fs = s3
    for name in ("a-1", "b-2"):
        fs.put(str(RAW_SAMPLES / "sample-000000.tar"), f"{server.bucket}/raw/{name}.tar")
    for folder in range(6):
        fs.put(str(RAW_SAMPLES / "sample-000000.tar"), f"{server.bucket}/raw/day-{folder}/x.tar")
    fs.pipe(f"{server.bucket}/raw/README.md", b"notes")
    fresh_s3fs()  # no listing cached from the uploads
    made = collections.Counter()
    real = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *a, **k):
        made[method] += 1
        return await real(self, method, *a, **k)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    found, rejected, stats = WarehouseResource(raw_root=f"s3://{server.bucket}/raw", root="unused").list_raw_stats()
    assert sorted(found) == ["a-1", "b-2"] and sorted(stats) == ["a-1", "b-2"]
    assert made["list_objects_v2"] <= 2, made  # whether the location is a folder, then its listing
    assert rejected == []  # a subfolder is no skipped file: curate run would exit 2 for a _manifests/ prefix


def test_a_table_replaced_before_the_copy_is_not_overwritten_where_the_store_enforces_if_match(s3):
    """AWS S3 refuses a copy whose If-Match no longer holds (412, nothing written); s3rver ignores the header, so
    the store's answer is given here as AWS gives it, through botocore and s3fs as they handle it: the write fails
    as FileChanged, and the table stays the other writer's."""
    from botocore.awsrequest import AWSResponse

    from curation_pipeline.storage.warehouse import FileChanged

    server, fs = s3
    wh = Warehouse(f"s3://{server.bucket}/wh")
    wh.write_table("final_captions", "s1", pd.DataFrame({"key": ["a"], "caption": ["first"]}))
    _, _, version = wh.read_table_versioned("final_captions", "s1")
    conditions = []

    def refused(params, **_):
        conditions.append(params["headers"].get("If-Match"))
        return (AWSResponse(None, 412, {}, None),
                {"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions you "
                           "specified did not hold"}, "ResponseMetadata": {"HTTPStatusCode": 412}})

    wh.fs.connect()  # its client, to hear the copy on
    wh.fs.s3.meta.events.register("before-call.s3.CopyObject", refused)
    with pytest.raises(FileChanged, match="final_captions/s1.parquet was written again since it was read; not "
                                          "replaced"):
        wh.update_table_metadata("final_captions", "s1", {"note": "x"}, read_version=version)
    wh.fs.s3.meta.events.unregister("before-call.s3.CopyObject", refused)
    assert conditions == [version]  # the copy carried the version read
    table, stored = wh.read_table_and_metadata("final_captions", "s1")
    assert table["caption"].tolist() == ["first"] and "note" not in stored
