"""The Parquet warehouse: one file per (table, shard), written atomically through fsspec (a local
folder or object storage).

Every write goes to a temporary name in the target's folder's ``.tmp`` folder
(``.tmp/.tmp-<name>.<host>-<pid>-<uuid>.partial``) and is renamed into place, so a crash leaves the previous file
or none. A failed write removes its own temp file; the next writer of the same file removes only the orphans of
dead writers (same host, no such process) or, elsewhere, a day old. It finds them in ``.tmp`` by their name's
prefix, never by listing the folder: that holds a file per shard, and a listing per write made a pool of N shards
cost N² (the report, which reads every shard, sweeps the whole warehouse, ``clean_temp_files``). Two live writers
never delete each other's temp file. A
rewrite of a file it read (``update_table_metadata``) replaces only the version it read: if another
writer replaced it meanwhile, ``FileChanged`` and nothing written; so is a file made from others (a
curated tar from its final_captions, ``atomic_open(requires=...)``) when one of them was replaced meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Callable, Iterator, NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation_pipeline.shards.keys import SHARD_KEY_PATTERN, validate_key
from curation_pipeline.storage.table_cache import TABLES as RECENT_TABLES
from curation_pipeline.tables import TEXT, VECTOR, stored_type

# Where data lives unless configured: the environment variable, else a folder relative to the working
# directory when the run starts. definitions.py shows them in the UI (as dg.EnvVar where set); a launchpad
# config that sets only some of the warehouse's fields gets them from WarehouseResource itself; the CLI's
# --raw / --warehouse fall back to them (here, not in resources.py: the CLI reads them without Dagster).
WAREHOUSE_DEFAULTS = {"raw_root": ("CURATION_RAW", "data/raw"), "root": ("CURATION_WAREHOUSE", "data/warehouse")}
TABLES = ("pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions", "skips")



def _pid_space() -> str:
    """Where a pid names one process: the host name, its boot, and the PID namespace. Two containers with
    the host's name (host networking) sharing a volume are two spaces: each one's pids mean nothing to the
    other."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "|".join(parts)


HOST = hashlib.sha256(_pid_space().encode()).hexdigest()[:8]
# stored shards read at once by a pool-wide step (dedup index, length reference): on object storage
# each read is a round trip
READ_THREADS = 16
ORPHAN_AGE_S = 24 * 3600  # a temp file of another host (or unknown writer) is an orphan after this
TEMP_PREFIX = ".tmp-"
TEMP_DIR = ".tmp"  # beside a folder's files, where its writers' temp files go (a sub-folder: no shard's file)
_WRITER = r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{32}"
_TEMP = re.compile(rf"^\.tmp-.+\.{_WRITER}\.partial")
_OLD_TEMP = re.compile(rf"^\.tmp-{_WRITER}-")  # before the name came first: the report's sweep still clears them
_ERROR_COLUMNS = re.compile(r"(^|_)(error|detail|reason)$")


class StorageUnreachable(OSError):
    """Object storage refused or could not be reached: no credentials, a wrong endpoint, a network error."""


class FileChanged(Exception):
    """The file was written again (or removed) since it was read: what was made from the old one is not
    published over the new one."""


# what object stores answer a conditional write whose If-Match no longer holds (409: one racing it)
_PRECONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


@contextlib.contextmanager
def object_storage_errors(url: str) -> Iterator[None]:
    """botocore's errors (a long traceback that names neither the URL nor where credentials come from) as
    one ``StorageUnreachable`` that names both. Its messages never carry the credentials themselves."""
    try:
        yield
    except Exception as exc:
        refused = isinstance(exc, PermissionError) and "://" in url  # s3fs's AccessDenied, InvalidAccessKeyId
        if not (refused or type(exc).__module__.startswith(("botocore", "aiobotocore"))):
            raise
        # s3://KEY:SECRET@bucket: never echoed, nor the part botocore took for a bucket
        said = mask_credentials(url, str(exc).rstrip("."))
        raise StorageUnreachable(f"cannot reach {mask_credentials(url)}: {said}. {CREDENTIALS_FROM}") from (
            None if _USERINFO.match(url) else exc)


# where object storage's credentials come from: never from a URL (s3fs reads s3://KEY:SECRET@bucket as a bucket)
CREDENTIALS_FROM = ("Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance "
                    "role (never from the URL); an S3-compatible store's address from AWS_ENDPOINT_URL")
