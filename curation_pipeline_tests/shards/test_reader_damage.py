"""Damage tarfile's stream mode passes over in silence, and sample content the reader used to lose:
every case is a counted skip or a kept value, and valid archives still read with no skip."""

import gzip
import io
import json
import tarfile
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from curation_pipeline.shards import reader as reader_module
from curation_pipeline.shards.reader import ReaderLimits, ShardReader, _to_rgb, decode_image
from curation_pipeline.shards.writer import verify_curated, write_curated
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults

N = 10
MEMBERS = [(f"s{i:03d}.{ext}", data) for i in range(N)
           for ext, data in (("jpg", faults.jpeg((32, 24))), ("txt", f"caption {i}".encode()))]


def read(path, **kwargs):
    reader = ShardReader(str(path), "s", decode="header", **kwargs)
    return reader, {s.key: s for s in reader}


def read_traced(path):
    """``read``, and the most memory Python held meanwhile."""
    import tracemalloc

    tracemalloc.start()
    try:
        return *read(path), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


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
    rgb = np.asarray(_to_rgb(Image.frombytes(mode, (64, 48), PIXELS16.astype(dtype).tobytes()))[0])
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


class _FailsOnce:
    """The file fsspec opens, whose ``fail_at``-th read raises (an S3 read timeout, an NFS hiccup); counts reads."""

    def __init__(self, opened, fail_at: int, log: list):
        self._opened, self._fail_at, self._log = opened, fail_at, log

    def __enter__(self):
        self._handle = self._opened.__enter__()
        return self

    def __exit__(self, *exc):
        return self._opened.__exit__(*exc)

    def read(self, size=-1):
        self._log.append(size)
        if len(self._log) == self._fail_at:
            raise OSError("read timed out")
        return self._handle.read(size)


def _flaky_fsspec(monkeypatch, fail_at: int) -> list:
    """fsspec.open, as the reader calls it, giving a file whose ``fail_at``-th read fails (0: none)."""
    log: list = []
    monkeypatch.setattr(reader_module, "fsspec", SimpleNamespace(
        open=lambda *args, **kwargs: _FailsOnce(fsspec.open(*args, **kwargs), fail_at, log)))
    return log


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_a_read_error_of_the_file_itself_fails_the_read_wherever_it_falls(tmp_path, monkeypatch, compress):
    """tarfile drops the bytes it had buffered when the file's read raises: taken for damage, the
    samples after it vanished with no skip, and the fingerprint of the bytes received still matched."""
    big = faults.jpeg((32, 24)) + np.random.default_rng(0).bytes(300_000)  # random: many reads, gzipped too
    members = [("big.jpg", big), ("big.txt", b"big caption")] + [
        (f"s{i:03d}.{ext}", data) for i in range(30)
        for ext, data in (("jpg", faults.jpeg((32, 24))), ("txt", f"caption {i}".encode()))]
    path = builders.write_members(tmp_path / "s.tar", members)
    if compress:
        path.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
    reads = _flaky_fsspec(monkeypatch, fail_at=0)  # never fails: how many reads a whole pass makes
    reader, samples = read(path)
    assert len(samples) == 31 and reader.skips == []
    whole = len(reads)
    assert whole > 10
    for fail_at in range(1, whole + 1):  # every read: the first header, mid-member, the end marker, the drain
        _flaky_fsspec(monkeypatch, fail_at)
        reader = ShardReader(str(path), "s", decode="header")
        with pytest.raises(OSError, match="read timed out") as failed:
            list(reader)
        assert "reading the file failed" in " ".join(getattr(failed.value, "__notes__", [])), fail_at
        assert reader.fingerprint is None
    _flaky_fsspec(monkeypatch, fail_at=0)  # the retry reads the whole shard
    reader, samples = read(path)
    assert len(samples) == 31 and reader.skips == []


