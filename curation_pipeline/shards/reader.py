"""Stream a raw webdataset shard into pairs, recording every sample and every skip.

Raw shards are scraped: members are missing, corrupt, enormous, or of types that must never be
deserialised. The reader never raises for one bad member: a sample with a bad image is still a row
(with its decode status), and anything that is not a sample is a counted skip. Only image, caption
and json members are parsed; others (``.pyd``, ``.pickle`` ...) are skipped unread. Limits come from
the tar headers before a byte is read (a huge sparse member is never expanded; links, FIFOs, devices
and directories are skips). No string a sample carries can fail the shard: bad json becomes the
row's ``meta_error``, lone surrogates are replaced, undecodable names are skips shown escaped. Every
byte read is hashed, so ``pairs`` can record the shard's fingerprint (``shards/fingerprint.py``). Where
tarfile stops (silently, at any block that is not a header) the archive must really end, else the samples
after it are a ``corrupt_tar`` / ``truncated_tar`` skip, not lost unseen. A read that fails in the file
itself (a network timeout, an I/O error) is not damage: it raises, so the run fails and can be retried.

Captions are kept as the sample says them: only how a caption file was saved goes (a leading UTF-8
BOM, trailing line endings: ``echo``, ``print``, Windows), and NUL bytes, which ``caption_problem``
records. Any other whitespace or control character is the caption's own; text quality flags it and the
cleaner's rewrite, recorded in the lineage, removes it. ``caption_problem`` also says why a caption
file was not read (and that the json's caption was used instead), and that a json caption differing
from the file's lost to it. Images come in two decodes where they differ: the corrected one (EXIF
orientation, transparency on white) for content signals, the reference one for model scorers
(``model_image``).
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import lzma
import math
import re
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, Collection, Iterator, Literal

import fsspec
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# every IMAGE_EXTS format registered up front: ``Image.open`` of one Pillow has not yet imported runs
# ``Image.init()``, importing all of its ~50 plugins (30-70 ms, on a run's first shard). The order stays
# Pillow's own (its preinit five first); a file of any other format still gets ``Image.init()``.
Image.preinit()
from PIL import TiffImagePlugin, WebPImagePlugin  # noqa: E402,F401  (registers them)

from curation_pipeline.pairs import PairBatch
from curation_pipeline.shards.fingerprint import HashingReader, RawFingerprint, RawShardChanged, describe_change, raw_stat
from curation_pipeline.shards.text import error_text, has_surrogates, printable_name, replace_surrogates


# webdataset's key/extension split (``webdataset.tariterators.base_plus_ext``; a test holds them
# equal): the key is everything before the first dot of the last path part. Not imported from
# webdataset: its package imports torch, over a second of every run's start
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def base_plus_ext(name: str) -> tuple[str | None, str | None]:
    match = _KEY_EXT.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


# jfif and jpe are JPEG's other names: PIL decodes them, the curated tar keeps the member's extension and
# webdataset's decoder (``autodecode.IMAGE_EXTENSIONS``) and ``verify_curated`` read them back
IMAGE_EXTS = ("jpg", "jpeg", "jfif", "jpe", "png", "webp", "bmp", "gif", "tif", "tiff")
# The Pillow formats of IMAGE_EXTS, the only ones opened, whatever a member's name: another format's plugin
# (EPS and PDF hand the bytes to Ghostscript; others are rarely used) never sees a shard's untrusted bytes
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# skips that say the raw file itself is damaged: what comes after the damage is not read (none of it, at 0 members)
TAR_DAMAGE = ("unreadable_tar", "corrupt_tar", "truncated_tar")
NOT_AN_IMAGE = "not a JPEG, PNG, WebP, BMP, GIF or TIFF image (no other format is opened)"
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
    max_member_bytes: int = 64 * 1024 * 1024  # as declared in the tar header, checked before reading
    max_meta_bytes: int = 1024 * 1024  # a json sidecar above this is not parsed (meta_error)
    max_meta_depth: int = 64  # json nested deeper is not kept (meta_error)
    max_original_side: int = 1_000_000  # original_width/height above this are not trusted
    # a batch ends early once its images hold this many pixels (as their headers declare): batch_size images of up to
    # max_pixels each held 32 x 100 MP decoded (a 219 KB PNG declares 100 MP); 32 web images of 1-4 MP never reach it
    max_batch_pixels: int = 128_000_000


NON_FILE_TYPES = {tarfile.DIRTYPE: "directory", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link",
                  tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                  tarfile.CONTTYPE: "contiguous file"}


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

    def pixels(self, limits: ReaderLimits) -> int:
        """The pixels its image decodes to, as its header declares, whether the reader decoded it or not (0: no image,
        none readable, or over ``max_pixels``): what a batch's ``max_batch_pixels`` counts, alike where the image is
        decoded (the local engine) and where only its bytes are read (Ray's read task)."""
        if self.image is not None:
            width, height = self.image.size
        elif self.image_data:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    width, height = open_image(self.image_data).size
            except Exception:  # PIL raises many types for bad bytes: never decoded, nothing held
                return 0
        else:
            return 0
        return width * height if width * height <= limits.max_pixels else 0

    @property
    def original_size(self) -> tuple[int, int] | None:
        """(width, height) before any resizing, from the sample's json; None if it does not say."""
        width, height = self.record.get("original_width"), self.record.get("original_height")
        return (width, height) if width is not None and height is not None else None


# how each note of ``_caption`` starts, but a caption member's not read (it starts with the member's name)
_PROBLEM_KINDS = ("invalid utf-8 replaced", "utf-16 decoded", "NUL bytes removed", "truncated from",
                  "non-text json caption", "json caption used", "json caption differs", "no caption member")


@dataclass(frozen=True)
class _Unread:
    """An image, caption or json member skipped unread (too large, not a regular file, cut short): its
    sample's row says so (``decode_error``, ``caption_problem``, ``meta_error``), not that it had none."""

    ext: str
    status: str  # for an image, a decode_status the decisions know: too_large, missing, corrupt
    error: str  # names the member and why it was not read

    @property
    def part(self) -> str | None:
        return _part(self.ext)


def _part(ext: str) -> str | None:
    """Which member of its sample an extension names, by its last part (``v1.jpg``: image)."""
    last = ext.rsplit(".", 1)[-1]
    return ("image" if last in IMAGE_EXTS else "caption" if last in CAPTION_EXTS
            else "meta" if last in META_EXTS else None)


_PARTS: dict[frozenset[str], frozenset[str]] = {}  # each combination of parts once, however many keys are seen


@dataclass
class _Members:
    key: str
    unread: _Unread | None = None  # the first image member skipped unread, while no image was read
    image_ext: str | None = None
    image: bytes | None = None
    caption: bytes | None = None
    caption_ext: str | None = None
    meta: bytes | None = None
    meta_name: str | None = None
    duplicate: bool = False  # a key already read: its members are skipped, counted once
    # why a caption / json member was not read (a dot in its key: ``img.v1.txt``; a link, too large, cut
    # short), said where none was read
    caption_unread: str | None = None
    meta_unread: str | None = None
    # members of the key never parsed (``x.heic``, ``x.pyd``): named in decode_error where no image was read
    unsupported: tuple[str, ...] = ()

    def attach(self, unread: _Unread) -> None:
        """An unread member of this key: the first of each part is kept; the row uses it if none was read."""
        part = unread.part
        if part == "image" and self.unread is None:
            self.unread = unread
        elif part == "caption" and self.caption_unread is None:
            self.caption_unread = unread.error
        elif part == "meta" and self.meta_unread is None:
            self.meta_unread = unread.error

    def cut_short(self) -> None:
        """The sample the tar's damage came right after: each part it has none of may have been lost there."""
        for part, ext, read in (("image", "jpg", self.image is not None or self.unread is not None),
                                ("caption", "txt", self.caption is not None or self.caption_unread is not None),
                                ("meta", "json", self.meta is not None or self.meta_unread is not None)):
            if not read:
                self.attach(_Unread(ext, "missing", f"no {part} member read before the tar's damage right after "
                                                    "this sample: it may have been lost there"))

    @property
    def parts(self) -> frozenset[str]:
        """The parts read (image, caption, meta): a later member of the key of another part means the sample's
        members were not adjacent."""
        return frozenset(part for part, data in (("image", self.image), ("caption", self.caption),
                                                 ("meta", self.meta)) if data is not None)

    @property
    def read_any(self) -> bool:
        """Whether an image, caption or json member of the key was read: else it is no sample, only the counted
        skips of its members (as a key whose only member is skipped unread)."""
        return any(part is not None for part in (self.image, self.caption, self.meta))


DOTTED_KEY = "a key ends at the first dot"  # in the skip's detail where a key holds a dot (pairs_read_whole reads it)


def _dotted(key: str, ext: str) -> str | None:
    """Why a member whose extension ends like a parsed one (``img.v1.jpg``: ``v1.jpg``) is not parsed: the
    key ends at the first dot of the name, as webdataset splits it. None for any other extension."""
    if "." not in ext or ext.rsplit(".", 1)[1] not in (*IMAGE_EXTS, *CAPTION_EXTS, *META_EXTS):
        return None
    return (f".{printable_name(ext)} is never parsed: {DOTTED_KEY} (as webdataset splits names), so "
            f"this member's key is {printable_name(key)!r}; rename it without a dot in the key")


def original_size(meta: dict | None, max_side: int = ReaderLimits.max_original_side) -> tuple[int, int] | None:
    """img2dataset's ``original_width`` / ``original_height`` (the size before it resized the
    image; DataComp's metadata carries the same two fields). Both must be positive whole
    numbers up to ``max_side``, else None: a partial or malformed record is not half-trusted."""
    if not meta:
        return None
    size = []
    for field in ("original_width", "original_height"):
        value = meta.get(field)
        # NaN and infinities fail the range check; a bool is an int to Python, not a size
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= max_side:
            return None
        if not float(value).is_integer():
            return None
        size.append(int(value))
    return size[0], size[1]


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed json (iterative: no recursion on hostile input), capped at limit + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_meta(data: bytes, member: str, limits: ReaderLimits = ReaderLimits()) -> tuple[dict | None, str | None]:
    """The sample's json as an object, or None with a ``meta_error`` that names the member. Never raises
    (bad UTF-8 or syntax, non-objects, deep nesting, huge integers). Two repairs keep the json, the
    ``meta_error`` saying so: lone surrogates are replaced by U+FFFD, and non-finite numbers (``NaN``,
    ``Infinity``: what Python's ``json.dumps`` writes for a missing float; ``1e999``) become null,
    so one missing field does not cost the sample its caption and original size (webdataset's
    ``json.loads`` reads such a file too). A leading UTF-8 BOM is a file artefact and is dropped."""
    where = f"{printable_name(member)}:"
    if len(data) > limits.max_meta_bytes:
        return None, f"{where} json is {len(data):,} bytes, over the {limits.max_meta_bytes:,}-byte limit; not parsed"
    try:
        text = data.decode("utf-8-sig")  # json.loads(bytes), as webdataset calls it, accepts a BOM too
    except UnicodeDecodeError as exc:
        return None, f"{where} json is not UTF-8 ({exc.reason} at byte {exc.start})"
    nonfinite: list[str] = []

    def null(token: str) -> None:
        nonfinite.append(token[:40])

    def number(token: str) -> float | None:
        value = float(token)
        return value if math.isfinite(value) else null(token)

    try:
        meta = json.loads(text, parse_constant=null, parse_float=number)
    except RecursionError:
        return None, f"{where} json nested too deeply to parse (limit {limits.max_meta_depth} levels)"
    except json.JSONDecodeError as exc:
        return None, f"{where} bad json: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except (ValueError, OverflowError) as exc:
        return None, f"{where} bad json: {replace_surrogates(str(exc))[:200]}"
    if not isinstance(meta, dict):
        return None, f"{where} json is {type(meta).__name__ if meta is not None else 'null'}, not an object"
    if _depth(meta, limits.max_meta_depth) > limits.max_meta_depth:
        return None, f"{where} json nested deeper than {limits.max_meta_depth} levels"
    notes = []
    dumped = json.dumps(meta, ensure_ascii=False, sort_keys=True)
    if has_surrogates(dumped):
        meta = json.loads(replace_surrogates(dumped))
        notes.append("lone surrogates in json strings replaced by U+FFFD")
    if nonfinite:
        shown = list(dict.fromkeys(nonfinite))
        notes.append(f"{len(nonfinite)} non-finite number{'s' * (len(nonfinite) > 1)} "
                     f"({', '.join(shown[:3])}{', ...' * (len(shown) > 3)}) replaced by null")
    return meta, f"{where} {'; '.join(notes)}" if notes else None


# json keys other datasets keep a caption under (LAION's parquet TEXT, alt text, ...): named where no caption was read
_CAPTION_LIKE = frozenset({"text", "txt", "alt", "alt_text", "alttext", "description", "title", "captions", "prompt",
                           "sentence", "label"})


def _caption_like_keys(meta: dict | None) -> list[str]:
    """The keys of ``meta`` that look like a caption's (``_CAPTION_LIKE``, any case) and hold text, first three."""
    return [k for k, v in (meta or {}).items()
            if isinstance(k, str) and k.lower() in _CAPTION_LIKE and isinstance(v, str) and v.strip()][:3]


def cut_caption(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, and back to the space before a word the cut would split (``coff`` of
    ``coffee`` reads as another word to every scorer and rewriter), where that space is in the second half; a
    script written without spaces is cut at the limit. Public: the labels report cuts a truth caption as ingest
    did (``evaluation.labels.as_ingested``)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if limit and cut[-1].isalnum() and text[limit].isalnum():
        space = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
        if space > limit // 2:
            return cut[:space].rstrip()
    return cut


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _saved_as(text: str) -> str:
    """A caption file's text without how it was saved: a leading BOM, final line endings."""
    return text.removeprefix("\ufeff").rstrip("\r\n")


def file_caption(text: str) -> str:
    """What ingest keeps of a caption file's text before the length limit (``ShardReader._caption``, which
    notes each change in ``caption_problem``): NUL bytes removed, then how the file was saved dropped."""
    return _saved_as(text.replace("\x00", ""))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _to_rgb(im: Image.Image) -> tuple[Image.Image, bool]:
    """Every mode scraped data comes in (CMYK, 16-bit, palette+alpha, LA) to plain RGB, and whether
    that is ``im.convert("RGB")`` pixel for pixel (False: 16-bit and wider values scaled, not clipped, and 0-1
    floats scaled to 0-255; transparency composited onto white, not dropped)."""
    plain = True
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode.startswith("I;16"):
        im, plain = im.convert("I").point(lambda v: v * (1 / 256)).convert("L"), False  # point() refuses I;16B
    if im.mode == "I":  # 32-bit: scaled by the depth its values need (8-bit values stored wide stay as they are)
        high = int(im.getextrema()[1])  # signed: a full-range image tops out at 2**31 - 1
        scale = 1.0 if high <= 255 else 1 / 256 if high <= 65535 else 1 / (1 << (high.bit_length() - 8))
        im, plain = im.point(lambda v: v * scale).convert("L"), plain and scale == 1.0
    if im.mode == "F":  # a float image in 0-1 (as scientific TIFFs store it) is scaled to 0-255, else clipped
        low, high = im.getextrema()
        unit = 0.0 <= low and high <= 1.0
        im, plain = (im.point(lambda v: v * 255.0) if unit else im).convert("L"), plain and not unit
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() == (255, 255):  # opaque: compositing changes nothing
            return rgba.convert("RGB"), plain
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=alpha)
        return background, False
    return (im.convert("RGB") if im.mode != "RGB" else im), plain


# --- the model decode ---------------------------------------------------------------------------
# Content signals (OCR, NSFW, image quality, dedup) see the image as shown: EXIF orientation applied,
# transparency on white, 16-bit scaled. The released checkpoints (MLM-Filter, AITQE) and CLIP are
# scored as their authors' code loads images, ``Image.open(f).convert("RGB")`` (clipscore.py,
# webdataset's ``pilrgb``), or their scores differ from the reference. Where the two differ, or the
# file is not RGB, the reader's decode in the file's own mode rides on the image (``Image.info``, which
# ``convert`` and ``copy`` carry along): ``model_image`` (its RGB) is what the released checkpoints are
# given, ``stored_image`` (the mode itself) what CLIPScore resizes, as clipscore.py does.
_MODEL_IMAGE = "curation_pipeline.model_image"
_ORIENTATIONS = {2, 3, 4, 5, 6, 7, 8}  # EXIF orientations ImageOps.exif_transpose acts on


def attach_model_image(image: Image.Image, reference: Image.Image, *, differs: bool = True) -> Image.Image:
    """``image`` (the corrected decode), carrying ``reference``, the file as ``Image.open`` decodes it (in
    its own mode; RGB where only that travelled): ``differs`` says its RGB is not ``image``'s pixels."""
    image.info[_MODEL_IMAGE] = (reference, image.size, differs)
    return image


def _attached(image: Image.Image | None) -> tuple | None:
    """Only on an image of the size it was attached to: a resized or cropped copy is not the reader's image."""
    attached = image.info.get(_MODEL_IMAGE) if image is not None else None
    return attached if attached is not None and attached[1] == image.size else None


def kept_decode(image: Image.Image | None) -> bool | None:
    """Whether the reader kept the file's own decode on ``image`` (None: it kept none), and if so whether
    its RGB differs from ``image``'s pixels: what the Ray engine needs to rebuild it where a shard is scored."""
    attached = _attached(image)
    return None if attached is None else bool(attached[2])


def open_image(data: bytes) -> Image.Image:
    """``Image.open`` of a member's bytes, in one of ``IMAGE_FORMATS`` only (lazy: the header read)."""
    return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)