# credentials before the host: KEY@ or KEY:SECRET@ (a secret may hold "/"); an "@" further on is a path's
_USERINFO = re.compile(r"^[a-zA-Z][\w+.-]*://([^/@:]*:[^@]*|[^/@]*)@")


def mask_credentials(url: str, text: str | None = None) -> str:
    """``text`` (the URL itself when not given) with the credentials typed into ``url`` (``s3://KEY:SECRET@...``,
    a secret may hold "/") and each of their parts of 3 characters or more replaced by ``***``."""
    text = url if text is None else text
    userinfo = _USERINFO.match(url)
    if userinfo:
        for piece in sorted({userinfo[1], *re.split(r"[/:]", userinfo[1])}, key=len, reverse=True):
            if len(piece) >= 3:
                text = text.replace(piece, "***")
    return text


def refuse_credentials(url: str) -> str:
    """``url`` unchanged, unless it carries credentials: refused before any read, so no library's error (nor an
    event log, a compute log or run metadata that stores it) ever holds them."""
    if _USERINFO.match(url):
        raise ValueError(f"{mask_credentials(url)}: credentials in a URL are refused. {CREDENTIALS_FROM}")
    return url


def temp_folder(folder: str) -> str:
    """Where the temp files of ``folder``'s files are written (``TEMP_DIR``)."""
    return f"{folder}/{TEMP_DIR}"


def temp_name(name: str, pid: int | None = None, host: str = HOST) -> str:
    """``.tmp-<name>.<host>-<pid>-<uuid>.partial``: never ``.parquet``/``.tar``, so no glob reads it; the target's
    name first, so its writers' temp files share a prefix (``Warehouse.remove_orphans``)."""
    return f"{TEMP_PREFIX}{name}.{host}-{os.getpid() if pid is None else pid}-{uuid.uuid4().hex}.partial"


