"""Tar members nobody here would write: sparse members that declare gigabytes, links, FIFOs,
devices, directories, names that are not UTF-8, and json sidecars built to break parsers."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path

from curation_pipeline_tests.photos import members as photo_members

GB = 1 << 30


def _checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def sparse_member(name: str, declared: int, stored: bytes = b"\xff" * 512) -> bytes:
    """An old-GNU sparse member ('S'): ``stored`` bytes on disk, ``declared`` bytes when expanded
    (the rest is a hole). A 70 KB tar can declare 2 GB this way; tarfile's reader expands it."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = len(stored), 0, 0o644, tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT)[-512:])
    header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # one data run at offset 0 ...
    header[398:410] = tarfile.itn(len(stored), 12, tarfile.GNU_FORMAT)  # ... of the stored bytes
    header[482] = 0  # no extended sparse headers
    header[483:495] = tarfile.itn(declared, 12, tarfile.GNU_FORMAT)  # the expanded ("real") size
    _checksum(header)
    padding = b"\0" * (-len(stored) % 512)
    return bytes(header) + stored + padding


def regular(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)


def special(name: str, kind: bytes, linkname: str = "") -> bytes:
    """A member without data: tarfile.SYMTYPE, LNKTYPE, FIFOTYPE, CHRTYPE, BLKTYPE or DIRTYPE."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime, info.mode = kind, linkname, 0, 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT)


def write_blocks(path: Path, blocks: list[bytes]) -> Path:
    """A tar from raw member blocks, closed with the two zero blocks."""
    path.write_bytes(b"".join(blocks) + b"\0" * 1024)
    return path


def good_blocks(n: int, prefix: str = "good", start: int = 0) -> list[bytes]:
    return [regular(name, data) for name, data in photo_members(n, prefix=prefix, start=start)]


def odd_members_blocks() -> list[bytes]:
    """Every non-regular member type, a 2 GB sparse member, a name that is not UTF-8, around good pairs."""
    bad_name = b"bad\xffname.jpg".decode("utf-8", "surrogateescape")
    return good_blocks(2, "odd") + [
        special("adir", tarfile.DIRTYPE),
        special("sym.jpg", tarfile.SYMTYPE, "odd000000.jpg"),
        special("hard.jpg", tarfile.LNKTYPE, "odd000000.jpg"),
        special("fifo.txt", tarfile.FIFOTYPE),
        special("dev.jpg", tarfile.CHRTYPE),
        special("blk.jpg", tarfile.BLKTYPE),
        sparse_member("sparse.jpg", 2 * GB),
        regular("sparse.txt", b"A caption whose image declares two gigabytes."),
        regular(bad_name, b"\xff\xd8\xff"),
    ] + good_blocks(2, "odd", start=2)


DATACOMP_META = {"uid": "0123456789abcdef0123456789abcdef", "url": "https://example.com/a.jpg",
                 "original_width": 1024, "original_height": 768, "sha256": "ab" * 32, "caption": "from the json",
                 "exif": {"Make": "Camera", "nested": [1, {"deep": True}]}}

# key -> raw json bytes: each is one way a sidecar can break a parser or a writer
HOSTILE_JSON: dict[str, bytes] = {
    "jgood": json.dumps(DATACOMP_META).encode(),
    "jsurrogate": b'{"uid": "00000000000000000000000000000001", "note": "x\\ud800y"}',
    "jsurrogatekey": b'{"\\udc00": 1, "uid": "00000000000000000000000000000002"}',
    "jnested": b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",  # 200,000 levels: RecursionError
    "jtoolarge": b'{"a": "' + b"x" * (2 << 20) + b'"}',  # 2 MB: over max_meta_bytes, never parsed
    "jdeep": b'{"a": ' * 100 + b"1" + b"}" * 100,
    "jbigint": b'{"n": 1' + b"0" * 5000 + b"}",
    "jinf": b'{"x": 1e999}',
    "jnan": b'{"x": NaN}',
    "jlist": b"[1, 2, 3]",
    "jstring": b'"just a string"',
    "jnull": b"null",
    "jnotutf8": b'{"a": "\xff\xfe"}',
    "jsyntax": b'{"a": ',
    "jhugesize": b'{"original_width": 1' + b"0" * 30 + b', "original_height": 5}',
}
JSON_CAPTION_SURROGATE = b'{"caption": "A dog \\ud83d on the grass in the park."}'  # no .txt: caption from json


def hostile_json_members() -> list[tuple[str, bytes]]:
    """One sample per hostile json (a good photo and caption beside it), a sample whose only caption
    is in a json with a lone surrogate, and an image PIL cannot identify (its error text must not hold
    a memory address)."""
    photos = photo_members(len(HOSTILE_JSON) + 1, prefix="x")
    images = [data for name, data in photos if name.endswith(".jpg")]
    captions = [data for name, data in photos if name.endswith(".txt")]
    out = []
    for i, (key, meta) in enumerate(HOSTILE_JSON.items()):
        out += [(f"{key}.jpg", images[i]), (f"{key}.json", meta), (f"{key}.txt", captions[i])]
    out += [("jcaption.jpg", images[-1]), ("jcaption.json", JSON_CAPTION_SURROGATE)]
    out += [("garbage.jpg", b"this is not an image at all"), ("garbage.txt", b"A picture that is not one.")]
    return out


def write_members(path: Path, members: Iterable[tuple[str, bytes]], tar_format: int = tarfile.GNU_FORMAT) -> Path:
    """A tar of ``members`` (any iterable: written as they come) with fixed headers (reproducible bytes)."""
    with tarfile.open(path, "w", format=tar_format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path