def _opened_format(data: bytes) -> str | None:
    """The one of ``IMAGE_FORMATS`` whose signature ``data`` starts with (its plugin's own check), or None."""
    return next((fmt for fmt in IMAGE_FORMATS if fmt in Image.OPEN
                 and ((accept := Image.OPEN[fmt][1]) is None or accept(data[:16]))), None)


def open_stored(data: bytes) -> Image.Image:
    """The file's own decode again from its bytes, as ``decode_image`` made it (first frame, loaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = open_image(data)
        im.seek(0)
        im.load()
    return im


def reference_decode(image: Image.Image | None) -> Image.Image | None:
    """The reference decode (RGB) the reader attached to ``image``, None if it needed none."""
    attached = _attached(image)
    if attached is None or not attached[2]:
        return None
    return attached[0] if attached[0].mode == "RGB" else attached[0].convert("RGB")


def model_image(image: Image.Image) -> Image.Image:
    """What a released checkpoint is given for a pair's image: ``Image.open(bytes).convert("RGB")``."""
    reference = reference_decode(image)
    return reference if reference is not None else image


def stored_image(image: Image.Image) -> Image.Image:
    """``Image.open(bytes)`` in the file's own mode (P, L, RGBA, CMYK...), before ``convert("RGB")``:
    clipscore.py resizes that and converts after (P resized NEAREST, RGBA with premultiplied alpha).
    ``model_image`` where the reader kept none (an RGB file, or an image that came without it)."""
    attached = _attached(image)
    return attached[0] if attached is not None else model_image(image)