def writer_alive(basename: str, mtime: float | None = None, now: float | None = None) -> bool:
    """Could the writer of this temp file still be writing it? Unknown writers count as alive
    until the file is ``ORPHAN_AGE_S`` old."""
    match = _TEMP.match(basename) or _OLD_TEMP.match(basename)
    if match and match["host"] == HOST:
        pid = int(match["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OverflowError, ValueError):
            pass
        started = _started_at(pid)  # a process that started after the file's last write reuses a dead writer's pid
        return not (started is not None and mtime is not None and started > mtime + 1)
    if mtime is None:
        return True
    return (now or time.time()) - mtime < ORPHAN_AGE_S


def _started_at(pid: int) -> float | None:
    """When the process ``pid`` started (seconds since the epoch), where Linux says."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def _fsync(handle) -> None:
    """To disk before the rename. A file system that cannot sync (EINVAL, ENOTSUP, EROFS) is let be; any
    other error (EIO, ENOSPC: network and FUSE mounts report failed write-back here) fails the write."""
    try:
        os.fsync(handle.fileno())
    except (ValueError, AttributeError, io.UnsupportedOperation):
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS, errno.EBADF):
            raise


def _own_metadata(meta: dict[bytes, bytes] | None) -> dict[str, str]:
    """A Parquet schema's metadata as the pipeline wrote it (pandas' own entry left out)."""
    return {k.decode(): v.decode() for k, v in (meta or {}).items() if not k.startswith(b"pandas")}


def _local_version(stat: os.stat_result) -> str:
    """``Warehouse.file_version`` of a local file."""
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def storable(df: pd.DataFrame) -> pd.DataFrame:
    """Strings every column can store: lone surrogates replaced (U+FFFD), memory addresses stripped
    from error texts. Only called when Arrow refused the frame, or for error columns."""
    from curation_pipeline.shards.text import replace_surrogates, strip_addresses

    out = df.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        clean = strip_addresses if _ERROR_COLUMNS.search(str(column)) else (lambda v: v)
        out[column] = out[column].map(lambda v: replace_surrogates(clean(v)) if isinstance(v, str) else v)
    return out


def _with_stored_types(table: str, arrow: pa.Table) -> pa.Table:
    """``arrow`` with each column of the type ``tables.stored_type`` declares, and an undeclared column with
    no value (Arrow null) as text: pandas makes ints with a missing value floats, and gives an all-None
    column no type, so shards would differ (pyarrow.dataset and HF datasets then fail to read them as one).
    A safe cast: a value it would change (1.5 to an int) raises. pandas reads back the values written (an
    int64 column with a null as float64 with NaN, as before the cast)."""
    for i, field in enumerate(arrow.schema):
        declared = stored_type(table, field.name)
        if declared is None and pa.types.is_null(field.type):
            declared = TEXT
        if declared is None:
            continue
        wanted = pa.list_(pa.float32()) if declared == VECTOR else pa.type_for_alias(declared)
        if field.type.equals(wanted):
            continue
        column = arrow.column(i)
        # a column with no value has no type to cast from (all-NaN floats cannot become a list): nulls of the type
        column = pa.nulls(len(column), wanted) if column.null_count == len(column) else column.cast(wanted)
        arrow = arrow.set_column(i, field.with_type(wanted), column)
    return arrow


class StoredTable(NamedTuple):
    """A table as ``Warehouse.store_table`` wrote it: its path, and its schema and row count as its footer says."""

    path: str
    schema: pa.Schema
    rows: int


class _Digesting:
    """A write handle that counts and hashes what goes through it (uploads are read back)."""

    def __init__(self, raw: IO[bytes]):
        self._raw, self.size, self.sha256 = raw, 0, hashlib.sha256()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += view.nbytes
        return self._raw.write(data)

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[Callable[[], None]]:
    """An exclusive ``flock`` on a local folder itself (no lock file), released on exit or by the process's
    death. A file system that refuses it on a folder (NFS: EBADF) gives no lock: the caller goes on. Yields the
    folder's fsync, so a rename into it is on disk: a file's own fsync keeps its bytes, not the folder entry
    naming it, and a power cut after a publish could bring back the file it replaced."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        fd = None

    def sync() -> None:
        if fd is not None:
            with contextlib.suppress(OSError):  # a file system that cannot sync a folder (EINVAL): nothing more
                os.fsync(fd)

    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield sync
    finally:
        if fd is not None:
            os.close(fd)


# Object stores: no listing cache. A long-lived process (the code server evaluating the sensor) must
# see shards and tables that other processes write; s3fs would otherwise cache listings for good.
fsspec.config.conf.setdefault("s3", {}).setdefault("use_listings_cache", False)


class Warehouse:
    """Where every stage's per-shard tables and the curated shards live."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self._store: str | None = None

    @property
    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def join(self, *parts: str) -> str:
        """A path under the warehouse root (fsspec form)."""
        return "/".join([self._root_path, *parts])

    def table_path(self, table: str, shard: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown warehouse table {table!r}; known: {', '.join(TABLES)}")
        return self.join(table, f"{validate_key(shard)}.parquet")

    @property
    def curated_dir(self) -> str:
        return self.join("curated")

    def curated_path(self, shard: str) -> str:
        return self.join("curated", f"{validate_key(shard)}.tar")

    @property
    def report_db_path(self) -> str:
        return self.join("quality.duckdb")

    def check_reachable(self) -> None:
        """Fail now, not in a run's first step: ``StorageUnreachable`` when object storage cannot be reached,
        ``FileNotFoundError`` naming the bucket when an S3 warehouse's bucket does not exist (writes would
        fail, and a new prefix in a bucket that does is as absent as a missing bucket to ``exists``); a local
        warehouse whose path, or the nearest part of it that exists, is a file: ``NotADirectoryError``; one in a
        folder this user cannot enter: ``PermissionError``."""
        if self.is_local:  # the path it writes to (fsspec's: "~" and file:// resolved)
            existing = Path(self._root_path)
            while not existing.exists() and existing != existing.parent:  # PermissionError where it cannot look
                existing = existing.parent
            if not existing.is_dir():
                raise NotADirectoryError(f"warehouse {self.root} cannot be a folder: {existing} is a file; "
                                         "point --warehouse / CURATION_WAREHOUSE at a folder")
            return
        with object_storage_errors(self.root):
            if self.fs.exists(self._root_path):
                return
            protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
            if not protocols & {"s3", "s3a"}:
                return
            bucket = self._root_path.split("/", 1)[0]
            try:
                self.fs.call_s3("head_bucket", Bucket=bucket)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"bucket {bucket!r} of warehouse {self.root} does not exist: create it, or "
                                        "fix --warehouse / CURATION_WAREHOUSE") from exc
            except PermissionError:  # a key may write objects without the right to look at its bucket
                pass

    def local_path(self, path: str) -> str:
        """Where a user or DuckDB opens ``path``: an absolute local path, or the object store's URL."""
        return os.path.abspath(path) if self.is_local else f"{self.fs.unstrip_protocol(path)}"

    def remove_orphans(self, parent: str, name: str, tail: str = "") -> list[str]:
        """Temp files of ``parent``'s file ``name`` (``tail``: after ``.partial``, ``*`` for any) whose writer is
        dead; returns them. Found in its ``.tmp`` folder by their prefix alone (``temp_name``)."""
        after = ".*" if tail == "*" else re.escape(tail)
        own = re.compile(rf"^{re.escape(TEMP_PREFIX + name)}\.{_WRITER}\.partial{after}$", re.DOTALL)
        return self._remove_dead([p for p in self._prefixed(temp_folder(parent), TEMP_PREFIX + name + ".")
                                  if own.match(p.rsplit("/", 1)[-1])])

    def _prefixed(self, folder: str, prefix: str) -> list[str]:
        """The files directly in ``folder`` whose name starts with ``prefix``: locally from the directory's
        names (no stat of each), on object storage by a listing of that prefix only (s3fs, gcsfs)."""
        if self.is_local:
            try:
                with os.scandir(self.local_path(folder)) as entries:
                    return [f"{folder}/{e.name}" for e in entries if e.name.startswith(prefix) and e.is_file()]
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            found = self.fs.find(folder, maxdepth=1, prefix=prefix)
        except FileNotFoundError:
            return []
        return [p for p in found if p.rsplit("/", 1)[-1].startswith(prefix)]  # a store that ignored the prefix

    def _files(self, folder: str, detail: bool = False) -> list:
        """The files directly in ``folder`` (paths, or fsspec's info dicts), none when it does not exist.
        Listed, not globbed: a ``[``, ``*`` or ``?`` in the warehouse's own path is a character (on object
        storage, s3fs's glob finds nothing under such a prefix at all)."""
        try:
            entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        files = [e for e in entries if e.get("type") == "file"]
        return files if detail else [e["name"] for e in files]

    def _remove_dead(self, candidates: list[str]) -> list[str]:
        removed = []
        now = time.time()
        for orphan in candidates:
            base = orphan.rsplit("/", 1)[-1]
            try:
                info = self.fs.info(orphan)
                mtime = info.get("mtime") or info.get("LastModified")  # object stores say LastModified
                mtime = float(mtime.timestamp()) if hasattr(mtime, "timestamp") else (float(mtime) if mtime else None)
            except FileNotFoundError:
                continue
            if writer_alive(base, mtime, now):
                continue
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(orphan)
                removed.append(orphan)
        return removed

    def clean_temp_files(self) -> list[str]:
        """Orphaned temp files anywhere in the warehouse (tables, curated/, selection/, dedup/, dedup/cache/)."""
        if not self.fs.exists(self._root_path):
            return []
        # their .tmp folders: of the root, tables, curated/, selection/, dedup/, dedup/cache/ (and files beside
        # them, from before the .tmp folders)
        found = self.fs.find(self._root_path, maxdepth=4)
        # ``.partial*``: a report build's DuckDB ``.partial.wal`` too (its own writer clears the new format's)
        return self._remove_dead(sorted(p for p in found
                                        if fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], f"{TEMP_PREFIX}*.partial*")))

    @contextlib.contextmanager
    def atomic_open(self, path: str, verify: Callable[[str], None] | None = None,
                    replaces: str | None = None, requires: dict[str, str] | None = None) -> Iterator[IO[bytes]]:
        """Write to a temporary sibling, then rename: readers never see a partial file. ``verify(temp_path)``
        runs on the complete temp file first; if it raises, nothing is published. ``replaces``: the version
        (``file_version``) ``path`` must still be at when the rename comes, else ``FileChanged`` and
        nothing is published (see ``_commit`` for how close to the rename that is checked). ``requires``:
        other files (path -> version) the written file was made from, which must still be at those
        versions when the rename comes, checked the same way (a curated tar and its final_captions)."""
        parent, name = path.rsplit("/", 1)
        if self.is_local:  # object stores have no folders (and s3fs's makedirs would create a mistyped bucket)
            self.fs.makedirs(temp_folder(parent), exist_ok=True)
        self.remove_orphans(parent, name)  # left by a killed writer of this file; live writers' stay
        tmp = f"{temp_folder(parent)}/{temp_name(name)}"
        try:
            with self.fs.open(tmp, "wb") as raw:
                handle = raw if self.is_local else _Digesting(raw)
                yield handle
                if hasattr(raw, "flush"):
                    raw.flush()
                if hasattr(raw, "fileno"):
                    _fsync(raw)
            if not self.is_local:  # object storage: read the upload back before committing it
                self._verify_upload(tmp, handle, verify)
            elif verify is not None:
                verify(self.local_path(tmp))
            self._commit(tmp, path, replaces, requires)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def _commit(self, tmp: str, path: str, replaces: str | None = None,
                requires: dict[str, str] | None = None) -> None:
        """The rename: atomic on a local disk; on object storage a server-side copy, then the temp object's
        delete (file-level calls: ``mv`` would read glob characters in the path as patterns).

        ``replaces`` (compare-and-swap): on a local disk every commit into a folder holds an exclusive
        ``flock`` on that folder, so the check of ``path``'s version and the rename are one step for all
        the warehouse's writers (where the file system refuses flock on a folder, e.g. NFS, the window
        left is the one between that ``stat`` and the rename). On object storage there is no rename to
        lock: the version is checked (HEAD) right before the copy, and the copy itself carries
        ``If-Match`` on that ETag, which AWS S3 enforces (412, nothing written); a store that ignores
        the header (s3rver, some S3-compatible ones) leaves the window between the HEAD and the copy.

        ``requires`` (other files the new one was made from): on a local disk the folders of those files are
        locked too (all in sorted order, so no two commits wait on each other), so none of them can be
        replaced between its check and the rename; on object storage each is checked (HEAD) right before
        the copy, and the window between the two stays (no store conditions a copy on another object)."""
        if self.is_local:
            folders = sorted({p.rsplit("/", 1)[0] for p in (path, *(requires or {}))})
            with contextlib.ExitStack() as locks:
                syncs = {folder: locks.enter_context(_folder_lock(folder)) for folder in folders}
                self._still_required(path, requires)
                if replaces is not None:
                    self._still_at(path, replaces)
                os.replace(tmp, path)
                syncs[path.rsplit("/", 1)[0]]()  # the rename itself survives a power cut, not only the bytes
            return
        self._still_required(path, requires)
        conditional = {}
        if replaces is not None:
            self._still_at(path, replaces)
            if self._is_s3:
                conditional = {"IfMatch": replaces}
        try:
            self.fs.cp_file(tmp, path, **conditional)
        except OSError as exc:
            error = getattr(getattr(exc, "__cause__", None), "response", None) or {}
            if conditional and error.get("Error", {}).get("Code") in _PRECONDITION_FAILED:
                raise FileChanged(f"{self.fs.unstrip_protocol(path)} was written again since it was read; "
                                  "not replaced") from exc
            raise
        # committed: the new object is live, so a failed delete of the temp one is no failed write (the copy
        # stays until remove_orphans finds its writer gone)
        try:
            self.fs.rm_file(tmp)
        except Exception as exc:  # noqa: BLE001 (any transport error)
            logging.getLogger(__name__).warning("wrote %s, but could not remove its temporary copy %s: %s",
                                                self.fs.unstrip_protocol(path), tmp, exc)

    @property
    def _is_s3(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return bool({"s3", "s3a"} & set(protocols))

    def file_version(self, path: str, handle=None) -> str:
        """Which write of ``path`` is there (or open in ``handle``, taken before its bytes are read): on a
        local disk the file's inode, size and modification time (every write is a new file renamed into
        place); on object storage its ETag (s3fs makes every read of ``handle`` require that ETag, so the
        bytes read are that version's), else its size and modification time."""
        if self.is_local:
            return _local_version(os.fstat(handle.fileno()) if handle is not None else os.stat(path))
        if handle is not None and hasattr(handle, "details"):
            info = handle.details
        else:
            self.fs.invalidate_cache(path)
            info = self.fs.info(path)
        modified = info.get("LastModified") or info.get("mtime") or info.get("created")
        return str(info.get("ETag") or f"{info.get('size')}:{modified}")

    def _change(self, path: str, version: str) -> str | None:
        """How ``path`` is no longer at ``version`` (``removed``, ``written again``), or None."""
        try:
            return None if self.file_version(path) == version else "written again"
        except FileNotFoundError:
            return "removed"

    def _still_at(self, path: str, version: str) -> None:
        """``FileChanged`` unless ``path`` is still at ``version``."""
        change = self._change(path, version)
        if change:
            raise FileChanged(f"{self.local_path(path)} was {change} since it was read; not replaced")

    def _still_required(self, path: str, requires: dict[str, str] | None) -> None:
        """``FileChanged``, naming it, unless each file ``path`` was made from is still at the version read."""
        for other, version in (requires or {}).items():
            change = self._change(other, version)
            if change:
                raise FileChanged(f"{self.local_path(other)}, which {self.local_path(path)} was made from, was "
                                  f"{change} since it was read; {self.local_path(path)} not published")

    def _verify_upload(self, tmp: str, written: "_Digesting", verify: Callable[[str], None] | None) -> None:
        """Object storage: the temp object must read back as exactly the bytes written (size and SHA-256),
        and ``verify`` runs on a local copy of that read-back, before ``atomic_open`` commits it."""
        digest, size = hashlib.sha256(), 0
        with tempfile.TemporaryDirectory(prefix="upload-check-") as folder:
            local = os.path.join(folder, tmp.rsplit("/", 1)[-1])
            with self.fs.open(tmp, "rb") as src, (open(local, "wb") if verify else contextlib.nullcontext()) as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    if dst is not None:
                        dst.write(chunk)
            if size != written.size or digest.hexdigest() != written.sha256.hexdigest():
                raise OSError(f"upload of {self.fs.unstrip_protocol(tmp)} reads back as {size} bytes / sha256 "
                              f"{digest.hexdigest()[:12]}, not the {written.size} bytes / "
                              f"{written.sha256.hexdigest()[:12]} written; not committed")
            if verify is not None:
                verify(local)

    def write_json(self, path: str, value: dict) -> str:
        """``value`` as indented, key-sorted JSON, written atomically; returns the path."""
        with self.atomic_open(path) as handle:
            handle.write(json.dumps(value, indent=1, sort_keys=True).encode())
        return path

    def read_json(self, path: str) -> dict | None:
        """The JSON object at ``path``, None when there is none."""
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return json.loads(handle.read().decode())

    def write_table(self, table: str, shard: str, df: pd.DataFrame,
                    metadata: dict[str, str] | None = None) -> str:
        """``df`` as the shard's table (``store_table``); returns its path."""
        return self.store_table(table, shard, df, metadata).path

    def store_table(self, table: str, shard: str, df: pd.DataFrame,
                    metadata: dict[str, str] | None = None, requires: dict[str, str] | None = None) -> StoredTable:
        """``df`` written atomically as the shard's table, each column of its declared type
        (``_with_stored_types``), with ``metadata`` in its schema; returns the path and what the footer written
        says (the schema a reader gets, e.g. timestamp[s] as timestamp[ms], and the row count), so that no
        caller reads the file back for them (one more GET per table on object storage). ``requires``: the
        tables it was made from (path -> version read), which must still be those (``atomic_open``)."""
        path = self.table_path(table, shard)
        # a frame of its own (reset_index copies, unless pandas copies on write): the table kept for this
        # process's reads (RECENT_TABLES) must share no array with the caller's frame, which may change later
        df = df.reset_index(drop=True)
        if getattr(pd.options.mode, "copy_on_write", True) is True:  # pandas 3 has no such option: it always does
            df = df.copy(deep=True)
        errors = [c for c in df.columns if df[c].dtype == object and _ERROR_COLUMNS.search(str(c))]
        if errors:  # error texts must read the same on every run
            df = df.assign(**storable(df[errors]))
        try:
            arrow = pa.Table.from_pandas(df, preserve_index=False)
        except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if "surrogate" not in str(exc):
                raise
            # a string that cannot be UTF-8 (a lone surrogate) must not fail the shard: store U+FFFD
            arrow = pa.Table.from_pandas(storable(df), preserve_index=False)
        arrow = _with_stored_types(table, arrow)
        if metadata:
            arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                                   **{k.encode(): str(v).encode() for k, v in metadata.items()}})
        footer: list[pq.FileMetaData] = []
        written = None  # a descriptor of the file written, whatever is at ``path`` once it is renamed there
        try:
            with self.atomic_open(path, requires=requires) as handle:
                pq.write_table(arrow, handle, compression="zstd", metadata_collector=footer)
                if self.is_local:
                    handle.flush()
                    written = os.dup(handle.fileno())
            stored = StoredTable(path, footer[0].schema.to_arrow_schema(), footer[0].num_rows)
            if written is not None:  # an object's ETag is known at its first read
                self._keep_written(path, written, arrow, stored.schema)
        finally:
            if written is not None:
                os.close(written)
        return stored

    def _keep_written(self, path: str, fd: int, arrow: pa.Table, read_schema: pa.Schema) -> None:
        """Keep a table just written (open in ``fd``, renamed to ``path``) for this process's next read, as a
        read gives it: of the schema its footer gives readers (a vector's list items named ``element``, not
        ``item``; timestamp[s] as ms; dictionary indices as int32), cast without a loss, or not kept. The
        table is written either way: not keeping it costs a read later."""
        try:
            version = self._versions(path, fd=fd)[1]
            if not arrow.schema.equals(read_schema, check_metadata=True):
                arrow = arrow.cast(read_schema)
        except (OSError, pa.ArrowException, ValueError):
            return
        RECENT_TABLES.put(self._recent_key(path), version, arrow)

    def update_table_metadata(self, table: str, shard: str, updates: dict[str, str],
                              read_version: str | None = None) -> str:
        """Rewrite the stored file with ``updates`` in its schema metadata, its rows as they are (Parquet
        has no in-place metadata edit: the file is written again, atomically). Only over the file read:
        ``FileChanged``, and nothing written, when another writer replaced it since (its rows must not be
        lost to these), or since the caller read ``read_version`` (``read_table_versioned``), whose rows
        ``updates`` were computed from. How closely that is guaranteed: ``_commit``."""
        path = self.table_path(table, shard)
        with self.fs.open(path, "rb") as handle:
            version = self.file_version(path, handle)
            arrow = pq.read_table(handle)
        if read_version is not None and version != read_version:
            raise FileChanged(f"{table} of {shard} was written again since it was read ({self.local_path(path)})")
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               **{k.encode(): str(v).encode() for k, v in updates.items()}})
        with self.atomic_open(path, replaces=version) as handle:
            pq.write_table(arrow, handle, compression="zstd")
        return path

    def read_table(self, table: str, shard: str, columns: list[str] | None = None,
                   optional: list[str] | None = None, *, keep: bool = True) -> pd.DataFrame:
        """The whole table, or only ``columns`` and those of ``optional`` it has (Parquet reads nothing else).
        A whole table read is kept for this process's next read (``RECENT_TABLES``) unless ``keep`` is off: a
        read of every shard's table, which reads none of them again."""
        return self.read_table_versioned(table, shard, columns, optional, keep=keep)[0]

    def read_table_and_metadata(self, table: str, shard: str, columns: list[str] | None = None,
                                optional: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
        """``read_table``, and the file's own metadata (``table_metadata``) from the same read."""
        return self.read_table_versioned(table, shard, columns, optional)[:2]

    def read_table_versioned(self, table: str, shard: str, columns: list[str] | None = None,
                             optional: list[str] | None = None, *,
                             keep: bool = True) -> tuple[pd.DataFrame, dict[str, str], str]:
        """``read_table_and_metadata``, and the version of the file read (``file_version``): what
        ``update_table_metadata`` needs to change that file only."""
        path = self.table_path(table, shard)
        key = self._recent_key(path)
        try:
            version, exact = self._versions(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{table} for shard {shard!r} is not in the warehouse ({path}); "
                                    "materialize it first") from None
        recent = RECENT_TABLES.get(key, exact)
        if recent is not None and (columns is None or set(columns) <= set(recent.column_names)):
            if columns is not None:  # as ParquetFile.read gives them: in the order asked, optional ones after
                recent = recent.select(list(dict.fromkeys(
                    [*columns, *(c for c in optional or () if c in recent.column_names)])))
            return recent.to_pandas(), _own_metadata(recent.schema.metadata), version
        with self.fs.open(path, "rb") as handle:
            version, exact = self._versions(path, handle)
            # the one file read directly: pq.read_table's dataset set-up cost more than reading a shard's table
            parquet = pq.ParquetFile(handle)
            present = set(parquet.schema_arrow.names)
            if columns is not None and not present.issuperset(columns):
                # ParquetFile.read would leave a missing column out: read_table raises naming it, optional
                # columns asked for or not
                handle.seek(0)
                pq.read_table(handle, columns=list(columns))
            arrow = parquet.read(columns=None if columns is None else
                                 [*columns, *(c for c in optional or () if c in present and c not in columns)])
        if columns is None and keep:
            RECENT_TABLES.put(key, exact, arrow)
        return arrow.to_pandas(), _own_metadata(arrow.schema.metadata), version

    def _versions(self, path: str, handle=None, fd: int | None = None) -> tuple[str, str]:
        """``file_version`` of ``path`` (open in ``handle`` or ``fd``, else opened here), and the stricter one
        RECENT_TABLES keeps tables at. On a local disk that one adds the device and the inode's change time
        (which an attribute change sets too: a modification time set back with ``touch``, say), and both come
        from an open file: an NFS client asks the server for a file's attributes at its open, where a stat
        may answer from its cache. Two whole writes of the same size on one inode within one timestamp tick
        (1-10 ms on kernels before 6.13) would still read as one version; each write here is fsynced first,
        which on most disks takes longer. On object storage both are the object's ETag (its content's digest)."""
        if not self.is_local:
            version = self.file_version(path, handle)
            return version, version
        if fd is None and handle is not None:
            fd = handle.fileno()
        if fd is not None:
            stat = os.fstat(fd)
        else:
            opened = os.open(path, os.O_RDONLY)
            try:
                stat = os.fstat(opened)
            finally:
                os.close(opened)
        return _local_version(stat), f"{stat.st_dev}:{_local_version(stat)}:{stat.st_ctime_ns}"

    def _recent_key(self, path: str) -> str:
        """``path``'s key in RECENT_TABLES: with its store (the same bucket name on two endpoints is two)."""
        if self._store is None:
            options = json.dumps(self.fs.storage_options, sort_keys=True, default=str)
            self._store = f"{type(self.fs).__name__}:{hashlib.sha256(options.encode()).hexdigest()[:16]}"
        return f"{self._store}|{path}"

    def table_metadata(self, table: str, shard: str) -> dict[str, str]:
        path = self.table_path(table, shard)
        if self.is_local:  # an open and a stat (on object storage the HEAD would be one more request than a miss makes)
            recent = RECENT_TABLES.get(self._recent_key(path), self._versions(path)[1])
            if recent is not None:
                return _own_metadata(recent.schema.metadata)
        with self.fs.open(path, "rb") as handle:
            return _own_metadata(pq.read_schema(handle).metadata)

    def has_table(self, table: str, shard: str) -> bool:
        return self.fs.exists(self.table_path(table, shard))

    def shards(self, table: str) -> list[str]:
        return list(self.shard_files(table))

    def shard_files(self, table: str) -> dict[str, dict]:
        """Shard -> the file system's details of its file (size, modification time, ...), from one
        listing: on object storage one request per thousand files, not one per file."""
        found = [info for info in self._files(self.join(table), detail=True) if info["name"].endswith(".parquet")]
        out = {info["name"].rsplit("/", 1)[1][: -len(".parquet")]: info for info in found}
        return {s: out[s] for s in sorted(out) if SHARD_KEY_PATTERN.fullmatch(s)}

    def curated_files(self) -> dict[str, dict]:
        """Shard -> the file system's details of its published curated tar, from one listing."""
        return {info["name"].rsplit("/", 1)[-1][: -len(".tar")]: info
                for info in self._files(self.curated_dir, detail=True) if info["name"].endswith(".tar")}

    def curated_shards(self) -> set[str]:
        """The shards whose curated tar is published, from one listing."""
        return set(self.curated_files())

    def table_files(self, table: str) -> list[str]:
        """Paths of a table's shard files (never a writer's temp file), for DuckDB."""
        return [self.local_path(self.table_path(table, shard)) for shard in self.shards(table)]

    def read_all(self, table: str, exclude: str | None = None) -> pd.DataFrame:
        frames = [self.read_table(table, s, keep=False) for s in self.shards(table) if s != exclude]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
