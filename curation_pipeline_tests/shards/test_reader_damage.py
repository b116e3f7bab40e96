"""Damage tarfile's stream mode passes over in silence, and sample content the reader used to lose:
every case is a counted skip or a kept value, and valid archives still read with no skip."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from curation_pipeline.shards.reader import ReaderLimits, ShardReader, _to_rgb, decode_image
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults

N = 10
MEMBERS = [(f"s{i:03d}.{ext}", data) for i in range(N)
           for ext, data in (("jpg", faults.jpeg((32, 24))), ("txt", f"caption {i}".encode()))]


def read(path, **kwargs):
    reader = ShardReader(str(path), "s", decode="header", **kwargs)
    return reader, {s.key: s for s in reader}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid 10-sample tar and the header offset of s005's first member."""
    path = builders.write_members(tmp_path_factory.mktemp("good") / "good.tar", MEMBERS, tar_format=tarfile.USTAR_FORMAT)
    with tarfile.open(path) as tar:
        offset = {m.name: m.offset for m in tar.getmembers()}["s005.jpg"]
    with tarfile.open(path) as tar:
        end = max(m.offset_data + m.size for m in tar.getmembers())
    return path.read_bytes(), offset, -(-end // 512) * 512  # end: where the end-of-archive marker begins


def flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


DAMAGE = {  # name -> (damage(raw tar, header offset of s005), reason)
    "bad checksum": (lambda raw, off: flip(raw, off + 148), "corrupt_tar"),
    "zeroed header": (lambda raw, off: raw[:off] + bytes(512) + raw[off + 512:], "corrupt_tar"),
    "cut mid-header": (lambda raw, off: raw[:off + 200], "truncated_tar"),
    "cut at a member boundary": (lambda raw, off: raw[:off], "truncated_tar"),
}


@pytest.mark.parametrize("case", DAMAGE)
@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_damage_mid_archive_is_a_counted_skip_naming_the_offset(tmp_path, good, case, compress):
    raw, offset, _ = good
    damage, reason = DAMAGE[case]
    data = damage(raw, offset)
    path = tmp_path / "damaged.tar"
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    reader, samples = read(path)
    assert sorted(samples) == [f"s{i:03d}" for i in range(5)]  # the samples before the damage are kept
    assert [s.reason for s in reader.skips] == [reason]
    assert f"offset {offset}" in reader.skips[0].detail and "after 10 members" in reader.skips[0].detail
    assert reader.fingerprint.size == path.stat().st_size  # every byte was still hashed


@pytest.mark.parametrize("keep", [0, 1], ids=["no end marker", "half an end marker"])
def test_a_tar_cut_after_its_last_member_is_truncated(tmp_path, good, keep):
    raw, _, end = good
    path = tmp_path / "cut.tar"
    path.write_bytes(raw[:end + keep * 512])
    reader, samples = read(path)
    assert len(samples) == N
    assert [s.reason for s in reader.skips] == ["truncated_tar"] and f"offset {end}" in reader.skips[0].detail


def test_garbage_after_the_end_marker_is_reported(tmp_path, good):
    raw, _, end = good
    path = tmp_path / "tail.tar"
    path.write_bytes(raw[:end + 1024] + tarfile.TarInfo("late.jpg").tobuf() + raw[end + 1536:])
    reader, samples = read(path)
    assert len(samples) == N and [s.reason for s in reader.skips] == ["corrupt_tar"]


def _stream_written(path, mode):
    with open(path, "wb") as handle, tarfile.open(fileobj=handle, mode=mode) as tar:
        for name, data in MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _tarwriter(path):
    with wds.TarWriter(str(path), encoder=False) as writer:
        for i in range(N):
            writer.write({"__key__": f"s{i:03d}", "jpg": MEMBERS[2 * i][1], "txt": MEMBERS[2 * i + 1][1]})


WRITERS = {
    **{f"tarfile {fmt}": (lambda path, fmt=fmt: builders.write_members(path, MEMBERS, getattr(tarfile, fmt)))
       for fmt in ("USTAR_FORMAT", "GNU_FORMAT", "PAX_FORMAT")},
    **{f"stream {mode}": (lambda path, mode=mode: _stream_written(path, mode)) for mode in ("w|", "w|gz", "w|bz2", "w|xz")},
    **{f"file {mode}": (lambda path, mode=mode: _stream_written(path, mode)) for mode in ("w:gz", "w:xz")},
    "webdataset TarWriter": _tarwriter,
}


@pytest.mark.parametrize("writer", WRITERS)
def test_valid_tars_read_whole_with_no_skip(tmp_path, writer):
    path = tmp_path / "valid.tar"
    WRITERS[writer](path)
    reader, samples = read(path)
    assert len(samples) == N and reader.skips == []
    assert reader.fingerprint.size == path.stat().st_size


def test_an_empty_valid_tar_has_no_skip(tmp_path):
    path = builders.write_members(tmp_path / "empty.tar", [])
    reader, samples = read(path)
    assert samples == {} and reader.skips == []


def test_a_second_json_keeps_the_first_and_is_an_extra_meta_skip(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", faults.jpeg((32, 24))), ("a.json", json.dumps({"uid": "first"}).encode()),
        ("a.JSON", json.dumps({"uid": "second"}).encode()), ("a.txt", b"cap")])
    reader, samples = read(path)
    assert json.loads(samples["a"].record["meta_json"]) == {"uid": "first"}
    assert [(s.reason, s.key, s.member) for s in reader.skips] == [("extra_meta", "a", "a.JSON")]


