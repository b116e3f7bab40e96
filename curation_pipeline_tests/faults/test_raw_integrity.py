"""A raw shard that changes under a running pipeline is detected: `pairs` records its fingerprint,
every later step verifies it (and a step that re-reads the file hashes what it read), and a
replaced, grown, shrunk or modified shard fails the partition naming the shard and what changed.
Nothing of it is published: a previous curated tar stays byte for byte."""

from __future__ import annotations

import os
import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import ScoringResource, WarehouseResource
from curation_pipeline.shards.fingerprint import RawFingerprint, RawShardChanged
from curation_pipeline.shards.reader import ShardReader
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.photos import members as photo_members

pytestmark = pytest.mark.faults

SHARD = "swap"
N_PAIRS = 12
FIRST = [dg.AssetKey("pairs"), dg.AssetKey("quality_scores")]
REST = [dg.AssetKey(k) for k in ("caption_decisions", "rewritten_captions", "final_captions", "curated_shards")]


def original_members() -> list[tuple[str, bytes]]:
    return photo_members(N_PAIRS, prefix="p")


def swapped_members() -> list[tuple[str, bytes]]:
    """The same keys and captions, other images (another crop of another photo for each key)."""
    other = photo_members(N_PAIRS, prefix="p", start=5)
    out = []
    for (name, data), (_, other_data) in zip(original_members(), other):
        out.append((name, other_data if name.endswith(".jpg") else data))
    return out


class Run:
    def __init__(self, root, batch_size: int = 32):
        self.raw, self.warehouse = root / "raw", root / "wh"
        self.raw.mkdir()
        self.path = builders.write_members(self.raw / f"{SHARD}.tar", original_members())
        self.defs = build_definitions(raw_root=str(self.raw), warehouse_root=str(self.warehouse),
                                      scoring=ScoringResource(profile="text"))
        if batch_size != 32:
            self.defs.resources["warehouse"] = WarehouseResource(raw_root=str(self.raw), root=str(self.warehouse),
                                                                 batch_size=batch_size)
        self.instance = dg.DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions("shards", [SHARD])

    def materialize(self, selection=None):
        job = self.defs.resolve_job_def("curate_shards")
        return job.execute_in_process(partition_key=SHARD, instance=self.instance, raise_on_error=False,
                                      run_config=QUIET, asset_selection=selection)

    def replace_raw(self, members) -> None:
        """Another file under the same name (write + rename, as a sync or download tool does)."""
        tmp = builders.write_members(self.raw / ".incoming.tar", members)
        os.replace(tmp, self.path)


def failure(result) -> tuple[str, str]:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    data = event.event_specific_data
    if data.user_failure_data is not None:
        return event.step_key, data.user_failure_data.description
    error = data.error
    while error.cause is not None:  # the step error wraps the exception the asset raised
        error = error.cause
    return event.step_key, error.message


def assert_nothing_published(run: Run, previous: bytes | None = None) -> None:
    curated = run.warehouse / "curated" / f"{SHARD}.tar"
    if previous is None:
        assert not curated.exists()
    else:
        assert curated.read_bytes() == previous
    assert not list(run.warehouse.rglob(".tmp-*"))


def test_same_keys_different_images_swapped_between_steps(tmp_path):
    run = Run(tmp_path)
    assert run.materialize(FIRST).success
    recorded = RawFingerprint.from_json(Warehouse(str(run.warehouse)).table_metadata("pairs", SHARD)["raw_fingerprint"])
    assert recorded.size == run.path.stat().st_size
    run.replace_raw(swapped_members())
    result = run.materialize(REST)
    assert not result.success
    step, text = failure(result)
    assert step == "caption_decisions"
    assert f"raw shard '{SHARD}'" in text and "changed since `pairs` read it" in text
    assert "replaced by another file" in text and "Nothing of it is published" in text
    assert not Warehouse(str(run.warehouse)).has_table("caption_decisions", SHARD)
    assert_nothing_published(run)
    # re-running from pairs curates the new file: its fingerprint is recorded afresh
    assert run.materialize().success
    assert (run.warehouse / "curated" / f"{SHARD}.tar").exists()


