"""A caption text_quality marks bad_encoding goes through the rewrite path on a real shard: mojibake is
repaired by the cleaner, re-scored and accepted, so the pair is published with the caption as written;
U+FFFD (bytes the reader could not decode) cannot be repaired, and the pair goes the way the policy says."""

import io
import tarfile

import pytest

from curation_pipeline.rewriting.cleaner import CaptionCleaner, clean_caption
from curation_pipeline.scoring.text_quality import caption_rules
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline

SHARD = "sample-000000"
WRITTEN = "A café on the corner"
MOJIBAKE = WRITTEN.encode("utf-8").decode("cp1252")  # "A cafÃ© on the corner": UTF-8 read as cp1252
# key -> the .txt bytes put in the shard: the mojibake stored as UTF-8, and the caption in Latin-1 (not UTF-8:
# the reader replaces its "é" with U+FFFD)
CAPTIONS = {"000000001": MOJIBAKE.encode("utf-8"), "000000011": WRITTEN.encode("latin-1")}


@pytest.fixture(scope="module")
def garbled_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("encoding")
    raw = tmp / "raw"
    raw.mkdir()
    with tarfile.open(RAW_SAMPLES / f"{SHARD}.tar") as src, tarfile.open(raw / f"{SHARD}.tar", "w") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            key, _, ext = member.name.partition(".")
            if ext == "txt" and key in CAPTIONS:
                data = CAPTIONS[key]
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    _, results = run_pipeline(raw, tmp / "warehouse", [SHARD], report=False)
    assert results[SHARD].success
    return tmp / "warehouse"


def test_mojibake_is_published_repaired(garbled_run):
    wh = Warehouse(str(garbled_run))
    final = wh.read_table("final_captions", SHARD).set_index("key")
    row = final.loc["000000001"]
    assert row["original_caption"] == MOJIBAKE and caption_rules(MOJIBAKE) == ["bad_encoding"]
    assert (row["outcome"], row["final_caption"], row["rewriter"], row["rewriter_version"]) == (
        "rewritten", WRITTEN, "cleaner", CaptionCleaner.version)
    lineage = wh.read_table("rewritten_captions", SHARD).set_index("key").loc["000000001"]
    # the acceptance check: the re-score rose past the margin, and the rewrite is minimal and well formed
    assert lineage["accepted"] and lineage["rewriter_output"] == "fix_encoding"
    assert (lineage["quality_before"], lineage["quality_after"]) == (60.0, 100.0)
    assert lineage["reason"] == "score improved 60 -> 100"
    with tarfile.open(garbled_run / "curated" / f"{SHARD}.tar") as tar:
        assert tar.extractfile("000000001.txt").read().decode("utf-8") == WRITTEN


def test_lost_bytes_are_not_repaired_and_the_policy_drops_the_pair(garbled_run):
    wh = Warehouse(str(garbled_run))
    row = wh.read_table("final_captions", SHARD).set_index("key").loc["000000011"]
    assert row["original_caption"] == "A caf\ufffd on the corner"
    assert row["outcome"] == "dropped" and row["final_caption"] is None
    assert row["reason"].endswith("(no candidate: no change; original 60.0 < drop_threshold 65)")  # says why dropped
    with tarfile.open(garbled_run / "curated" / f"{SHARD}.tar") as tar:
        assert "000000011.txt" not in tar.getnames()


def test_mojibake_beside_lost_bytes_is_repaired_and_the_lost_bytes_stay():
    cleaned, ops = clean_caption("A cafÃ© on the corner, caf\ufffd sign")
    assert (cleaned, ops) == ("A café on the corner, caf\ufffd sign", ["fix_encoding"])
    assert "bad_encoding" in caption_rules(cleaned)  # no gain from it: the acceptance check rejects it
