"""Compressed shards in the raw folder are not read: `curate run` and the sensor say so and how to fix it,
instead of passing over them as if they were a README."""

import gzip
import shutil

import pytest

import dagster as dg
from click.testing import CliRunner

from curation_pipeline.automation import new_shards_sensor
from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline.resources import WarehouseResource
from curation_pipeline_tests.conftest import RAW_SAMPLES

pytestmark = pytest.mark.faults  # cited in docs/faults.md: runs with -m faults

COMPRESSED = ["a.tar.gz", "b.tgz", "c.tar.zst", "d.tar.bz2", "e.TAR.XZ"]


def compressed_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    tar = (RAW_SAMPLES / "sample-000000.tar").read_bytes()
    for name in COMPRESSED:
        (raw / name).write_bytes(gzip.compress(tar))  # the content is not looked at: the name says it
    (raw / "README.md").write_text("not a shard")
    return raw


def test_compressed_shards_are_reported_not_passed_over(tmp_path):
    raw = compressed_raw(tmp_path)
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "plain.tar")
    found, rejected = WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh")).list_raw()
    assert list(found) == ["plain"] and len(rejected) == len(COMPRESSED)
    assert rejected[0] == ("'a.tar.gz' is a compressed tar (.tar.gz): not read, raw shards must be plain .tar; "
                           "decompress it (e.g. to a.tar)")
    assert "(.tgz)" in rejected[1] and "to b.tar)" in rejected[1] and "to e.tar)" in rejected[4]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["plain"])
    with dg.build_sensor_context(instance=instance, resources={
            "warehouse": WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))}) as context:
        message = new_shards_sensor(context).skip_reason.skip_message
    assert f"{len(COMPRESSED)} rejected names" in message and "'a.tar.gz' is a compressed tar" in message


def test_curate_run_says_each_compressed_shard_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = compressed_raw(tmp_path)
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh")])
    assert result.exit_code == EXIT_BAD_INPUT
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == len(COMPRESSED) and all("decompress it" in line for line in skipped)
    assert "no .tar shards found" in result.output


def test_an_interrupt_while_the_raw_location_is_read_is_no_missing_location(tmp_path, monkeypatch):
    """fsspec's exists() swallows any exception: a Ctrl-C landing in its stat read as "raw shard location does not
    exist" (exit 2, a bad input) instead of stopping the run."""
    import fsspec.implementations.local as local

    from curation_pipeline.resources import WarehouseResource

    (tmp_path / "raw").mkdir()

    def interrupted(self, path, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(local.LocalFileSystem, "info", interrupted)
    with pytest.raises(KeyboardInterrupt):
        WarehouseResource(raw_root=str(tmp_path / "raw"), root=str(tmp_path / "wh")).list_raw()


def test_a_shard_name_that_is_no_file_is_reported_not_passed_over(tmp_path, monkeypatch):
    """A shard linked from a disk that is not mounted, or a folder named as a shard, was dropped from the listing
    without a word: `curate run` said "done" with exit 0, and the sensor never counted it."""
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "good-000000.tar")
    (raw / "linked-000001.tar").symlink_to(tmp_path / "unmounted" / "shard-1.tar")
    (raw / "linked-000002.tar").symlink_to(raw / "good-000000.tar")  # a link that leads to a file counts
    (raw / "folder-000003.tar").mkdir()
    found, rejected = WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh")).list_raw()
    assert sorted(found) == ["good-000000", "linked-000002"]
    assert sorted(rejected) == ["'folder-000003.tar' is a folder: not read",
                                "'linked-000001.tar' is a link to nothing (an unmounted disk?): not read"]
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (raw / "linked-000002.tar").unlink()
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--no-report"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "skipped: 'linked-000001.tar' is a link to nothing" in result.output
