"""The shard code splits keys and writes curated tars with tarfile, not webdataset (whose package
imports torch, over a second of every run's start); these hold it to webdataset's own behaviour."""

import io
import json
import tarfile

import webdataset as wds
from webdataset.tariterators import base_plus_ext as wds_base_plus_ext
from webdataset.tariterators import group_by_keys, tar_file_expander

from curation_pipeline.shards.reader import base_plus_ext
from curation_pipeline.shards.writer import (FINAL_CAPTIONS_KEY, curated_record, read_curated_record,
                                             verify_curated, write_curated)
from curation_pipeline.values import jsonable

NAMES = ["000001.jpg", "a/b/000001.jpg", "dir.v2/key.tar.gz", "key.seg.json", "noext", ".hidden", "a/.b", "a.b/c",
         "x.", "dir/", "ünï/cödé.txt", "sp ace.png", "a/b/c.d.e.f", "", "key..txt", "k.JPG"]


def test_key_split_is_webdatasets():
    for name in NAMES:
        assert base_plus_ext(name) == wds_base_plus_ext(name), name


def test_curated_tar_bytes_are_webdatasets_tarwriter():
    samples = [("000000001", "jpg", b"\xff\xd8jpeg bytes", {"caption": "A dog runs .", "key": "000000001"}),
               ("000000002", "png", b"\x89PNG" + bytes(700), {"caption": "Ünïcode café ☕ 日本語", "n": 2}),
               ("dir/000000003", "webp", b"RIFF....WEBP", {"caption": "", "scores": {"clip": 0.31}})]
    ours = io.BytesIO()
    assert write_curated(ours, samples) == 3
    theirs = io.BytesIO()
    with wds.TarWriter(theirs, user="", group="", mode=0o644, mtime=0.0, encoder=False) as writer:
        for key, ext, image, meta in samples:
            writer.write({"__key__": key, ext: image, "txt": meta["caption"].encode("utf-8"),
                          "json": json.dumps(meta, ensure_ascii=False, sort_keys=True, default=jsonable).encode("utf-8")})
    assert ours.getvalue() == theirs.getvalue()


def test_the_record_of_final_captions_is_a_global_header_readers_skip(tmp_path):
    """The curated tar records the final_captions it was made from in a PAX global header, its first block:
    after it the bytes are TarWriter's; webdataset (and tarfile) read the same samples; ``read_curated_record``
    reads it from the first blocks only; a tar with no sample has none (tarfile cannot read a global header
    followed by no member)."""
    image = bytes(range(256)) * 8192  # 2 MiB: the record must not cost reading it
    samples = [("k1", "jpg", image, {"caption": "One.", "key": "k1"}),
               ("k2", "png", b"\x89PNG", {"caption": "Two.", "key": "k2"})]
    record = curated_record("s1", "run-1")
    assert record[FINAL_CAPTIONS_KEY] == "run-1" and curated_record("s1", None) == {"CURATION.shard": "s1"}
    plain, recorded = io.BytesIO(), io.BytesIO()
    write_curated(plain, samples)
    write_curated(recorded, samples, record)
    head = recorded.getvalue()[:1024]
    assert head[156:157] == b"g" and recorded.getvalue()[1024:] == plain.getvalue()[:len(recorded.getvalue()) - 1024]
    assert _samples(recorded.getvalue()) == _samples(plain.getvalue()) and len(_samples(plain.getvalue())) == 2
    path = tmp_path / "c.tar"
    path.write_bytes(recorded.getvalue())
    assert verify_curated(str(path), ["k1", "k2"], record) == 2
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["k1.jpg", "k1.json", "k1.txt", "k2.json", "k2.png", "k2.txt"]

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            self.read_bytes += len(data)
            return data

    handle = Counting(recorded.getvalue())
    assert read_curated_record(handle) == (record, False) and handle.read_bytes < 64 * 1024
    assert read_curated_record(io.BytesIO(plain.getvalue())) == ({}, False)
    empty = io.BytesIO()
    assert write_curated(empty, [], record) == 0
    assert read_curated_record(io.BytesIO(empty.getvalue())) == ({}, True)
    assert _samples(empty.getvalue()) == []


def _samples(data: bytes) -> list[dict]:
    """The samples webdataset reads from a tar's bytes."""
    return [{k: v for k, v in s.items() if k not in ("__url__", "__local_path__")}
            for s in group_by_keys(tar_file_expander([{"stream": io.BytesIO(data), "url": "c.tar"}]))]
