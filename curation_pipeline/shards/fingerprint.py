"""A raw shard's fingerprint: recorded when ``pairs`` reads it, verified by every later step.

If the raw ``.tar`` is replaced, grown or shrunk after ``pairs``, keys would pair old captions and
scores with new images. So ``pairs`` records the size, the SHA-256 of every byte (hashed while
streaming) and a cheap stat identity (mtime; inode and ctime for local files, which no ``touch`` can
restore; the ETag on object stores). A later step compares the stat first and re-hashes only when it
differs, so a ``touch`` alone never fails a run; a step that streams the file anyway compares the hash.
An observation does the same, and records the stat and hash of a file it had to read (``observed_version``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING

import fsspec

from curation_pipeline.shards.keys import validate_key

if TYPE_CHECKING:
    from curation_pipeline.storage.warehouse import Warehouse

CHUNK = 1 << 20


class RawShardChanged(RuntimeError):
    """The raw shard is not the file ``pairs`` read: nothing derived from it may be used."""


@dataclass(frozen=True)
class RawStat:
    size: int
    mtime: str  # as the file system reports it (ns for local files); "" if unknown
    identity: str  # local: "inode:ctime_ns"; object stores: ETag / generation; "" if unknown

    @property
    def same_file(self) -> str:
        return self.identity.split(":", 1)[0] if self.identity.count(":") == 1 else self.identity


@dataclass(frozen=True)
class RawFingerprint:
    size: int
    sha256: str
    mtime: str = ""
    identity: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RawFingerprint":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict) -> "RawFingerprint":
        return cls(size=int(data["size"]), sha256=str(data["sha256"]), mtime=str(data.get("mtime", "")),
                   identity=str(data.get("identity", "")))

    @property
    def stat(self) -> RawStat:
        return RawStat(self.size, self.mtime, self.identity)

    def short(self) -> str:
        return f"{self.size:,} bytes, sha256 {self.sha256[:16]}"


def raw_stat(url: str) -> RawStat:
    """Size and identity without reading the content. Raises FileNotFoundError / IsADirectoryError."""
    fs, path = fsspec.core.url_to_fs(url)
    if is_local_fs(fs):
        st = os.stat(path)
        if not os.path.isfile(path):
            raise IsADirectoryError(f"raw shard {url} is not a regular file")
        return RawStat(st.st_size, str(st.st_mtime_ns), f"{st.st_ino}:{st.st_ctime_ns}")
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(f"raw shard {url} is a directory")
    return stat_of_listing(info)


def stat_of_listing(info: dict) -> RawStat:
    """An object store's file details (``fs.info``, or one entry of a detailed listing, which holds the same)."""
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
    identity = info.get("ETag") or info.get("etag") or info.get("generation") or info.get("md5Hash") or ""
    return RawStat(int(info.get("size") or 0), str(mtime), str(identity).strip('"'))


