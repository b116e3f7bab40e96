"""Every bad-input case in one shard through the whole Dagster job: the run succeeds, no good
pair is lost, and each bad member is a counted, reported skip or a row with its status.

The reader-level behaviour is in ``shards/test_reader.py``; this proves it end to end
(metadata, Parquet, curated tar, DuckDB report) and covers the cases that are not a
member: an empty shard, a bad shard name, a missing raw location.
"""

from __future__ import annotations

import shutil
import tarfile

import dagster as dg
import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from curation_pipeline.automation import new_shards_sensor
from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline.resources import ScoringResource, WarehouseResource
from curation_pipeline.shards.reader import ReaderLimits
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline

pytestmark = pytest.mark.faults

EXPECTED_SKIPS = {  # reason -> members, for the hostile shard
    "unsupported_member": {"pk.pyd", "pk.pickle", "pk.pth", "unk.xyz"},
    "unsafe_key": {"../evil.jpg", "../evil.txt", "/abs/evil.jpg", "/abs/evil.txt"},
    "duplicate_key": {"good000000.jpg", "good000000.txt"},  # each member of the repeat
    "unreadable_member": {"tail.jpg"},  # the member cut in half (named: key and member)...
    "truncated_tar": {None},  # ...and the end of the stream
}
EXPECTED_STATUS = {"zero": "empty", "corrupt": "corrupt", "noimg": "missing", "bomb": "too_large",
                   "nocap": "ok", "latin1": "ok", "huge": "ok", "cmyk": "ok", "png16": "ok", "palette": "ok",
                   "anim": "ok", "pk": "ok", "unk": "ok"}
EXPECTED_DROP = {"zero": "image_missing", "noimg": "image_missing", "corrupt": "image_corrupt",
                 "bomb": "image_too_large"}


def curated_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def metadata(result, node: str) -> dict:
    (event,) = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_hostile_shard_run_succeeds_and_every_good_pair_is_curated(hostile_run):
    hostile, _, results = hostile_run
    for name, result in results.items():
        assert result.success, name
    tar = curated_members(hostile.warehouse / "curated" / "hostile.tar")
    for key, image in hostile.good.items():
        assert tar[f"{key}.jpg"] == image, key  # original bytes; the later duplicate key did not win
        assert tar[f"{key}.txt"].decode() == hostile.good_captions[key]
    # pairs beside bad members and odd image modes are kept too
    for key in ("pk", "unk", *hostile.odd_modes):
        assert any(name.startswith(f"{key}.") for name in tar), key
    # the 1 MB caption is read truncated to the reader's limit, judged weak (one word repeated) and dropped
    # with that reason, image and all; every caption that was published is within the limit
    limit = ReaderLimits.max_caption_chars
    wh = Warehouse(str(hostile.warehouse))
    final = wh.read_table("final_captions", "hostile").set_index("key")
    assert not any(name.startswith("huge.") for name in tar)
    assert final.loc["huge", "outcome"] == "dropped" and final.loc["huge", "final_caption"] is None
    assert final.loc["huge", "reason"].startswith("caption weak and not rewritten"), final.loc["huge", "reason"]
    assert final.loc["huge", "original_caption"] == ("word " * 200_000)[:limit]
    captions = [data.decode() for name, data in tar.items() if name.endswith(".txt")]
    assert len(captions) == len(hostile.good) + 2 + len(hostile.odd_modes)  # + pk, unk
    assert all(len(caption) <= limit for caption in captions)
    # a caption file that was not UTF-8 lost bytes (U+FFFD): weak, and no rewrite can restore them
    assert not any(name.startswith("latin1.") for name in tar)
    decisions = wh.read_table("caption_decisions", "hostile").set_index("key")
    assert "bad_encoding" in decisions.loc["latin1", "reason"]
    # nothing bad was published
    published = {name.rsplit(".", 1)[0] for name in tar}
    assert not published & {"zero", "corrupt", "noimg", "bomb", "tail", "../evil", "/abs/evil", "evil"}
    assert all(not name.startswith(("/", "..")) and "/" not in name for name in tar)