Decode = Literal[True, False, "header", "verify"]


def decode_image(data: bytes | None, limits: ReaderLimits = ReaderLimits(),
                 full: bool | Literal["verify"] = True,
                 absent: tuple[str, str] | None = None) -> tuple[Image.Image | None, dict]:
    """Decode fully (a truncated JPEG only fails on load) and say why when it cannot. ``full=False``
    reads the header only (format, size, mode, frames; no pixels, no image returned): what an
    inventory needs, at a fraction of the cost; a truncated body then shows only in a full decode.
    ``"verify"``: the same checks and statuses as a full decode, a JPEG decoded at 1/8 scale (libjpeg
    still reads every byte, so a truncated or corrupt body fails with the same error), and the image
    returned unloaded (its stored size and header; pixels only if asked for): for scorers that read
    only an image's size (``Scorer.reads_pixels = False``), a 2-3x cheaper decode. A full decode that
    corrected the image (orientation, transparency, 16-bit) carries the reference decode (``model_image``).
    ``absent``: (decode_status, decode_error) for ``data=None`` when the sample's image member was skipped
    unread (the reader's record says so where it does not decode), rather than "missing"."""
    info: dict[str, Any] = {
        "image_format": None, "image_mode": None, "width": None, "height": None,
        "n_frames": None, "decode_status": DECODE_OK, "decode_error": None,
    }
    if data is None:
        status, error = absent or ("missing", "no image member in sample")
        info.update(decode_status=status, decode_error=error)
        return None, info
    if len(data) == 0:
        info.update(decode_status="empty", decode_error="zero-byte image member")
        return None, info
    try:
        with warnings.catch_warnings():
            # max_pixels, checked from the header below, is the limit: PIL's warning (above its global
            # MAX_IMAGE_PIXELS, ~89 MP) would shadow it; its DecompressionBombError (2x that) still holds
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_image(data)
            info.update(image_format=im.format, image_mode=im.mode, width=im.size[0], height=im.size[1],
                        n_frames=int(getattr(im, "n_frames", 1)))
            if im.size[0] * im.size[1] > limits.max_pixels:
                info.update(decode_status="too_large",
                            decode_error=f"{im.size[0]}x{im.size[1]} exceeds {limits.max_pixels} pixels")
                return None, info
            if not full:
                return None, info
            header = im
            if full == "verify":
                im = open_image(data)
                im.draft(None, (1, 1))  # JPEG: the smallest DCT scale; other formats ignore it
            im.seek(0)
            im.load()
            oriented = im.getexif().get(ExifTags.Base.Orientation, 1) in _ORIENTATIONS
            rgb, plain = _to_rgb(ImageOps.exif_transpose(im) if oriented else im)
            if full == "verify":
                return header, info
            if oriented or not plain or im.mode != "RGB":  # the models see it otherwise: keep their decode
                attach_model_image(rgb, im, differs=oriented or not plain)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        info.update(decode_status="too_large", decode_error=error_text(exc).split(": ", 1)[-1])
        return None, info
    except UnidentifiedImageError as exc:  # a format opened, damaged in its header, says so; any other is refused
        fmt = _opened_format(data)
        info.update(decode_status="corrupt", decode_error=(
            f"starts as a {fmt} file but its header cannot be read ({error_text(exc)})" if fmt else NOT_AN_IMAGE))
        return None, info
    except Exception as exc:  # PIL raises many types for bad bytes
        info.update(decode_status="corrupt", decode_error=error_text(exc))
        return None, info
    return rgb, info


