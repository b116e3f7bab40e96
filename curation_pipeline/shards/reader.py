"""Stream a raw webdataset shard into pairs, recording every sample and every skip.

Raw shards are scraped: members are missing, corrupt, enormous, or of types that
must never be deserialised. The reader never raises for one bad member. A sample
with a bad image is still a row (with its decode status), and anything that is not
a sample (an unknown member, a repeated key, a truncated tail) is a counted skip.
Only image, caption and json members are ever parsed; everything else (``.pyd``,
``.pickle``, ``.pth`` ...) is skipped unread.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import fsspec
from PIL import Image, ImageOps
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from curation_pipeline.pairs import PairBatch

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_EXTS = ("txt", "caption")
META_EXTS = ("json",)

DECODE_OK = "ok"
RECORD_COLUMNS = [
    "shard", "key", "caption", "caption_source", "caption_problem", "caption_sha256", "caption_chars",
    "image_ext", "image_bytes", "image_sha256", "image_format", "image_mode", "width", "height", "n_frames",
    "decode_status", "decode_error", "meta_json", "meta_error", "original_width", "original_height",
]


@dataclass(frozen=True)
class ReaderLimits:
    """Bounds that keep one hostile sample from taking the process down."""

    max_pixels: int = 100_000_000  # declared width*height; above this is a decompression bomb
    max_caption_chars: int = 10_000  # longer captions are truncated and flagged
    max_member_bytes: int = 64 * 1024 * 1024


@dataclass
class ShardSkip:
    """Something in the shard that did not become (part of) a pair."""

    reason: str
    key: str | None = None
    member: str | None = None
    detail: str = ""


@dataclass
class Sample:
    key: str
    caption: str | None
    image: Image.Image | None
    record: dict[str, Any]
    image_data: bytes | None = None

    @property
    def original_size(self) -> tuple[int, int] | None:
        """(width, height) before any resizing, from the sample's json; None if it does not say."""
        width, height = self.record.get("original_width"), self.record.get("original_height")
        return (width, height) if width is not None and height is not None else None


@dataclass
class _Members:
    key: str
    image_ext: str | None = None
    image: bytes | None = None
    caption: bytes | None = None
    caption_ext: str | None = None
    meta: bytes | None = None
    duplicate: bool = False  # a key already read: its members are skipped, counted once


def original_size(meta: dict | None) -> tuple[int, int] | None:
    """img2dataset's ``original_width`` / ``original_height`` (the size before it resized the
    image; DataComp's metadata carries the same two fields). Both must be positive whole
    numbers, else None: a partial or malformed record is not half-trusted."""
    if not meta:
        return None
    size = []
    for field in ("original_width", "original_height"):
        value = meta.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not (value > 0 and float(value).is_integer()):  # NaN and inf fail here too
            return None
        size.append(int(value))
    return size[0], size[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _to_rgb(im: Image.Image) -> Image.Image:
    """Every mode scraped data comes in (CMYK, 16-bit, palette+alpha, LA) to plain RGB."""
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v * (1 / 256)).convert("L")
    if im.mode == "F":
        im = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB") if im.mode != "RGB" else im


def decode_image(data: bytes | None, limits: ReaderLimits = ReaderLimits()) -> tuple[Image.Image | None, dict]:
    """Decode fully (a truncated JPEG only fails on load) and say why when it cannot."""
    info: dict[str, Any] = {
        "image_format": None, "image_mode": None, "width": None, "height": None,
        "n_frames": None, "decode_status": DECODE_OK, "decode_error": None,
    }
    if data is None:
        info.update(decode_status="missing", decode_error="no image member in sample")
        return None, info
    if len(data) == 0:
        info.update(decode_status="empty", decode_error="zero-byte image member")
        return None, info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            info.update(image_format=im.format, image_mode=im.mode, width=im.size[0], height=im.size[1],
                        n_frames=int(getattr(im, "n_frames", 1)))
            if im.size[0] * im.size[1] > limits.max_pixels:
                info.update(decode_status="too_large",
                            decode_error=f"{im.size[0]}x{im.size[1]} exceeds {limits.max_pixels} pixels")
                return None, info
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        info.update(decode_status="too_large", decode_error=str(exc)[:300])
        return None, info
    except Exception as exc:  # PIL raises many types for bad bytes
        info.update(decode_status="corrupt", decode_error=f"{type(exc).__name__}: {exc}"[:300])
        return None, info
    return rgb, info