def test_a_nul_byte_in_a_member_name_is_an_unsafe_name_skip_and_the_rest_publishes(tmp_path):
    """A pax path can hold a NUL; a curated tar's name field ends at it, so the sample could never be
    verified and the whole shard never published. It is skipped from its header, unread."""
    image = faults.jpeg((32, 24))
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("good.jpg", image), ("good.txt", b"fine"), ("a\x00b.jpg", image), ("a\x00b.txt", b"bad")]:
            info = tarfile.TarInfo("placeholder")
            info.size, info.pax_headers = len(data), {"path": name}
            tar.addfile(info, io.BytesIO(data))
    reader, samples = read(path)
    assert sorted(samples) == ["good"]
    assert [(s.reason, s.key, s.member, s.detail) for s in reader.skips] == [
        ("unsafe_name", None, "a\\x00b.jpg", "NUL byte in member name"),
        ("unsafe_name", None, "a\\x00b.txt", "NUL byte in member name")]
    curated = tmp_path / "curated.tar"
    with open(curated, "wb") as handle:
        write_curated(handle, [(s.key, s.record["image_ext"], s.image_data, {"key": s.key, "caption": s.caption})
                               for s in ShardReader(str(path), "s", decode=False)])
    assert verify_curated(str(curated), ["good"]) == 1


@pytest.mark.parametrize("caption, kind", [(2024, "int"), (["A cat", "on a mat"], "list"), ({"en": "A cat"}, "dict"),
                                           (True, "bool"), (1.5, "float")])
def test_a_json_caption_that_is_not_text_is_a_caption_problem(tmp_path, caption, kind):
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", faults.jpeg((32, 24))), ("a.json", json.dumps({"caption": caption, "uid": "ab"}).encode()),
        ("b.jpg", faults.jpeg((32, 24))), ("b.json", json.dumps({"caption": None}).encode()),
        ("c.jpg", faults.jpeg((32, 24))), ("c.json", json.dumps({"caption": caption}).encode()), ("c.txt", b"txt")])
    reader, samples = read(path)
    record = samples["a"].record
    assert samples["a"].caption is None and record["caption_source"] is None and record["meta_error"] is None
    assert record["caption_problem"] == f"non-text json caption ({kind}) not used"
    assert json.loads(record["meta_json"])["caption"] == caption  # the json itself is kept whole
    assert samples["b"].record["caption_problem"] is None  # null: no caption, nothing wrong with it
    assert samples["c"].caption == "txt" and samples["c"].record["caption_problem"] is None  # the .txt wins
    assert reader.skips == []


def test_a_decompression_bomb_is_refused_with_memory_bounded(tmp_path, good, monkeypatch):
    """A few KB of bzip2'd zeros after a valid tar, named .tar: tarfile's own stream mode decompressed each chunk
    whole (3.5 GB held for 2 GB of zeros), and the zeros read as padding with no skip. Now a compressed shard is
    decompressed a bounded read at a time, and past ``MAX_INFLATION`` times its size (plus a slack of 1 GiB, here
    64 MiB) it is refused."""
    import bz2

    monkeypatch.setattr(reader_module, "INFLATION_SLACK", 64 << 20)
    raw, _, _ = good
    squeeze = bz2.BZ2Compressor(9)
    zeros = bytes(16 << 20)
    parts = [squeeze.compress(raw)] + [squeeze.compress(zeros) for _ in range(8)] + [squeeze.flush()]
    path = tmp_path / "bomb.tar"
    path.write_bytes(b"".join(parts))
    assert path.stat().st_size < 20_000  # 128 MB of zeros in it
    reader, samples, peak = read_traced(path)
    assert len(samples) == N  # the samples before the bomb are read
    (skip,) = reader.skips
    assert skip.reason == "corrupt_tar" and "decompresses to over 200 times its size" in skip.detail
    assert "a decompression bomb, or content that repeats throughout?" in skip.detail
    assert skip.detail.startswith(f"after {2 * N} members: the bzip2")
    assert peak < 16 << 20, peak  # never the zeros at once
    assert reader.fingerprint.size == path.stat().st_size  # every byte still hashed


