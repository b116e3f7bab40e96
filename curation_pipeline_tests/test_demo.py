"""The committed sample shards are reproducible and hold what the manifest says."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from curation_pipeline.demo import SAMPLE_KINDS, expected_manifest, generate_sample_shards

RAW = Path(__file__).resolve().parents[1] / "data" / "raw"
IMAGE_EXTS = ("jpg", "png", "webp")
CAPTION_KINDS = {
    "good", "mixed_boilerplate", "boilerplate", "filename", "url", "html_entities", "hashtags",
    "non_english", "empty", "one_word", "mismatched", "all_caps", "repeated_words", "duplicate",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _samples(shard: Path) -> dict[str, dict[str, bytes]]:
    """Members grouped by key, read with tarfile alone: no webdataset conventions assumed."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    return expected_manifest()


@pytest.fixture(scope="module")
def shards() -> list[Path]:
    paths = sorted(RAW.glob("sample-*.tar"))
    assert [p.name for p in paths] == ["sample-000000.tar", "sample-000001.tar", "sample-000002.tar"]
    return paths


def test_regeneration_matches_committed_bytes(tmp_path, shards):
    regenerated = generate_sample_shards(tmp_path)
    assert [p.name for p in regenerated] == [p.name for p in shards]
    for new, committed in zip(regenerated, shards):
        assert _sha256(new) == _sha256(committed), f"{committed.name} differs; rerun the generator"


def test_tar_headers_are_pinned(shards):
    with tarfile.open(shards[0]) as tar:
        headers = {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in tar.getmembers()}
    assert len(headers) == 1
    assert headers.pop()[1:] == (0, 0, "", "", 0o644)


def test_shards_are_small(shards):
    assert sum(p.stat().st_size for p in shards) < 3_000_000


def test_tar_contents_match_manifest(shards, manifest):
    for shard in shards:
        truth = {row["key"]: row for row in manifest if row["shard"] == shard.name}
        samples = _samples(shard)
        assert sorted(samples) == sorted(truth)
        for key, members in samples.items():
            row = truth[key]
            images = [ext for ext in members if ext in IMAGE_EXTS]
            assert bool(images) == row["has_image"], key
            assert ("txt" in members) == row["has_caption"], key
            if row["has_caption"]:
                assert members["txt"].decode("utf-8") == row["caption"], key
            if "json" in members:
                assert json.loads(members["json"])["kind"] == row["kind"], key
            if images:
                assert _decodes(members[images[0]]) == row["image_ok"], key


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except (OSError, SyntaxError):
        return False


def test_webdataset_reads_every_sample(shards, manifest):
    for shard in shards:
        keys = [s["__key__"] for s in wds.WebDataset(str(shard), shardshuffle=False)]
        assert keys == [row["key"] for row in manifest if row["shard"] == shard.name]


def test_every_shard_mixes_caption_kinds(manifest):
    assert {row["kind"] for row in manifest} == set(SAMPLE_KINDS)
    for shard in {row["shard"] for row in manifest}:
        kinds = Counter(row["kind"] for row in manifest if row["shard"] == shard)
        assert CAPTION_KINDS <= set(kinds), shard
        assert kinds["good"] >= 10
        assert 36 <= sum(kinds.values()) <= 44


def test_keys_are_unique_across_shards(manifest):
    keys = [row["key"] for row in manifest]
    assert len(keys) == len(set(keys))
    assert all(len(k) == 9 and k.isdigit() for k in keys)


def test_broken_samples_are_present(shards, manifest):
    by_kind = {row["kind"]: row for row in manifest}
    samples = {key: members for shard in shards for key, members in _samples(shard).items()}
    assert set(samples[by_kind["missing_image"]["key"]]) == {"txt"}
    assert "txt" not in samples[by_kind["missing_caption"]["key"]]
    assert samples[by_kind["empty_image"]["key"]]["jpg"] == b""
    corrupt = samples[by_kind["corrupt_image"]["key"]]["jpg"]
    assert corrupt.startswith(b"\xff\xd8") and not _decodes(corrupt)


def test_rule_breaking_images(shards, manifest):
    samples = {key: members for shard in shards for key, members in _samples(shard).items()}
    sizes = {}
    for row in manifest:
        members = samples[row["key"]]
        ext = next((e for e in members if e in IMAGE_EXTS), None)
        if row["image_ok"] and ext:
            sizes[row["kind"], row["key"]] = Image.open(io.BytesIO(members[ext])).size
    for (kind, _), (w, h) in sizes.items():
        if kind == "tiny_image":
            assert min(w, h) < 200
        elif kind == "wide_image":
            assert w / h > 3
        else:
            assert min(w, h) >= 200 and max(w, h) / min(w, h) <= 3


def test_duplicates_copy_image_and_caption(shards, manifest):
    samples = {key: members for shard in shards for key, members in _samples(shard).items()}
    shard_of = {row["key"]: row["shard"] for row in manifest}
    dups = [row for row in manifest if row["kind"] == "duplicate"]
    assert any(shard_of[d["duplicate_of"]] == d["shard"] for d in dups)
    assert any(shard_of[d["duplicate_of"]] != d["shard"] for d in dups)
    for dup in dups:
        assert dup["duplicate_of"] < dup["key"], "the copy must follow its original"
        copy, original = samples[dup["key"]], samples[dup["duplicate_of"]]
        assert {e: v for e, v in copy.items() if e != "json"} == {
            e: v for e, v in original.items() if e != "json"
        }