def is_local_fs(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


class HashingReader:
    """A read-only file wrapper that hashes every byte read through it (for tarfile's stream mode).
    ``error`` keeps what the file itself raised (a network timeout, an I/O error): tarfile loses the
    bytes it had buffered before it, so its reader must fail the read rather than take it for damage."""

    def __init__(self, handle: IO[bytes]):
        self._handle, self._sha, self.bytes_read = handle, hashlib.sha256(), 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._handle.read(size)
        except Exception as exc:
            if not isinstance(exc, (RecursionError, MemoryError)):  # the reader's own state, not the file's
                self.error = exc
            raise
        self._sha.update(data)
        self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever tarfile left unread: padding after the end-of-archive blocks."""
        while self.read(CHUNK):
            pass

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def hash_file(url: str) -> tuple[int, str]:
    with fsspec.open(url, "rb") as handle:
        reader = HashingReader(handle)
        reader.drain()
    return reader.bytes_read, reader.sha256


def fingerprint(url: str) -> RawFingerprint:
    """Stat, then hash the whole file; fails if the file changed while it was hashed."""
    before = raw_stat(url)
    size, sha = hash_file(url)
    after = raw_stat(url)
    if after != before or size != after.size:
        raise RawShardChanged(f"raw shard {url} changed while it was being read ({before.size:,} -> "
                              f"{after.size:,} bytes); try again once it is written")
    return RawFingerprint(size, sha, after.mtime, after.identity)


# warehouse folder: per shard, the stat and SHA-256 an observation last had to hash the raw file for
OBSERVED = "raw_observed"


@dataclass(frozen=True)
class Observed:
    sha256: str
    hashed: bool = False  # the file was read
    unrecorded: str = ""  # why the stat -> SHA-256 just hashed could not be recorded (read again next time)


def observed_version(wh: "Warehouse", shard: str, url: str, read: RawFingerprint | None) -> Observed:
    """An observation of the raw shard: its SHA-256 (Dagster's data version). The file is read only when
    its stat is neither the one ``pairs`` read (``read``) nor the one last hashed by an observation. That
    one is kept as a small JSON file per shard in the warehouse, written atomically: the store the daemon,
    the web server's runs and ``curate`` already share for ``read``, and one file per shard, so concurrent
    shard runs never rewrite each other's. Without it a ``touch``, or a copy restored from backup, kept
    its stat different from ``read`` and was read in full on every observation. The record is a cache
    keyed by the stat: a stale one only costs a read, and a stat that changed while hashing is not kept."""
    stat = raw_stat(url)
    if read is not None and read.identity and read.stat == stat:
        return Observed(read.sha256)
    path = wh.join(OBSERVED, f"{validate_key(shard)}.json")
    try:
        record = wh.read_json(path)
        seen = None if record is None else RawFingerprint.from_dict(record)
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or hand-edited: hashed, then rewritten
        seen = None
    if seen is not None and seen.identity and seen.stat == stat:
        return Observed(seen.sha256)
    size, sha = hash_file(url)
    if raw_stat(url) != stat or size != stat.size:
        return Observed(sha, hashed=True, unrecorded="the file changed while it was read")
    try:
        wh.write_json(path, asdict(RawFingerprint(size, sha, stat.mtime, stat.identity)))
    except OSError as exc:  # the version stands; only the saving of the next read is lost
        return Observed(sha, hashed=True, unrecorded=f"{path}: {type(exc).__name__}: {exc}")
    return Observed(sha, hashed=True)


def describe_change(shard: str, url: str, expected: RawFingerprint, size: int, sha256: str,
                    stat: RawStat | None = None, when: str = "") -> str | None:
    """None if ``size``/``sha256`` are what ``pairs`` read; otherwise what changed, in words."""
    if size == expected.size and sha256 == expected.sha256:
        return None
    if size != expected.size:
        what = f"{'grown' if size > expected.size else 'shrunk'} from {expected.size:,} to {size:,} bytes"
    else:
        what = f"same size ({size:,} bytes), different content"
    if stat is not None and expected.identity and stat.identity:
        replaced = stat.same_file != expected.stat.same_file
        what = ("replaced by another file: " if replaced else "modified in place: ") + what
    return (f"raw shard {shard!r} ({url}) changed since `pairs` read it{when}: {what} "
            f"(sha256 {expected.sha256[:16]} -> {sha256[:16]}). Nothing of it is published; re-run the "
            f"shard from `pairs` to curate the new file.")


def verify_unchanged(url: str, shard: str, expected: RawFingerprint) -> RawStat:
    """Raise RawShardChanged unless the file at ``url`` is still the one ``pairs`` read. The same stat
    identity reads nothing; otherwise the file is hashed again and only another size or content fails."""
    try:
        stat = raw_stat(url)
    except FileNotFoundError as exc:
        raise RawShardChanged(f"raw shard {shard!r} ({url}) is gone since `pairs` read it "
                              f"({expected.short()}); nothing of it is published") from exc
    if stat == expected.stat and expected.identity:
        return stat
    if stat.size != expected.size:
        raise RawShardChanged(describe_change(shard, url, expected, stat.size, "?" * 16, stat))
    size, sha = hash_file(url)
    message = describe_change(shard, url, expected, size, sha, stat)
    if message:
        raise RawShardChanged(message)
    return stat