def _encode(image, fmt):
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


PIXELS16 = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20


def test_a_big_endian_16_bit_tiff_decodes():
    data = _encode(Image.frombytes("I;16B", (64, 48), PIXELS16.astype(">u2").tobytes()), "TIFF")
    for full in (True, "verify"):
        _, info = decode_image(data, full=full)
        assert info["decode_status"] == "ok" and info["image_mode"] == "I;16B", full
    rgb, _ = decode_image(data)
    assert rgb.mode == "RGB" and np.asarray(rgb)[..., 0].max() == PIXELS16.max() >> 8


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")])
def test_16_bit_modes_of_every_byte_order_convert_to_rgb(mode, dtype):
    rgb = np.asarray(_to_rgb(Image.frombytes(mode, (64, 48), PIXELS16.astype(dtype).tobytes())))
    assert rgb.shape == (48, 64, 3) and np.array_equal(rgb[..., 0], (PIXELS16 >> 8).astype(np.uint8))


def test_max_pixels_is_the_limit_not_pils_warning_threshold():
    assert Image.MAX_IMAGE_PIXELS < 95_000_000 < ReaderLimits().max_pixels  # the case this test is about
    data = _encode(Image.new("1", (10_000, 9_500)), "PNG")  # 95 MP declared, a few kB stored
    _, info = decode_image(data, full=False)
    assert info["decode_status"] == "ok" and (info["width"], info["height"]) == (10_000, 9_500)
    _, info = decode_image(data, ReaderLimits(max_pixels=90_000_000), full=False)
    assert info["decode_status"] == "too_large" and info["decode_error"] == "10000x9500 exceeds 90000000 pixels"
    _, info = decode_image(data, ReaderLimits(max_pixels=1_000_000), full=False)
    assert info["decode_status"] == "too_large"
    _, info = decode_image(faults.bomb_png(), full=False)  # 200 MP, over max_pixels
    assert info["decode_status"] == "too_large"


def test_a_caption_both_undecodable_and_too_long_records_both(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [("a.jpg", faults.jpeg((32, 24))), ("a.txt", b"\xff" + b"x" * 20)])
    _, samples = read(path, limits=ReaderLimits(max_caption_chars=10))
    assert samples["a"].caption == "\ufffd" + "x" * 9
    assert samples["a"].record["caption_problem"] == "invalid utf-8 replaced; truncated from 21 chars"
