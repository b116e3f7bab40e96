"""verify_curated, the last check before a curated tar is published: a member or sample that repeats
is named, never merged over, and the check holds one sample in memory, not the shard."""

import json
import tarfile
import tracemalloc

import numpy as np
import pytest

from curation_pipeline.shards.writer import CuratedShardInvalid, verify_curated, write_curated, write_tar


def _sample(key: str, image: bytes = b"\xff\xd8img") -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", image), (f"{key}.json", json.dumps({"key": key, "caption": "c"}).encode()),
            (f"{key}.txt", b"c")]


def _tar(path, members) -> str:
    return str(write_tar(path, members))


def test_a_member_that_repeats_is_named_not_overwritten(tmp_path):
    assert verify_curated(_tar(tmp_path / "ok.tar", _sample("k1") + _sample("k2")), ["k1", "k2"]) == 2
    twice = _sample("k1") + [("k1.txt", b"another caption")] + _sample("k2")
    with pytest.raises(CuratedShardInvalid, match=r"member 'k1\.txt' appears twice"):
        verify_curated(_tar(tmp_path / "twice.tar", twice), ["k1", "k2"])


@pytest.mark.parametrize("members, error", [
    (_sample("k1") + _sample("k2") + _sample("k1"), r"sample 'k1' appears again after other samples"),
    (_sample("k1")[:1] + _sample("k2") + _sample("k1")[1:], r"sample 'k1' has members \['jpg'\]"),
], ids=["whole", "split"])
def test_a_sample_that_comes_back_after_another_is_named(tmp_path, members, error):
    """webdataset groups consecutive members: a key seen again is a second sample, not more of the first."""
    with pytest.raises(CuratedShardInvalid, match=error):
        verify_curated(_tar(tmp_path / "again.tar", members), ["k1", "k2"])


def test_a_key_the_tar_cannot_hold_is_named_as_a_repeat(tmp_path):
    """A NUL in a key (the reader skips such names now) cuts each member's name to the same 'a'."""
    path = tmp_path / "c.tar"
    with open(path, "wb") as handle:
        write_curated(handle, [("a\x00b", "jpg", b"\xff\xd8img", {"key": "a\x00b", "caption": "c"})])
    with pytest.raises(CuratedShardInvalid, match=r"member 'a' appears twice"):
        verify_curated(str(path), ["a\x00b"])


def test_verify_holds_one_sample_not_the_shard(tmp_path):
    n, size = 40, 1_000_000
    image = np.random.default_rng(0).bytes(size)
    path = tmp_path / "c.tar"
    with open(path, "wb") as handle:
        write_curated(handle, ((f"k{i:03d}", "jpg", image, {"key": f"k{i:03d}", "caption": "c"}) for i in range(n)))
    tracemalloc.start()
    try:
        assert verify_curated(str(path), [f"k{i:03d}" for i in range(n)]) == n
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * size, f"{peak:,} bytes at peak for a {path.stat().st_size:,}-byte tar"


def test_an_image_cut_short_still_fails(tmp_path):
    """Images are not kept, but still read through: a tar cut inside the last image fails as before."""
    path = tmp_path / "c.tar"
    with open(path, "wb") as handle:  # .webp sorts after .json and .txt: the image is the last member
        write_curated(handle, [("k1", "webp", bytes(5000), {"key": "k1", "caption": "c"})])
    with tarfile.open(path) as tar:
        member = tar.getmember("k1.webp")
    path.write_bytes(path.read_bytes()[:member.offset_data + 2000])
    with pytest.raises(CuratedShardInvalid, match="does not read back"):
        verify_curated(str(path), ["k1"])
