"""The hostile shard: every bad-input case in ONE shard, beside good pairs of real photos
(Flickr8k when ``../shared`` is there, else the repository's own set: ``conftest.photo_root``).

Built once per session and run through the whole Dagster job (text profile, for speed);
``test_pipeline_faults`` and ``test_security`` read the same run.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from curation_pipeline_tests.faults import builders, flickr
from curation_pipeline_tests.shards import faults

N_GOOD = 6


class MarkerPayload:
    """Unpickling this creates ``path``: proof that a shard member was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass
class Hostile:
    raw: Path
    warehouse: Path
    marker: Path
    good: dict[str, bytes]  # key -> image bytes of every good pair
    good_captions: dict[str, str]
    odd_modes: tuple[str, ...] = ("cmyk", "png16", "palette", "anim")


def truncate_inside(path: Path, member: str) -> None:
    """Cut the tar in the middle of ``member``'s data: a transfer that stopped half way."""
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
        cut = info.offset_data + info.size // 2
    path.write_bytes(path.read_bytes()[:cut])


def hostile_members(marker: Path) -> tuple[list[tuple[str, bytes]], dict[str, bytes], dict[str, str]]:
    photos = flickr.large_flickr_rows()
    good = flickr.flickr_members(N_GOOD, prefix="good", rows=photos)
    spare = flickr.flickr_members(6, prefix="spare", rows=photos, start=N_GOOD)
    img = {name: data for name, data in spare if name.endswith(".jpg")}
    spare_jpgs = list(img.values())
    payload = pickle.dumps(MarkerPayload(marker))
    members = good[:4] + [
        ("zero.jpg", b""), ("zero.txt", b"A picture whose file is zero bytes long."),
        ("corrupt.jpg", good[0][1][:300]), ("corrupt.txt", b"A dog runs through the grass in a park."),
        ("nocap.jpg", spare_jpgs[0]),
        ("noimg.txt", b"A caption whose image never arrived."),
        ("latin1.jpg", spare_jpgs[1]),
        ("latin1.txt", "A caf\xe9 on a street corner in the old town.".encode("latin-1") + b"\xff"),
        ("huge.jpg", spare_jpgs[2]), ("huge.txt", b"word " * 200_000),  # 1 MB
        ("bomb.png", faults.bomb_png()), ("bomb.txt", b"A picture that declares two hundred megapixels."),
        ("cmyk.jpg", faults.cmyk_jpeg()), ("cmyk.txt", b"A CMYK picture of a blue square on a page."),
        ("png16.png", faults.png16()), ("png16.txt", b"A sixteen bit grey gradient image of a ramp."),
        ("palette.png", faults.palette_alpha_png()), ("palette.txt", b"A palette picture with a transparent colour."),
        ("anim.gif", faults.animated_gif()), ("anim.txt", b"An animated picture in red, green and blue."),
        ("pk.pyd", payload), ("pk.pickle", payload), ("pk.pth", payload),
        ("pk.jpg", spare_jpgs[3]), ("pk.txt", b"A man is standing next to a red car."),
        ("unk.xyz", b"unknown member type"), ("unk.jpg", spare_jpgs[4]),
        ("unk.txt", b"A boy is jumping into a swimming pool."),
        ("../evil.jpg", spare_jpgs[5]), ("../evil.txt", b"A key that climbs out of the folder."),
        ("/abs/evil.jpg", spare_jpgs[5]), ("/abs/evil.txt", b"A key that is an absolute path."),
    ] + good[4:] + [
        ("good000000.jpg", faults.jpeg()), ("good000000.txt", b"A second sample under a key already read."),
        ("tail.jpg", spare_jpgs[0]), ("tail.txt", b"A sample cut off by the end of the transfer."),
    ]
    good_images = {n[:-4]: d for n, d in good if n.endswith(".jpg")}
    good_captions = {n[:-4]: d.decode() for n, d in good if n.endswith(".txt")}
    return members, good_images, good_captions


@pytest.fixture(scope="session")
def hostile_raw(tmp_path_factory) -> Hostile:
    root = tmp_path_factory.mktemp("hostile")
    raw = root / "raw"
    raw.mkdir()
    marker = root / "UNPICKLED"
    members, good, captions = hostile_members(marker)
    path = builders.write_members(raw / "hostile.tar", members, tarfile.USTAR_FORMAT)
    truncate_inside(path, "tail.jpg")
    return Hostile(raw=raw, warehouse=root / "warehouse", marker=marker, good=good, good_captions=captions)


HOSTILE_SHARDS = ["hostile", "empty", "zerobytes", "badjson", "oddmembers"]


@pytest.fixture(scope="session")
def hostile_run(hostile_raw):
    """The hostile shard, a valid-but-empty tar, a zero-byte file, a shard of json sidecars built to break
    parsers and writers (``builders.HOSTILE_JSON``) and one of every non-regular member type plus a 2 GB
    sparse member, through the whole job + report."""
    from curation_pipeline.resources import ScoringResource
    from curation_pipeline_tests.conftest import run_pipeline

    builders.write_members(hostile_raw.raw / "empty.tar", [])
    (hostile_raw.raw / "zerobytes.tar").write_bytes(b"")
    builders.write_members(hostile_raw.raw / "badjson.tar", builders.hostile_json_members())
    builders.write_blocks(hostile_raw.raw / "oddmembers.tar", builders.odd_members_blocks())
    instance, results = run_pipeline(hostile_raw.raw, hostile_raw.warehouse, HOSTILE_SHARDS,
                                     scoring=ScoringResource(profile="text"))
    return hostile_raw, instance, results
