"""The curated tar and final_captions never go out of step silently: a run killed between its
final_captions write and its tar's rename leaves the report saying the shard is unpublished (not ok), and
a run whose final_captions another run made again while it wrote its tar publishes nothing (before: both
runs exited 0, the tar from one and final_captions from the other)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation_pipeline.reporting.report import build_report
from curation_pipeline.resources import ScoringResource
from curation_pipeline.shards.writer import ROWS_DIGEST_KEY, rows_digest, write_curated
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import run_pipeline
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.photos import members as photo_members

pytestmark = pytest.mark.faults
SHARD = "s1"
TEXT = ScoringResource(profile="text")


@pytest.fixture
def published(tmp_path) -> tuple[Path, Warehouse, object]:
    """One shard run whole: its final_captions keeps 3 pairs, its curated tar is published."""
    raw = tmp_path / "raw"
    raw.mkdir()
    builders.write_members(raw / f"{SHARD}.tar", photo_members(3, prefix=SHARD))
    instance, results = run_pipeline(raw, tmp_path / "wh", [SHARD], report=False, scoring=TEXT)
    assert results[SHARD].success
    return raw, Warehouse(str(tmp_path / "wh")), instance


def _final_captions_made_again(wh: Warehouse) -> None:
    """What another run's final_captions step writes (here one final caption changed), as the IO manager
    stores it (the same metadata, but the digest of its rows)."""
    final, metadata = wh.read_table_and_metadata("final_captions", SHARD)
    assert metadata[ROWS_DIGEST_KEY]  # as a real step records it
    kept = final.index[final["outcome"].ne("dropped")][0]
    final.loc[kept, "final_caption"] = "A caption another run wrote."
    wh.write_table("final_captions", SHARD, final, metadata={**metadata, ROWS_DIGEST_KEY: rows_digest(final)})


def _status(wh: Warehouse) -> tuple[str, str | None]:
    """The shard's status as the report gives it, with no failed run (a SIGKILLed run stays STARTED: no
    failure is recorded for it)."""
    row = build_report(wh, failures={}).shards.set_index("shard").loc[SHARD]
    return row["status"], row["status_detail"]


def test_a_run_killed_while_publishing_leaves_the_shard_unpublished_not_ok(published):
    """Before: `curate run` SIGKILLed once its tar's temp file appeared left final_captions (23 kept) over
    the previous run's tar (21 samples), or no tar at all, and the report said ok."""
    raw, wh, instance = published
    assert _status(wh) == ("ok", None)
    tar = Path(wh.curated_path(SHARD))
    earlier = tar.read_bytes()

    _final_captions_made_again(wh)  # the killed run wrote final_captions, never renamed its tar into place
    status, detail = _status(wh)
    assert status == "unpublished"
    assert detail == (f"curated/{SHARD}.tar was not made from the current final_captions (a run was killed while "
                      "publishing, or another run replaced it): run the shard again (curate run --shard, or "
                      "materialize its assets)")

    tar.unlink()  # killed before any tar of the shard was published
    status, detail = _status(wh)
    assert status == "unpublished" and detail.startswith(f"no curated/{SHARD}.tar, though final_captions keeps 3 pairs")

    with open(tar, "wb") as handle:  # a tar of an older version, which records no final_captions
        write_curated(handle, [])
    assert _status(wh)[1].startswith(f"curated/{SHARD}.tar is empty, though final_captions keeps 3 pairs")
    assert earlier[156:157] == b"g"  # the record: a global header, one block and its one of data
    tar.write_bytes(earlier[1024:])  # the same samples without the record (written before tars had one)
    assert _status(wh) == ("unpublished", f"curated/{SHARD}.tar records no final_captions, but the current one was "
                           "made since they do (a run was killed while publishing): run the shard again (curate run "
                           "--shard, or materialize its assets)")
    # both made before either recorded it (a warehouse of before): counted, with a note, not held against it
    final, metadata = wh.read_table_and_metadata("final_captions", SHARD)
    wh.write_table("final_captions", SHARD, final, metadata={k: v for k, v in metadata.items() if k != ROWS_DIGEST_KEY})
    status, detail = _status(wh)
    assert status == "ok" and detail.startswith(f"curated/{SHARD}.tar and its final_captions were made before "
                                                "curated tars recorded the final_captions they were made from")

    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert results[SHARD].success and _status(wh) == ("ok", None)  # run again, as the detail says