# tarfile's compression -> its name and how a stream of it starts (as tarfile's ``r|*`` tells them apart)
_STREAMS = {"gz": ("gzip", b"\x1f\x8b"), "bz2": ("bzip2", b"BZh"), "xz": ("xz", b"\xfd7zXZ\x00")}
_LOOK_AFTER_STREAM = 1 << 16  # bytes read past a compressed stream to tell padding from more data
_RAW_READ = 1 << 14  # compressed bytes fed to the decompressor at a time (tarfile fed 10 KiB)
# a compressed shard may decompress to this many times its compressed bytes read so far, plus the slack: web images
# barely compress and caption tars some 10-50x; synthetic shards of one image repeated (bzip2 380x, gzip'd white
# scans 1020x) stay under the slack; bzip2'd zeros shrink 900,000 to 1. A bomb costs the slack's decompression and
# 200x its size (gzip cannot pass ~1032x): a few seconds
MAX_INFLATION, INFLATION_SLACK = 200, 1 << 30
# a pax or GNU long-name header's data, read whole by tarfile before any check, and how many may come before a
# member (tarfile reads a chain of them by recursion: 3,000 tiny ones overflowed the stack)
MAX_EXTENDED_HEADER, MAX_EXTENDED_HEADERS = 1 << 20, 16


class TarRefused(tarfile.ReadError):
    """Where the reader stops on purpose (a decompression bomb, oversized or endless extended headers, a compressed
    stream failing its check): the rest is a ``corrupt_tar`` skip, never taken for a file cut short."""