@pytest.mark.parametrize("change", ["grown", "shrunk", "in_place_same_size"])
def test_grown_shrunk_or_modified_shard_fails_the_next_step(tmp_path, change):
    run = Run(tmp_path)
    assert run.materialize(FIRST).success
    stat = run.path.stat()
    data = bytearray(run.path.read_bytes())
    if change == "grown":
        run.path.write_bytes(bytes(data) + b"\0" * 10240)
        expected = f"grown from {stat.st_size:,} to {stat.st_size + 10240:,} bytes"
    elif change == "shrunk":
        run.path.write_bytes(bytes(data[:-1024]))
        expected = f"shrunk from {stat.st_size:,} to {stat.st_size - 1024:,} bytes"
    else:  # one image's bytes flipped in place, size and mtime put back: only the content differs
        offset = data.index(b"\xff\xd8\xff", 4096) + 600
        with open(run.path, "r+b") as handle:
            handle.seek(offset)
            handle.write(bytes(b ^ 0x55 for b in data[offset:offset + 64]))
        os.utime(run.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        expected = f"modified in place: same size ({stat.st_size:,} bytes), different content"
    result = run.materialize(REST)
    assert not result.success
    step, text = failure(result)
    assert step == "caption_decisions" and expected in text and f"'{SHARD}'" in text, text
    assert_nothing_published(run)


def test_a_touch_alone_does_not_fail_the_run(tmp_path):
    """Same bytes, new mtime (a copy back, a `touch`): the stat differs, the re-hash matches."""
    run = Run(tmp_path)
    assert run.materialize(FIRST).success
    later = run.path.stat().st_mtime + 100
    os.utime(run.path, (later, later))
    assert run.materialize(REST).success


def test_a_change_while_a_step_re_reads_the_file_is_caught_by_the_stream_hash(tmp_path, monkeypatch):
    """quality_scores re-reads the raw file in batches of 2; after the first batch the last image is
    modified in place (same size). The hash of what the step read differs: it fails, writes nothing."""
    from curation_pipeline.scoring.base import Scorer

    run = Run(tmp_path, batch_size=2)
    assert run.materialize([dg.AssetKey("pairs")]).success
    path = run.path

    class Tamper(Scorer):
        name, version, columns = "tamper", "1", ("tamper_score",)
        done = False

        def score(self, batch):
            if not Tamper.done:
                Tamper.done = True
                data = path.read_bytes()
                offset = data.rindex(b"\xff\xd8\xff") + 600
                with open(path, "r+b") as handle:
                    handle.seek(offset)
                    handle.write(bytes(b ^ 0x55 for b in data[offset:offset + 64]))
            return pd.DataFrame({"tamper_score": [1.0] * len(batch)})

    original = ScoringResource.scorers
    monkeypatch.setattr(ScoringResource, "scorers", lambda self: (*original(self), Tamper()))
    result = run.materialize([dg.AssetKey("quality_scores")])
    assert not result.success and Tamper.done
    step, text = failure(result)
    assert step == "quality_scores"
    assert "changed since `pairs` read it (found while re-reading it)" in text and "different content" in text
    assert not Warehouse(str(run.warehouse)).has_table("quality_scores", SHARD)


def test_swap_before_curation_keeps_the_published_tar_and_the_report_names_the_failure(tmp_path):
    run = Run(tmp_path)
    shutil.copy(run.path, run.raw / "steady.tar")  # a second, untouched shard for the report
    run.instance.add_dynamic_partitions("shards", ["steady"])
    assert run.materialize().success
    assert run.defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key="steady", instance=run.instance, raise_on_error=False, run_config=QUIET).success
    published = (run.warehouse / "curated" / f"{SHARD}.tar").read_bytes()
    run.replace_raw(swapped_members())
    result = run.materialize([dg.AssetKey("curated_shards")])
    assert not result.success
    step, text = failure(result)
    assert step == "curated_shards" and "replaced by another file" in text
    assert_nothing_published(run, previous=published)
    report = run.defs.resolve_job_def("quality_report_job").execute_in_process(
        instance=run.instance, raise_on_error=False, run_config=QUIET)
    assert report.success
    con = duckdb.connect(str(run.warehouse / "quality.duckdb"), read_only=True)
    try:
        rows = dict(con.execute("SELECT shard, status FROM shard_summary").fetchall())
        error = con.execute("SELECT error FROM shard_summary WHERE shard = ?", [SHARD]).fetchone()[0]
        failed = con.execute("SELECT failed_shards FROM overall").fetchone()[0]
    finally:
        con.close()
    assert rows == {SHARD: "failed", "steady": "ok"} and failed == 1
    assert error.startswith("curated_shards: ") and "changed since `pairs` read it" in error


