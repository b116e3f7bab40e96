"""The tables this process last wrote or read, by file and version: read again, they are not.

A shard's steps read each other's tables: ``caption_decisions`` is loaded by the three steps after it,
``pairs`` and ``quality_scores`` by two each, in the same run, so in the same process. A warehouse file
never changes in place (every write is a new file renamed into place, ``Warehouse.atomic_open``), so
the version that names a write (``Warehouse._versions``: device, inode, size, modification and change time,
or an object's ETag) names its bytes: a table kept with the version it was read at, or written as, is what
a read of that version gives, without opening and decoding the Parquet again (on object storage, a GET).
A read asks the file's version first; any other version is read from the file as before.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import pyarrow as pa

# Bytes of Arrow tables kept; beyond, the least recently used go. Enough for the tables of the shard whose
# steps are running: a 10,000-pair shard's are a few MB each (its quality_scores, with a 384-float vector a
# pair, about 20 MB). Read again only within a shard's run, they are not worth more memory than that.
TABLE_CACHE_BYTES = 64 << 20


class TableCache:
    """Whole tables by key (a file's URL on its file system) at one version each, least recently used
    dropped beyond ``limit`` bytes. Arrow tables are immutable: every reader converts its own copy."""

    def __init__(self, limit: int = TABLE_CACHE_BYTES):
        self.limit, self.size = limit, 0
        self._tables: OrderedDict[str, tuple[str, pa.Table, int]] = OrderedDict()  # key: version, table, bytes
        self._lock = threading.Lock()

    def get(self, key: str, version: str) -> pa.Table | None:
        with self._lock:
            entry = self._tables.get(key)
            if entry is None or entry[0] != version:
                return None
            self._tables.move_to_end(key)
            return entry[1]

    def put(self, key: str, version: str, table: pa.Table) -> None:
        size = table.get_total_buffer_size()  # a sum over its buffers (nbytes walks the values' offsets)
        with self._lock:
            self._drop(key)
            if size > self.limit:
                return
            self._tables[key] = (version, table, size)
            self.size += size
            while self.size > self.limit:
                self._drop(next(iter(self._tables)))

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self.size = 0

    def _drop(self, key: str) -> None:
        entry = self._tables.pop(key, None)
        if entry is not None:
            self.size -= entry[2]


TABLES = TableCache()


def _new_lock_in_child() -> None:
    """A forked child's lock is free: another thread of its parent may have held it at the fork."""
    TABLES._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)