def test_hostile_shard_rows_statuses_and_drop_reasons(hostile_run):
    hostile, _, _ = hostile_run
    wh = Warehouse(str(hostile.warehouse))
    pairs = wh.read_table("pairs", "hostile").set_index("key")
    assert set(pairs.index) == set(hostile.good) | set(EXPECTED_STATUS)  # 'tail' was cut off mid-image
    assert pairs["decode_status"][list(EXPECTED_STATUS)].to_dict() == EXPECTED_STATUS
    assert "200000000 pixels" in pairs["decode_error"]["bomb"]  # PIL's own bomb guard names the size
    assert pairs["image_mode"][list(hostile.odd_modes)].to_dict() == {
        "cmyk": "CMYK", "png16": "I;16", "palette": "P", "anim": "P"}
    assert pairs["n_frames"]["anim"] == 3
    assert pairs["caption_problem"]["latin1"] == "invalid utf-8 replaced"
    assert pairs["caption_problem"]["huge"] == "truncated from 1000000 chars"
    assert pd.isna(pairs["caption"]["nocap"])
    final = wh.read_table("final_captions", "hostile").set_index("key")
    assert final["reason"][list(EXPECTED_DROP)].to_dict() == EXPECTED_DROP
    assert final["outcome"]["nocap"] == "dropped" and "no caption" in final["reason"]["nocap"]
    assert set(final.loc[list(hostile.good), "outcome"]) <= {"kept", "rewritten"}
    # the 1 MB caption is decided on its (truncated) caption like any other, never as a broken sample
    assert final["reason"]["huge"].startswith(("text_quality", "caption", "rewritten", "low_")), final["reason"]["huge"]


def test_skips_are_counted_in_partition_metadata(hostile_run):
    _, _, results = hostile_run
    meta = metadata(results["hostile"], "pairs")
    n_skips = sum(len(m) for m in EXPECTED_SKIPS.values())
    assert meta["skipped_members"] == n_skips
    assert meta["pairs"] == len(EXPECTED_STATUS) + 6
    assert meta["headers_not_ok"] == 4 and meta["no_caption"] == 1
    assert "| value | members |" in meta["skips"]  # tar members, not pairs
    for reason, members in EXPECTED_SKIPS.items():
        assert f"| {reason} | {len(members)} |" in meta["skips"], reason
    for status in ("empty", "corrupt", "missing", "too_large"):
        assert f"| {status} | 1 |" in meta["decode_status"]
    preview = {(r.data["reason"], r.data["member"]) for r in meta["skipped_members_preview"].records}
    assert preview == {(reason, m) for reason, ms in EXPECTED_SKIPS.items() for m in ms}
    assert any("truncated_tar" in (r.data["reason"] or "") and "after" in r.data["detail"]
               for r in meta["skipped_members_preview"].records)


def test_skips_are_in_the_report(hostile_run):
    hostile, _, _ = hostile_run
    con = duckdb.connect(str(hostile.warehouse / "quality.duckdb"), read_only=True)
    try:
        summary = con.execute("SELECT pairs_read, skipped_members FROM shard_summary WHERE shard = ?",
                              ["hostile"]).fetchone()
        skips = con.execute("SELECT reason, member FROM skips WHERE shard = ?", ["hostile"]).fetchall()
        statuses = dict(con.execute("SELECT decode_status, count(*) FROM pairs WHERE shard = ? GROUP BY ALL",
                                    ["hostile"]).fetchall())
        problems = con.execute("SELECT count(*) FROM pairs WHERE shard = ? AND caption_problem IS NOT NULL",
                               ["hostile"]).fetchone()[0]
    finally:
        con.close()
    n_skips = sum(len(m) for m in EXPECTED_SKIPS.values())
    assert summary == (len(EXPECTED_STATUS) + 6, n_skips)
    assert {(r, m) for r, m in skips} == {(reason, m) for reason, ms in EXPECTED_SKIPS.items() for m in ms}
    assert statuses == {"ok": 6 + 9, "empty": 1, "corrupt": 1, "missing": 1, "too_large": 1}
    assert problems == 2