def _step_error(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "curated_shards"
    return str(failure.event_specific_data.error)


def test_final_captions_made_again_while_the_tar_is_written_publishes_nothing(published, monkeypatch):
    """Before: two runs of one shard both exited 0, the tar of the one that loaded final_captions first over
    the final_captions of the other. Now the tar is renamed into place only while final_captions is still
    the file its run loaded; else FileChanged and the tar there stays."""
    import curation_pipeline.assets.curation as curation

    raw, wh, instance = published
    tar = Path(wh.curated_path(SHARD))
    earlier = tar.read_bytes()
    real = curation.write_curated

    def another_run_meanwhile(handle, samples, *args, **kwargs):
        written = real(handle, samples, *args, **kwargs)
        _final_captions_made_again(wh)  # the other run stores its final_captions before this tar's rename
        return written

    monkeypatch.setattr(curation, "write_curated", another_run_meanwhile)
    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert not results[SHARD].success
    error = _step_error(results[SHARD])
    assert "FileChanged" in error and (f"{SHARD}: its final_captions was made again by another run (or its checks "
                                       "run again) while this run wrote its tar") in error
    assert "run the shard again" in error
    assert tar.read_bytes() == earlier and not list(tar.parent.rglob(".tmp-*"))
    assert _status(wh)[0] == "unpublished"  # the other run's final_captions, this older tar: said, not ok


def test_final_captions_made_again_before_the_tar_is_begun_publishes_nothing(published, monkeypatch):
    """Another run stores final_captions after this run's IO manager loaded it, before its tar is begun."""
    import curation_pipeline.assets.curation as curation

    raw, wh, instance = published
    earlier = Path(wh.curated_path(SHARD)).read_bytes()
    real = curation.raw_fingerprint

    def another_run_first(*args, **kwargs):
        _final_captions_made_again(wh)
        return real(*args, **kwargs)

    monkeypatch.setattr(curation, "raw_fingerprint", another_run_first)
    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert not results[SHARD].success
    assert "was made again by another run (or its checks run again) before this run began its tar" in _step_error(
        results[SHARD])
    assert Path(wh.curated_path(SHARD)).read_bytes() == earlier



def _final_captions_reads(monkeypatch) -> list[str]:
    """Each read of final_captions by the curated_shards step itself (not through the IO manager)."""
    import sys

    readers: list[str] = []
    real = Warehouse.read_table_versioned

    def read(self, table, shard, *args, **kwargs):
        if table == "final_captions" and sys._getframe(1).f_code.co_name == "curated_shards":
            readers.append("curated_shards")
        return real(self, table, shard, *args, **kwargs)

    monkeypatch.setattr(Warehouse, "read_table_versioned", read)
    return readers


def test_the_tar_step_holds_the_version_its_input_was_loaded_from_without_reading_it_again(published, monkeypatch):
    raw, wh, instance = published
    readers = _final_captions_reads(monkeypatch)
    Path(wh.curated_path(SHARD)).unlink()
    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert results[SHARD].success and _status(wh) == ("ok", None)
    assert readers == []  # the IO manager said which file it loaded: nothing read again


def test_final_captions_rewritten_with_the_same_rows_before_the_tar_still_publishes(published, monkeypatch):
    """Its checks run again (the file stored again, the same rows) after this run loaded it: the tar is still
    made from the rows there, and renamed into place while that file is."""
    import curation_pipeline.assets.curation as curation

    raw, wh, instance = published
    readers = _final_captions_reads(monkeypatch)
    real = curation.raw_fingerprint

    def checks_run_again(*args, **kwargs):
        final, metadata = wh.read_table_and_metadata("final_captions", SHARD)
        wh.write_table("final_captions", SHARD, final, metadata=metadata)
        return real(*args, **kwargs)

    monkeypatch.setattr(curation, "raw_fingerprint", checks_run_again)
    Path(wh.curated_path(SHARD)).unlink()
    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert results[SHARD].success and _status(wh) == ("ok", None)
    assert readers == ["curated_shards"]  # read again once, found to hold the rows loaded


def test_final_captions_failing_its_checks_run_again_before_the_tar_publishes_nothing(published, monkeypatch):
    """Its checks run again alone after this run loaded it, and failed: the same rows, but refused to every
    later step (the IO manager's rule), so not published either (before: published, the report then calling
    the new tar one of an earlier run)."""
    import curation_pipeline.assets.curation as curation
    from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY

    raw, wh, instance = published
    earlier = Path(wh.curated_path(SHARD)).read_bytes()
    real = curation.raw_fingerprint

    def checks_failed_meanwhile(*args, **kwargs):
        wh.update_table_metadata("final_captions", SHARD, {FAILED_CHECKS_KEY: "caption_length_drift"})
        return real(*args, **kwargs)

    monkeypatch.setattr(curation, "raw_fingerprint", checks_failed_meanwhile)
    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert not results[SHARD].success
    assert ("final_captions failed its blocking check(s) caption_length_drift when they were run again after this "
            "run loaded it") in _step_error(results[SHARD])
    assert Path(wh.curated_path(SHARD)).read_bytes() == earlier


def test_a_tar_of_a_replaced_raw_file_is_unpublished_though_its_rows_are_the_same(published):
    """A raw shard downloaded again with its images re-encoded (the same keys, captions and json) gives the text
    profile the same final_captions rows; a run that made every table again but stopped before publishing left
    the old tar, whose images are no longer the raw file's, and the report said ok. The tar records its raw file."""
    import io

    import dagster as dg
    from PIL import Image

    from curation_pipeline.definitions import build_definitions
    from curation_pipeline_tests.conftest import QUIET

    raw, wh, instance = published
    members = []
    for name, data in photo_members(3, prefix=SHARD):
        if name.endswith(".jpg"):
            out = io.BytesIO()
            Image.open(io.BytesIO(data)).save(out, "JPEG", quality=70)
            data = out.getvalue()
        members.append((name, data))
    builders.write_members(raw / f"{SHARD}.tar", members)
    defs = build_definitions(raw_root=str(raw), warehouse_root=wh.root, scoring=TEXT)
    tables = [dg.AssetKey(name) for name in ("pairs", "quality_scores", "caption_decisions", "rewritten_captions",
                                             "final_captions")]
    assert defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=SHARD, instance=instance, asset_selection=tables, run_config=QUIET).success
    status, detail = _status(wh)
    assert status == "unpublished" and detail.startswith(
        f"curated/{SHARD}.tar holds the images of another raw file (sha256 ") and detail.endswith(
        "the raw shard was replaced and its tar not made again: run the shard again (curate run --shard, or "
        "materialize its assets)")
    _, results = run_pipeline(raw, wh.root, [SHARD], instance=instance, report=False, scoring=TEXT)
    assert results[SHARD].success and _status(wh) == ("ok", None)