def _compression(head: bytes) -> str | None:
    """The shard's compression, told from its first bytes as tarfile's ``r|*`` tells it (None: a plain tar)."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "gz"
    if head[0:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bz2"
    if head.startswith((b"\x5d\x00\x00\x80", b"\xfd7zXZ")):
        return "xz"
    return None


class _Replayed:
    """``raw``, its first bytes (read to tell its compression) given back first."""

    def __init__(self, head: bytes, raw):
        self._head, self._raw = head, raw

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = (self._head, b"") if size < 0 else (self._head[:size], self._head[size:])
            return data
        return self._raw.read(size)


class _Decompressed:
    """A compressed shard, at most ``size`` decompressed bytes a read. tarfile's own ``r|*`` decompressed each raw
    chunk whole and copied what was left at every 512-byte read: a few KB of bzip2'd zeros held gigabytes, and many
    small members took time growing with their square. Streams that follow one another (pbzip2's, bgzip's gzip
    members, ``gzip >>``) read as one, as the gzip and bz2 modules read them; ``unused_data``: what followed the
    last, which no stream starts. Past ``MAX_INFLATION`` times the compressed bytes (plus ``INFLATION_SLACK``), and
    at a stream failing its check, it stops (``TarRefused``)."""

    def __init__(self, kind: str, raw):
        self.kind, self.name, self._raw = kind, _STREAMS[kind][0], raw
        self._cmp = self._decompressor()
        self._pending = b""  # input not yet given to the decompressor (zlib's unconsumed_tail, a next stream's start)
        self.unused_data = b""
        self.compressed = self.decompressed = 0

    def _decompressor(self):
        if self.kind == "gz":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip's header and trailer, its CRC checked
        return bz2.BZ2Decompressor() if self.kind == "bz2" else lzma.LZMADecompressor()

    def read(self, size: int = -1) -> bytes:
        size = size if size is not None and size >= 0 else _RAW_READ
        while size:
            if self._cmp.eof and not self._next_stream():
                return b""
            feed = self._input()
            if feed is None:  # the file ended inside the stream: tarfile finds it cut short
                return b""
            try:
                data = self._cmp.decompress(feed, size)
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
                raise TarRefused(f"the {self.name} stream fails its check ({error_text(exc)}): the bytes of a "
                                 "member read before it may be corrupt, which one is unknown; not read on") from exc
            if self.kind == "gz":  # at the stream's end what is left is unused_data (zlib keeps it in both)
                self._pending = b"" if self._cmp.eof else self._cmp.unconsumed_tail
            if data:
                self.decompressed += len(data)
                if self.decompressed > MAX_INFLATION * self.compressed + INFLATION_SLACK:
                    raise TarRefused(
                        f"the {self.name} stream decompresses to over {MAX_INFLATION} times its size "
                        f"({self.decompressed:,} bytes from {self.compressed:,}): a decompression bomb, or content "
                        "that repeats throughout? not read on")
                return data
        return b""

    def _input(self) -> bytes | None:
        """What to decompress next: input held back, nothing where bz2/lzma hold unread input, else the file's
        next bytes (None at its end)."""
        if self._pending:
            feed, self._pending = self._pending, b""
            return feed
        if self.kind != "gz" and not self._cmp.needs_input:
            return b""
        return self._raw_read(_RAW_READ) or None

    def _next_stream(self) -> bool:
        """At a stream's end: another of the same kind right after it goes on (a new decompressor); else what
        follows is ``unused_data``, never decompressed."""
        rest = self._cmp.unused_data + self._pending
        self._pending = b""
        magic = _STREAMS[self.kind][1]
        while len(rest) < len(magic) and (more := self._raw_read(_RAW_READ)):
            rest += more
        if not rest.startswith(magic):
            self.unused_data = rest
            return False
        self._cmp, self._pending = self._decompressor(), rest
        return True

    def _raw_read(self, size: int) -> bytes:
        raw = self._raw.read(size)
        self.compressed += len(raw)
        return raw

    def read_raw(self, size: int) -> bytes:
        """The file's bytes after what was given to the decompressor (after the last stream: never decompressed)."""
        return self._raw.read(size)


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header's data whole, before any member is checked, and a chain of them
    by recursion: bounded first, in size and in number before one member (``_EndCheckedTar.extended``)."""

    def _proc_pax(self, tar):
        self._bounded("a pax extended header", tar)
        return super()._proc_pax(tar)

    def _proc_gnulong(self, tar):
        self._bounded("a GNU long-name header", tar)
        return super()._proc_gnulong(tar)

    def _bounded(self, what: str, tar) -> None:
        count, size = tar.extended
        count, size = count + 1, size + self.size
        if size > MAX_EXTENDED_HEADER:
            before = f" ({size:,} with those before it for one member)" if count > 1 else ""
            raise TarRefused(f"{what} at tar offset {self.offset} declares {self.size:,} bytes{before}, over the "
                             f"{MAX_EXTENDED_HEADER:,}-byte limit; not read on")
        if count > MAX_EXTENDED_HEADERS:
            raise TarRefused(f"{what} at tar offset {self.offset} is the {count}th extended header before one "
                             f"member, over the limit of {MAX_EXTENDED_HEADERS}; not read on")
        tar.extended = count, size


class _LastRead:
    """tarfile's stream, remembering where its last read began and (the first block of) what it got: when
    iteration ends, that is the block tarfile read at ``tar.offset`` and could not take as a header."""

    def __init__(self, stream):
        self._stream, self.at, self.block = stream, 0, b""

    def read(self, size: int) -> bytes:
        self.at = self._stream.tell()
        data = self._stream.read(size)
        self.block = data[:tarfile.BLOCKSIZE]
        return data

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _EndCheckedTar(tarfile.TarFile):
    """``open(mode="r|")`` builds its stream and passes it here: wrapped before the first header is read."""

    def __init__(self, name=None, mode="r", fileobj=None, **kwargs):
        self.extended = 0, 0  # the extended headers (how many, their bytes) read since the last member
        super().__init__(name, mode, _LastRead(fileobj), **kwargs)


class ShardReader:
    """Iterate the samples of one shard (consecutive members sharing a key, as webdataset groups them;
    a key seen again later is a ``duplicate_key`` skip); ``skips`` fills in as it goes. After a full
    iteration ``fingerprint`` holds what was read; with ``expected`` (what ``pairs`` recorded) the bytes
    read must hash to it, else ``RawShardChanged``: stored rows must never meet another file's images.
    With ``keys``, only those samples are yielded (and decoded); every byte is still read and hashed."""

    def __init__(self, url: str, shard: str, limits: ReaderLimits = ReaderLimits(),
                 decode: Decode = True, expected: RawFingerprint | None = None,
                 keys: Collection[str] | None = None):
        self.url, self.shard, self.limits, self.decode, self.expected = url, shard, limits, decode, expected
        self.keys = keys
        self.skips: list[ShardSkip] = []
        self.fingerprint: RawFingerprint | None = None
        self._cut = False  # the tar's damage may have hidden members of the last sample read before it
        self._decompressed: _Decompressed | None = None  # a compressed shard's stream

    def _skip(self, reason: str, key: str | None = None, member: str | None = None, detail: str = "") -> None:
        self.skips.append(ShardSkip(reason, printable_name(key) if key is not None else None,
                                    printable_name(member) if member is not None else None,
                                    replace_surrogates(detail)[:300]))

    def _header_skip(self, info: tarfile.TarInfo) -> tuple[str, str] | bool:
        """Decide from the header alone, before any data is read: False if the member is read, else True,
        or (decode_status, decode_error) for the sample of a keyed member skipped whole."""
        name = info.name
        key = base_plus_ext(name)[0] if name else None
        if not info.isreg():
            kind = NON_FILE_TYPES.get(info.type, f"type {info.type!r}")
            target = f" -> {info.linkname}" if info.issym() or info.islnk() else ""
            self._skip("not_a_file", key=key, member=name, detail=f"{kind}{target}: only regular files are read")
            return "missing", replace_surrogates(f"{printable_name(name)} is a {kind}{target}, not a regular file; "
                                                 "not read")
        if has_surrogates(name):
            self._skip("undecodable_name", member=name, detail="member name is not valid UTF-8")
            return True
        if "\x00" in name:  # a pax path can hold one; a curated tar's name field cannot (it ends there)
            self._skip("unsafe_name", member=name.replace("\x00", "\\x00"), detail="NUL byte in member name")
            return True
        if info.size > self.limits.max_member_bytes:
            sparse = " (sparse)" if info.sparse is not None else ""
            self._skip("member_too_large", key=key, member=name,
                       detail=f"header declares {info.size} bytes{sparse}, limit {self.limits.max_member_bytes}; "
                       "not read")
            return "too_large", (f"{printable_name(name)} declares {info.size:,} bytes{sparse}, over the "
                                 f"{self.limits.max_member_bytes:,}-byte member limit; not read")
        return False

    def _check_end(self, tar: tarfile.TarFile, read: int) -> None:
        """tarfile's iteration ends silently at any block it cannot take as a header (a bad checksum,
        zeros, a header cut short, the end of the file), and the samples after it would vanish: the
        archive really ended only if that block and everything after it are zeros, at least the two
        blocks of the end-of-archive marker (writers pad with zeros to a 10240-byte record)."""
        stream, end = tar.fileobj, tar.offset
        # stream.at == end always (next() reads a header block in one call); checked, as a miss would hide a loss
        size, zeros = len(stream.block), stream.block.count(0) == len(stream.block) and stream.at == end
        run = size if zeros else 0  # zero bytes from that block on, before any data
        compressed = self._decompressed  # read up to its stream's end only (``_Decompressed``)
        chunks = iter(lambda: stream.read(1 << 20), b"")
        while zeros and (chunk := next(chunks, b"")):
            lead = len(chunk) - len(chunk.lstrip(b"\0"))
            size, zeros, run = size + len(chunk), lead == len(chunk), run + lead
        if zeros and size >= 2 * tarfile.BLOCKSIZE:
            if compressed is not None:
                self._after_stream(compressed, read)
            return
        # a marker begun (or whole, with data after it) ended the archive: every member of it was read
        self._cut = size == 0 or (not zeros and run < 2 * tarfile.BLOCKSIZE)
        if not zeros and size >= tarfile.BLOCKSIZE:
            self._skip("corrupt_tar", detail=f"after {read} members: " + (
                f"an end-of-archive marker at tar offset {end}, then more data (tars joined with `cat`? `tar -i` "
                "reads past the marker; write them as one archive)" if run >= 2 * tarfile.BLOCKSIZE else
                f"the block at tar offset {end} is not a valid header (bad checksum or zeroed) and data follows it")
                + "; the rest of the shard is not read")
        else:
            found = f"{size} of the 1024 zero bytes of an end-of-archive marker" if zeros else f"{size} bytes of a header"
            self._skip("truncated_tar", detail=f"after {read} members: cut short at tar offset {end}, {found}")

    def _after_stream(self, compressed, read: int) -> None:
        """What follows a compressed archive's last stream, which tarfile never reads: zeros (padding, as gzip
        allows) are nothing; another stream of the same kind after them is a second archive, unread; anything else
        is bytes that are no archive. (A stream right after another is read on: ``_Decompressed``.)"""
        rest = compressed.unused_data
        if len(rest) < _LOOK_AFTER_STREAM:
            rest += compressed.read_raw(_LOOK_AFTER_STREAM - len(rest))
        if not rest.strip(b"\0"):
            return
        kind, magic = _STREAMS[compressed.kind]
        if rest.lstrip(b"\0").startswith(magic):
            self._skip("corrupt_tar", detail=f"after {read} members: the {kind} stream ended, then another "
                       f"({kind}'d tars joined with `cat`? `tar -i` reads on; write them as one archive); the rest "
                       "of the shard is not read")
        else:
            self._skip("corrupt_tar", detail=f"after {read} members: the {kind} stream ended, then bytes that are "
                       "no archive; not read")

    def _members(self) -> Iterator[tuple[str, bytes | _Unread]]:
        """Regular members as (name, data), streaming: one member in memory at a time; an image, caption or
        json member skipped unread as (name, ``_Unread``), so its sample can say why it has none."""
        stat = raw_stat(self.url)  # FileNotFoundError / IsADirectoryError name the path
        with fsspec.open(self.url, "rb") as handle:
            stream = HashingReader(handle)
            try:
                yield from self._tar_members(stream)
                stream.drain()
                if stream.error is not None:  # swallowed on its way through tarfile: still a failed read
                    raise stream.error
            except Exception as exc:
                if stream.error is not None:
                    exc.add_note(f"raw shard {self.shard!r} ({self.url}): reading the file failed after "
                                 f"{stream.bytes_read:,} bytes; nothing of it is recorded, run it again")
                raise
        self._finish(stat, stream)

    def _tar_members(self, stream: HashingReader) -> Iterator[tuple[str, bytes | _Unread]]:
        """Damage tarfile meets in the bytes it got is a skip. An error of the file itself (``stream.error``)
        raises: tarfile drops the bytes it had buffered, so the samples after it would vanish unseen while
        the fingerprint (of every byte received) still matched the file."""
        read, ended = 0, False
        try:
            head = stream.read(10)
            source, kind = _Replayed(head, stream), _compression(head)
            self._decompressed = _Decompressed(kind, source) if kind else None
            tar = _EndCheckedTar.open(fileobj=self._decompressed or source, mode="r|", tarinfo=_BoundedTarInfo)
            for info in tar:
                read += 1
                tar.members = []  # tarfile keeps every header otherwise (memory grows with the shard)
                tar.extended = 0, 0  # the next member's extended headers are counted afresh
                skipped = self._header_skip(info)
                if skipped is False:
                    try:
                        data = tar.extractfile(info).read()
                    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
                        if stream.error is not None or isinstance(exc, TarRefused):
                            raise
                        self._skip("unreadable_member", key=base_plus_ext(info.name)[0], member=info.name,
                                   detail=error_text(exc))
                        skipped = "corrupt", (f"{printable_name(info.name)}: its data could not be read "
                                              f"({error_text(exc)})")
                    else:
                        yield info.name, data
                        continue
                ext = base_plus_ext(info.name)[1]
                if skipped is not True and ext is not None and ext.lower() in (*IMAGE_EXTS, *CAPTION_EXTS,
                                                                               *META_EXTS):
                    yield info.name, _Unread(ext.lower(), *skipped)
            ended = True  # every member read: what fails after (a compressed stream's check) hid none
            self._check_end(tar, read)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            if stream.error is not None:
                raise
            refused = isinstance(exc, TarRefused)
            reason = "corrupt_tar" if refused else "truncated_tar" if read else "unreadable_tar"
            self._cut = not ended
            self._skip(reason, detail=f"after {read} members: {str(exc) if refused else error_text(exc)}")

    def _finish(self, stat, stream: HashingReader) -> None:
        """Record what was read; compare it with what ``pairs`` recorded (if given)."""
        got = RawFingerprint(stream.bytes_read, stream.sha256, stat.mtime, stat.identity)
        if self.expected is not None:
            message = describe_change(self.shard, self.url, self.expected, got.size, got.sha256, stat,
                                      when=" (found while re-reading it)")
            if message:
                raise RawShardChanged(message)
        elif got.size != stat.size or raw_stat(self.url) != stat:
            raise RawShardChanged(f"raw shard {self.shard!r} ({self.url}) changed while it was being read "
                                  f"({stat.size:,} bytes before, {got.size:,} read); run the shard again once "
                                  "the file is complete")
        self.fingerprint = got

    def _groups(self) -> Iterator[_Members]:
        """Samples as webdataset groups them (consecutive read members sharing a key). A member skipped
        unread belongs to the sample of its key around it, but never starts or splits one: it is held
        until the next read member says whether that sample is its own."""
        current: _Members | None = None
        seen: dict[str, frozenset[str]] = {}  # key -> the parts its sample read
        pending: tuple[str, list[_Unread]] | None = None  # unread members of a sample not begun yet
        for name, data in self._members():
            key, ext = base_plus_ext(name)
            if isinstance(data, _Unread):  # already a skip: never counted again
                if current is not None and key == current.key:
                    if not current.duplicate:
                        current.attach(data)
                elif pending is not None and pending[0] == key:
                    pending[1].append(data)
                else:
                    pending = key, [data]
                continue
            if key is None:
                self._skip("no_extension", member=name, detail=(
                    "the name starts with a dot, so it has no key (a hidden or AppleDouble file: .DS_Store, ._0.jpg)"
                    if name.rsplit("/", 1)[-1].startswith(".") else "no '.' in the name: members are <key>.<ext>"))
                continue
            ext = ext.lower()
            if key.startswith("/") or ".." in key.split("/"):
                self._skip("unsafe_key", key=key, member=name, detail="absolute path or '..' in the key")
                continue
            if current is None or key != current.key:
                if current is not None and not current.duplicate and current.read_any:
                    yield current
                    seen[current.key] = _PARTS.setdefault(current.parts, current.parts)  # one object per combination
                if key in seen:
                    part = _part(ext.lower())
                    self._skip("duplicate_key", key=key, member=name, detail="key already read earlier in shard" + (
                        f", without its {part}: the sample's members are not next to each other (webdataset reads "
                        "a sample from consecutive members; write the tar in name order, e.g. `tar --sort=name`)"
                        if part is not None and part not in seen[key] else ""))
                    current, pending = _Members(key=key, duplicate=True), None
                    continue
                current = _Members(key=key)
                for unread in pending[1] if pending and pending[0] == key else ():
                    current.attach(unread)
            pending = None
            if current.duplicate:  # each member of a repeated key is one skip: the members add up to the tar's
                self._skip("duplicate_key", key=key, member=name, detail="another member of the repeated key")
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
                if current.meta is None:
                    current.meta, current.meta_name = data, name
                else:
                    self._skip("extra_meta", key=key, member=name)
            else:
                dotted = _dotted(key, ext)
                self._skip("unsupported_member", key=key, member=name, detail=dotted or f".{ext} is never parsed")
                if dotted is None:  # named in the pair's decode_error if it has no image (x.heic)
                    current.unsupported += (f"{printable_name(name)} not read: .{printable_name(ext)} is never "
                                            "parsed",)
                else:  # the pair's decode_error, caption_problem or meta_error says why
                    current.attach(_Unread(ext, "missing", f"{printable_name(name)} not read: {dotted}"))
        if current is not None and not current.duplicate and current.read_any:
            if self._cut and pending is None:  # (a member of a later key came: this sample had ended)
                current.cut_short()
            yield current

    @staticmethod
    def problem_kind(problem: str) -> str:
        """The kind of one ``; ``-joined part of ``caption_problem``, for counting: the note's fixed start, or
        ``caption member not read`` for the notes that start with the member's name (``k.txt is a symlink``)."""
        return next((kind for kind in _PROBLEM_KINDS if problem.startswith(kind)), "caption member not read")

    def _caption(self, group: _Members, meta: dict | None) -> tuple[str | None, str | None, str | None]:
        """Caption text, where it came from, and what was wrong with it (each problem one ``; ``-joined part:
        the ingest metadata counts them by kind). A caption file's leading BOM and final line ending(s) are
        how it was saved (``echo``, ``print``, Windows), not what it says: dropped. A json caption is a
        string value, taken as it is. NUL bytes are removed and said so; so are a caption file not read and
        a json caption other than the file's."""
        problems = []
        json_caption = meta.get("caption") if meta else None
        if group.caption is None and group.caption_unread is not None:  # before what was used instead
            problems.append(group.caption_unread.replace("; ", ", "))
        if group.caption is not None:
            if group.caption.startswith(_UTF16_BOMS):  # PowerShell 5's `>` and Out-File write UTF-16
                text = group.caption.decode("utf-16", errors="replace")
                problems.append("utf-16 decoded" + (", invalid parts replaced" if "\ufffd" in text else ""))
            else:
                try:
                    text = group.caption.decode("utf-8")
                except UnicodeDecodeError:
                    text = group.caption.decode("utf-8", errors="replace")
                    problems.append("invalid utf-8 replaced")
            source = group.caption_ext
        elif isinstance(json_caption, str):
            text, source = json_caption, "json"
            if problems:
                problems.append("json caption used")
        elif json_caption is not None:  # a number or a list is no caption, and says so
            problems.append(f"non-text json caption ({type(json_caption).__name__}) not used")
            return None, None, "; ".join(problems)
        else:
            if group.unsupported and not problems:  # y.text: no caption read, and why
                first, more = group.unsupported[0], len(group.unsupported) - 1
                problems.append(f"no caption member in sample ({first}"
                                + (f", and {more} more unsupported member{'s' if more > 1 else ''}" if more else "")
                                + f"), caption members are .{', .'.join(CAPTION_EXTS)}")  # one part: no '; '
            elif not problems and (other := _caption_like_keys(meta)):  # {"TEXT": ...}: read nowhere, and said
                problems.append(f"no caption member in sample, and no 'caption' in its json (which has "
                                f"{', '.join(repr(k) for k in other)}: only 'caption' is read)")
            return None, None, "; ".join(problems) or None
        if "\x00" in text:
            problems.append("NUL bytes removed")
            text = text.replace("\x00", "")
        if source != "json":
            text = _saved_as(text)
            if isinstance(json_caption, str) and not text.strip() and json_caption.strip():
                # an empty caption file beside a json caption (a writer that failed to fill one): the text
                # there is, not a pair dropped for want of a caption
                problems.append(f"json caption used (.{source} empty)")
                if "\x00" in json_caption and "NUL bytes removed" not in problems:
                    problems.append("NUL bytes removed")
                text, source = json_caption.replace("\x00", ""), "json"
            elif isinstance(json_caption, str) and file_caption(json_caption) != text:
                problems.append(f"json caption differs (.{source} used)")
        if len(text) > self.limits.max_caption_chars:
            problems.append(f"truncated from {len(text)} chars")
            text = cut_caption(text, self.limits.max_caption_chars)
        return text, source, "; ".join(problems) or None

    def __iter__(self) -> Iterator[Sample]:
        for group in self._groups():
            if self.keys is not None and group.key not in self.keys:
                continue
            meta = meta_error = None
            if group.meta is not None:
                meta, meta_error = parse_meta(group.meta, group.meta_name or f"{group.key}.json", self.limits)
            else:
                meta_error = group.meta_unread
            caption, caption_source, caption_problem = self._caption(group, meta)
            original = original_size(meta, self.limits.max_original_side)
            unread = group.unread if group.image is None else None
            absent = (unread.status, unread.error) if unread is not None else None
            if group.image is None and unread is None and group.unsupported:  # x.heic: no image read, and why
                first, more = group.unsupported[0], len(group.unsupported) - 1
                if more:
                    first += f" (and {more} more unsupported member{'s' if more > 1 else ''})"
                absent = "missing", (f"no image member in sample; {first}; image members are "
                                     f".{', .'.join(IMAGE_EXTS)}")
            if self.decode:
                image, info = decode_image(group.image, self.limits, full=self.decode != "header" and self.decode,
                                           absent=absent)
            else:  # why there is no image travels in the record, for a decode elsewhere (``absent``)
                image, info = None, dict(zip(("decode_status", "decode_error"), absent or ()))
            record = {
                "shard": self.shard, "key": group.key, "caption": caption, "caption_source": caption_source,
                "caption_problem": caption_problem,
                "caption_sha256": _sha(caption.encode("utf-8")) if caption is not None else None,
                "caption_chars": len(caption) if caption is not None else None,
                "image_ext": group.image_ext or (unread.ext if unread is not None else None),
                "image_bytes": len(group.image) if group.image is not None else None,
                "image_sha256": _sha(group.image) if group.image else None, **info,
                "meta_json": json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta is not None else None,
                "meta_error": meta_error, "original_width": original[0] if original else None,
                "original_height": original[1] if original else None,
            }
            yield Sample(group.key, caption, image, record, group.image)