@pytest.mark.parametrize("header", ["pax", "gnu"])
def test_an_oversized_extended_header_is_refused_unread(tmp_path, header):
    """tarfile reads a pax header's or GNU long name's data whole before any member check (200 MB held for one
    comment): over ``MAX_EXTENDED_HEADER`` the shard is refused there, the samples before it kept."""
    from curation_pipeline.shards.reader import MAX_EXTENDED_HEADER

    path = tmp_path / "x.tar"
    fmt = tarfile.PAX_FORMAT if header == "pax" else tarfile.GNU_FORMAT
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in MEMBERS[:2]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("big/" + "n" * (4 << 20) + ".txt" if header == "gnu" else "big.txt")
        if header == "pax":
            info.pax_headers = {"comment": "A" * (4 << 20)}
        info.size = 5
        tar.addfile(info, io.BytesIO(b"a cat"))
    reader, samples, peak = read_traced(path)
    assert list(samples) == ["s000"]
    (skip,) = reader.skips
    what = "a pax extended header" if header == "pax" else "a GNU long-name header"
    assert skip.reason == "corrupt_tar" and skip.detail.startswith(f"after 2 members: {what} at tar offset ")
    assert f"over the {MAX_EXTENDED_HEADER:,}-byte limit; not read on" in skip.detail
    assert peak < 2 << 20, peak


def test_streams_that_follow_one_another_read_as_one(tmp_path, good):
    """pbzip2 writes a bzip2 stream per 900 KB block, bgzip (and ``gzip >>``) a gzip member per block: valid files
    that ``tar -tjf`` lists whole. They read whole, as the gzip and bz2 modules read them."""
    import bz2

    raw, _, _ = good
    path = tmp_path / "blocks.tar"
    for compress in (bz2.compress, lambda data: gzip.compress(data, mtime=0)):
        path.write_bytes(b"".join(compress(raw[i:i + 1000]) for i in range(0, len(raw), 1000)))
        reader, samples = read(path)
        assert len(samples) == N and reader.skips == []
        assert reader.fingerprint.size == path.stat().st_size


def test_a_compressed_stream_failing_its_check_is_corrupt_not_cut_short(tmp_path, good):
    """gzip's CRC now checked (tarfile never did): a byte flipped inside a member's data fails the check at the
    stream's end, after every member was read. That is said as corruption of unknown place, not as a file cut
    short, and the last sample is not told a part of it may be lost."""
    raw, _, _ = good
    packed = bytearray(gzip.compress(raw, compresslevel=0, mtime=0))  # stored blocks: a flipped byte stays a byte
    at = packed.index(b"caption 3")
    packed[at + 8] ^= 0x01  # "caption 3" -> "caption 2"
    path = tmp_path / "crc.tar"
    path.write_bytes(bytes(packed))
    reader, samples = read(path)
    assert len(samples) == N and samples["s003"].caption == "caption 2"  # read before the check could fail
    (skip,) = reader.skips
    assert skip.reason == "corrupt_tar" and skip.detail.startswith(f"after {2 * N} members: the gzip stream fails its")
    assert "which one is unknown" in skip.detail
    assert all("lost" not in str(s.record.get("caption_problem")) for s in samples.values())


def test_a_chain_of_extended_headers_is_refused(tmp_path):
    """tarfile reads the extended headers before a member by recursion: 3,000 tiny global pax headers overflowed
    its stack, and a few hundred of 1 MB each were all held. Past 16 before one member the shard is refused."""
    from curation_pipeline.shards.reader import MAX_EXTENDED_HEADERS

    one = tarfile.TarInfo("x")
    block = one.create_pax_global_header({"comment": "c"})
    data = faults.jpeg((32, 24))
    with tarfile.open(tmp_path / "m.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in (("a.jpg", data), ("a.txt", b"a cat")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    members = (tmp_path / "m.tar").read_bytes().rstrip(b"\0")
    members += bytes(-len(members) % 512)
    path = tmp_path / "chain.tar"
    path.write_bytes(members + block * 3000 + members + bytes(10240))
    reader, samples = read(path)
    assert list(samples) == ["a"]
    (skip,) = reader.skips
    assert skip.reason == "corrupt_tar"
    assert f"is the {MAX_EXTENDED_HEADERS + 1}th extended header before one member" in skip.detail