def test_empty_shards_run_to_an_empty_curated_shard(hostile_run):
    hostile, _, results = hostile_run
    wh = Warehouse(str(hostile.warehouse))
    for shard in ("empty", "zerobytes"):
        assert results[shard].success, shard
        assert curated_members(hostile.warehouse / "curated" / f"{shard}.tar") == {}
        assert wh.read_table("pairs", shard).empty
        assert metadata(results[shard], "pairs")["pairs"] == 0
    assert list(wh.read_table("skips", "empty")["reason"]) == []
    assert list(wh.read_table("skips", "zerobytes")["reason"]) == ["unreadable_tar"]
    assert metadata(results["zerobytes"], "pairs")["skipped_members"] == 1
    con = duckdb.connect(str(hostile.warehouse / "quality.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT reason FROM skips WHERE shard = 'zerobytes'").fetchall() == [("unreadable_tar",)]
    finally:
        con.close()


def test_empty_shards_are_listed_in_the_report_summary(hostile_run):
    hostile, _, _ = hostile_run
    con = duckdb.connect(str(hostile.warehouse / "quality.duckdb"), read_only=True)
    try:
        rows = dict(con.execute("SELECT shard, skipped_members FROM shard_summary").fetchall())
    finally:
        con.close()
    assert rows.get("empty") == 0 and rows.get("zerobytes") == 1


def test_bad_shard_name_is_rejected_by_sensor_and_cli(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "bad name;rm.tar")
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={
            "warehouse": WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))}) as context:
        result = new_shards_sensor(context)
    assert not result.run_requests and "1 rejected names" in result.skip_reason.skip_message
    runner = CliRunner()
    out = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh")])
    assert out.exit_code == EXIT_BAD_INPUT
    assert "shard file name 'bad name;rm.tar'" in out.output and "characters outside [A-Za-z0-9_-]" in out.output
    assert "bad_name_rm.tar" in out.output  # the suggested rename
    out = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"),
                               "--shard", "bad name;rm"])
    assert out.exit_code == EXIT_BAD_INPUT and "no raw shard bad name;rm" in out.output
    assert not (tmp_path / "wh").exists()


def test_missing_raw_location_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    missing = tmp_path / "nowhere"
    out = CliRunner().invoke(main, ["run", "--raw", str(missing), "--warehouse", str(tmp_path / "wh")])
    assert out.exit_code == EXIT_BAD_INPUT and f"raw shard location '{missing}' does not exist" in out.output
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={
            "warehouse": WarehouseResource(raw_root=str(missing), root=str(tmp_path / "wh"))}) as context:
        result = new_shards_sensor(context)
    assert not result.run_requests and "does not exist" in result.skip_reason.skip_message


def test_registered_shard_that_vanished_or_is_unreadable_fails_clearly(tmp_path):
    """A partition whose raw file is gone (or is not a file) fails the run, naming the path."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "adir.tar").mkdir()
    _, results = run_pipeline(raw, tmp_path / "wh", ["gone", "adir"], report=False,
                              scoring=ScoringResource(profile="text"))
    for shard, error in (("gone", "does not exist"), ("adir", "IsADirectoryError")):
        result = results[shard]
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "pairs"
        data = failure.event_specific_data
        text = str(data.error) + (data.user_failure_data.description if data.user_failure_data else "")
        assert error in text and str(raw / f"{shard}.tar") in text
    assert not (tmp_path / "wh" / "curated").exists()


class _FlakyModel:
    """A model scorer that runs out of memory on batches over 4 pairs and always fails on one pair."""

    def __init__(self, poison: str):
        from curation_pipeline.scoring.base import Scorer

        class Flaky(Scorer):
            name, version, columns = "flaky", "1", ("flaky_score",)

            def score(inner, batch):
                if len(batch) > 4:
                    raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB")
                if poison in batch.keys:
                    raise ValueError(f"cannot embed pair {poison}")
                return pd.DataFrame({"flaky_score": [50.0] * len(batch)})

        self.scorer = Flaky()


def test_model_faults_in_a_real_partition_retry_smaller_and_mark_pairs_missing(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw)
    from curation_pipeline.shards.reader import ShardReader

    all_keys = [s.key for s in ShardReader(str(raw / "sample-000000.tar"), "sample-000000", decode=False)]
    poison = all_keys[5]
    flaky = _FlakyModel(poison).scorer
    original = ScoringResource.scorers
    monkeypatch.setattr(ScoringResource, "scorers", lambda self: (*original(self), flaky))
    _, results = run_pipeline(raw, tmp_path / "wh", ["sample-000000"], report=False,
                              scoring=ScoringResource(profile="text"))
    result = results["sample-000000"]
    assert result.success
    scores = Warehouse(str(tmp_path / "wh")).read_table("quality_scores", "sample-000000").set_index("key")
    assert scores["flaky_score"].drop(poison).eq(50.0).all()
    assert pd.isna(scores.loc[poison, "flaky_score"])
    assert scores.loc[poison, "flaky_error"] == f"ValueError: cannot embed pair {poison}"
    assert scores["flaky_error"].drop(poison).isna().all()
    assert metadata(result, "quality_scores")["missing_flaky"] == 1
    assert metadata(result, "curated_shards")["samples"] > 0


def test_curate_run_names_raw_files_read_only_up_to_damage_and_exits_bad_input(tmp_path, monkeypatch):
    """An HTML page saved as .tar and a download cut short are curated as far as they read (counted skips), but
    `curate run` names each and exits 2, as for skipped files: "done" and 0 would hide them from a script."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    good = (RAW_SAMPLES / "sample-000000.tar").read_bytes()
    (raw / "good.tar").write_bytes(good)
    (raw / "page.tar").write_bytes(b"<html><body>503 Service Unavailable" + b" " * 2000 + b"</body></html>\n")
    (raw / "cut.tar").write_bytes(good[: len(good) // 2])
    out = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--no-report",
                                    "--set", "scoring.profile=text"])
    assert out.exit_code == EXIT_BAD_INPUT, out.output
    damaged = [line for line in out.output.splitlines() if line.startswith("damaged: ")]
    assert [line.split(":")[1].strip() for line in damaged] == ["cut.tar", "page.tar"]
    assert "truncated_tar after " in damaged[0] and damaged[0].endswith("(the file ends there)")
    assert damaged[1] == ("damaged: page.tar: unreadable_tar after 0 members: ReadError: bad checksum (no sample "
                          "read: not a tar, or damaged at its start)")
    assert "done: 3 shards curated" in out.output
    assert "2 raw files read only up to damage" in out.output
    assert (tmp_path / "wh" / "curated" / "good.tar").exists()