def iter_pair_batches(url: str, shard: str, batch_size: int = 64, limits: ReaderLimits = ReaderLimits(),
                      expected: RawFingerprint | None = None, decode: Literal[True, "verify"] = True,
                      keys: Collection[str] | None = None) -> Iterator[tuple[PairBatch, list[dict]]]:
    """Decoded batches for scorers (with the json's original image sizes): memory is bounded by
    ``batch_size`` and ``limits.max_batch_pixels``, not shard size. With ``expected``, a different file read
    raises ``RawShardChanged``. ``decode="verify"`` when no scorer reads pixels (``decode_image``): the same
    rows, cheaper. With ``keys`` (a rewrite's targets), batches of those samples alone: full batches for the
    model, however few of the shard's pairs they are, and no other image decoded."""
    names, captions, images, sizes, records, pixels = [], [], [], [], [], 0
    for sample in ShardReader(url, shard, limits, decode=decode, expected=expected, keys=keys):
        names.append(sample.key)
        captions.append(sample.caption)
        images.append(sample.image)
        sizes.append(sample.original_size)
        records.append(sample.record)
        pixels += sample.pixels(limits)
        if len(names) == batch_size or pixels >= limits.max_batch_pixels:
            yield PairBatch(names, captions, images, sizes), records
            names, captions, images, sizes, records, pixels = [], [], [], [], [], 0
    if names:
        yield PairBatch(names, captions, images, sizes), records
