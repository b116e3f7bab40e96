"""The shard code splits keys and writes curated tars with tarfile, not webdataset (whose package
imports torch, over a second of every run's start); these hold it to webdataset's own behaviour."""

import io
import json

import webdataset as wds
from webdataset.tariterators import base_plus_ext as wds_base_plus_ext

from curation_pipeline.shards.reader import base_plus_ext
from curation_pipeline.shards.writer import write_curated
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