class ShardReader:
    """Iterate the samples of one shard; ``skips`` and ``counts`` fill in as it goes.

    Grouping follows webdataset's convention (consecutive members sharing a key form
    a sample). A key seen again later is a ``duplicate_key`` skip: the first wins.
    """

    def __init__(self, url: str, shard: str, limits: ReaderLimits = ReaderLimits(), decode: bool = True):
        self.url = url
        self.shard = shard
        self.limits = limits
        self.decode = decode
        self.skips: list[ShardSkip] = []
        self.counts: Counter[str] = Counter()

    def _skip(self, reason: str, key: str | None = None, member: str | None = None, detail: str = "") -> None:
        self.skips.append(ShardSkip(reason, key, member, detail[:300]))
        self.counts[f"skip_{reason}"] += 1

    def _members(self) -> Iterator[dict]:
        read = 0
        with fsspec.open(self.url, "rb") as stream:
            members = tar_file_iterator(stream, handler=self._member_error)
            try:
                for member in members:
                    read += 1
                    yield member
            except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
                reason = "truncated_tar" if read else "unreadable_tar"
                self._skip(reason, detail=f"after {read} members: {type(exc).__name__}: {exc}")

    def _member_error(self, exc: Exception) -> bool:
        # webdataset appends " @ <file object at 0x...>": drop it so skips are the same on every run
        self._skip("unreadable_member", detail=re.sub(r" @ <[^>]*>", "", f"{type(exc).__name__}: {exc}"))
        return True

    def _groups(self) -> Iterator[_Members]:
        current: _Members | None = None
        seen: set[str] = set()
        for member in self._members():
            name = member["fname"]
            key, ext = base_plus_ext(name)
            if key is None:
                self._skip("no_extension", member=name)
                continue
            ext = ext.lower()
            if key.startswith("/") or ".." in key.split("/"):
                self._skip("unsafe_key", key=key, member=name, detail="absolute path or '..' in the key")
                continue
            if current is None or key != current.key:
                if current is not None and not current.duplicate:
                    yield current
                    seen.add(current.key)
                if key in seen:
                    self._skip("duplicate_key", key=key, member=name, detail="key already read earlier in shard")
                    current = _Members(key=key, duplicate=True)
                    continue
                current = _Members(key=key)
            if current.duplicate:
                continue
            data = member["data"]
            if len(data) > self.limits.max_member_bytes:
                self._skip("member_too_large", key=key, member=name, detail=f"{len(data)} bytes")
                continue
            if ext in IMAGE_EXTS:
                if current.image is None:
                    current.image, current.image_ext = data, ext
                else:
                    self._skip("extra_image", key=key, member=name)
            elif ext in CAPTION_EXTS:
                if current.caption is None:
                    current.caption, current.caption_ext = data, ext
                else:
                    self._skip("extra_caption", key=key, member=name)
            elif ext in META_EXTS:
                current.meta = data
            else:
                self._skip("unsupported_member", key=key, member=name, detail=f".{ext} is never parsed")
        if current is not None and not current.duplicate:
            yield current

    def _caption(self, group: _Members, meta: dict | None) -> tuple[str | None, str | None, str | None]:
        """Caption text, where it came from, and what was wrong with it."""
        problem = None
        if group.caption is not None:
            try:
                text = group.caption.decode("utf-8")
            except UnicodeDecodeError:
                text = group.caption.decode("utf-8", errors="replace")
                problem = "invalid utf-8 replaced"
            source = group.caption_ext
        elif meta and isinstance(meta.get("caption"), str):
            text, source = meta["caption"], "json"
        else:
            return None, None, None
        text = text.replace("\x00", "")
        if len(text) > self.limits.max_caption_chars:
            problem = f"truncated from {len(text)} chars"
            text = text[: self.limits.max_caption_chars]
        return text, source, problem

    def __iter__(self) -> Iterator[Sample]:
        for group in self._groups():
            meta = None
            meta_error = None
            if group.meta is not None:
                try:
                    meta = json.loads(group.meta.decode("utf-8"))
                    if not isinstance(meta, dict):
                        meta, meta_error = None, "json is not an object"
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    meta_error = f"bad json: {exc}"[:200]
            caption, caption_source, caption_problem = self._caption(group, meta)
            original = original_size(meta)
            if self.decode:
                image, info = decode_image(group.image, self.limits)
            else:
                image, info = None, {}
            record = {
                "shard": self.shard,
                "key": group.key,
                "caption": caption,
                "caption_source": caption_source,
                "caption_problem": caption_problem,
                "caption_sha256": _sha(caption.encode("utf-8")) if caption is not None else None,
                "caption_chars": len(caption) if caption is not None else None,
                "image_ext": group.image_ext,
                "image_bytes": len(group.image) if group.image is not None else None,
                "image_sha256": _sha(group.image) if group.image else None,
                **info,
                "meta_json": json.dumps(meta, sort_keys=True, ensure_ascii=False)[:2000] if meta else None,
                "meta_error": meta_error,
                "original_width": original[0] if original else None,
                "original_height": original[1] if original else None,
            }
            self.counts["samples"] += 1
            self.counts[f"decode_{record.get('decode_status')}"] += 1
            yield Sample(group.key, caption, image, record, group.image)


def iter_pair_batches(url: str, shard: str, batch_size: int = 64,
                      limits: ReaderLimits = ReaderLimits()) -> Iterator[tuple[PairBatch, list[dict]]]:
    """Decoded batches for scorers: memory is bounded by ``batch_size``, not shard size.

    Each batch carries the json's original image sizes (``PairBatch.original_sizes``)
    for the DataComp image rules."""
    keys, captions, images, sizes, records = [], [], [], [], []
    for sample in ShardReader(url, shard, limits):
        keys.append(sample.key)
        captions.append(sample.caption)
        images.append(sample.image)
        sizes.append(sample.original_size)
        records.append(sample.record)
        if len(keys) == batch_size:
            yield PairBatch(keys, captions, images, sizes), records
            keys, captions, images, sizes, records = [], [], [], [], []
    if keys:
        yield PairBatch(keys, captions, images, sizes), records