def test_the_reader_refuses_another_file_than_the_one_recorded(tmp_path):
    path = builders.write_members(tmp_path / "a.tar", original_members())
    reader = ShardReader(str(path), "a")
    list(reader)
    recorded = reader.fingerprint
    builders.write_members(path, swapped_members())
    with pytest.raises(RawShardChanged, match="changed since `pairs` read it"):
        list(ShardReader(str(path), "a", expected=recorded))


def test_pairs_made_again_from_a_new_file_while_a_step_runs_fails_that_step(tmp_path, monkeypatch):
    """Another run (the nightly fill, say) makes pairs again from a replaced raw file while quality_scores
    still scores the old one. Its scores must not be stored as the new file's: every later step would take
    them (and publish the new images with decisions made on the old ones)."""
    from curation_pipeline.assets.integrity import FINGERPRINT_KEY
    from curation_pipeline.assets.io import RAW_SHA_KEY
    from curation_pipeline.scoring.base import Scorer
    from curation_pipeline.shards.fingerprint import fingerprint

    run = Run(tmp_path)
    assert run.materialize([dg.AssetKey("pairs")]).success
    wh = Warehouse(str(run.warehouse))
    old = wh.table_metadata("pairs", SHARD)[FINGERPRINT_KEY]

    class OtherRun(Scorer):
        name, version, columns = "other_run", "1", ("other_run_score",)
        done = False

        def score(self, batch):
            if not OtherRun.done:  # the file is replaced (a rename: this step's open file reads on), and
                OtherRun.done = True  # the other run's pairs step records it
                run.replace_raw(swapped_members())
                pairs = wh.read_table("pairs", SHARD)
                wh.write_table("pairs", SHARD, pairs, metadata={FINGERPRINT_KEY: fingerprint(str(run.path)).to_json()})
            return pd.DataFrame({"other_run_score": [1.0] * len(batch)})

    original = ScoringResource.scorers
    monkeypatch.setattr(ScoringResource, "scorers", lambda self: (*original(self), OtherRun()))
    result = run.materialize([dg.AssetKey("quality_scores")])
    assert not result.success and OtherRun.done
    step, text = failure(result)
    assert step == "quality_scores" and "pairs was made again from a replaced raw shard while this step ran" in text
    assert not wh.has_table("quality_scores", SHARD)
    # the same race for a step that reads its inputs: caption_decisions loads quality_scores of the old file
    monkeypatch.setattr(ScoringResource, "scorers", original)
    wh.write_table("pairs", SHARD, wh.read_table("pairs", SHARD), metadata={FINGERPRINT_KEY: old})
    run.replace_raw(original_members())
    assert run.materialize([dg.AssetKey("quality_scores")]).success
    from curation_pipeline.assets import decisions as decisions_asset

    checked = decisions_asset.raw_fingerprint

    def replaced_meanwhile(warehouse, shard):  # after the inputs were loaded, before the table is written
        found = checked(warehouse, shard)
        run.replace_raw(swapped_members())
        wh.write_table("pairs", SHARD, wh.read_table("pairs", SHARD),
                       metadata={FINGERPRINT_KEY: fingerprint(str(run.path)).to_json()})
        return found

    monkeypatch.setattr(decisions_asset, "raw_fingerprint", replaced_meanwhile)
    result = run.materialize([dg.AssetKey("caption_decisions")])
    assert not result.success
    step, text = failure(result)
    assert step == "caption_decisions" and "while this step ran" in text, text
    assert not wh.has_table("caption_decisions", SHARD)
    assert RAW_SHA_KEY in wh.table_metadata("quality_scores", SHARD)