def test_the_pairs_step_and_the_report_count_no_caption_alike(tmp_path):
    """A caption of only whitespace is no caption to the drift check, the rewriter and the report: the partition's
    metadata counts it too (it counted only missing captions)."""
    from curation_pipeline_tests.faults import builders
    from curation_pipeline_tests.shards.faults import jpeg

    raw = tmp_path / "raw"
    raw.mkdir()
    members = [("a.jpg", jpeg()), ("a.txt", b"A dog runs on the grass."), ("b.jpg", jpeg()), ("b.txt", b" \t\n"),
               ("c.jpg", jpeg()), ("d.jpg", jpeg()), ("d.txt", "\u3000\x0b".encode())]
    builders.write_members(raw / "caps.tar", members)
    _, results = run_pipeline(raw, tmp_path / "wh", ["caps"], scoring=ScoringResource(profile="text"))
    assert results["caps"].success
    report = duckdb.connect(str(tmp_path / "wh" / "quality.duckdb"), read_only=True)
    try:
        (in_report,) = report.execute("SELECT no_caption FROM shard_summary WHERE shard = 'caps'").fetchone()
    finally:
        report.close()
    assert metadata(results["caps"], "pairs")["no_caption"] == in_report == 3


def test_a_curated_sidecar_says_what_was_repaired_in_its_original_caption(tmp_path):
    """A caption with NUL bytes, or cut at max_caption_chars: the sidecar's original_caption is the repaired text,
    and its caption_problem says so (a consumer of the curated tar sees it without the warehouse); a caption read
    as it was has no such key."""
    import json

    from curation_pipeline_tests.faults import builders
    from curation_pipeline_tests.shards.faults import jpeg

    raw = tmp_path / "raw"
    raw.mkdir()
    long = ("A brown dog runs across the green grass of a sunny park. " * 200).encode()
    builders.write_members(raw / "fixed.tar", [
        ("a.jpg", jpeg((320, 240))), ("a.txt", b"A brown dog runs across the green grass of a park."),
        ("b.jpg", jpeg((320, 240), (20, 90, 200))), ("b.txt", b"A black cat\x00 sleeps on a red sofa at home."),
        ("c.jpg", jpeg((320, 240), (90, 200, 20))), ("c.txt", long)])
    _, results = run_pipeline(raw, tmp_path / "wh", ["fixed"], report=False, settle=False,
                              scoring=ScoringResource(profile="text"))
    assert results["fixed"].success
    members = curated_members(tmp_path / "wh" / "curated" / "fixed.tar")
    said = {name[: -len(".json")]: json.loads(data).get("caption_problem") for name, data in members.items()
            if name.endswith(".json")}
    assert said == {"a": None, "b": "NUL bytes removed", "c": f"truncated from {len(long)} chars"}
