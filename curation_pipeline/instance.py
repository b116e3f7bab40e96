"""The Dagster instance's SQLite storage, with each database's engine kept between queries.

Dagster's SQLite storages create an engine, and so open the file, for every query: one shard's run
makes about 600 of them, and they cost 40% of its steps outside scoring. ``PooledSqliteStorage`` is
Dagster's ``DagsterSqliteStorage`` (the same files, tables and WAL journal, so the web UI, the daemon
and other processes share them as before) whose run, event-log and schedule storages reuse a pooled
engine per database file. The shipped ``dagster.yaml`` selects it through ``CurationInstance``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as db
import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData

# Run-sharded event logs: one database per run, and a web server reads many; engines kept for the latest.
OPEN_RUN_DATABASES = 8


class Engines:
    """Pooled engines by database URL, the least recently used closed beyond ``keep``; a forked child
    builds its own (a pooled SQLite connection must not cross a fork)."""

    def __init__(self, keep: int = 1, busy_timeout_s: float | None = None, poolclass=None):
        self._keep = keep
        connect_args = {} if busy_timeout_s is None else {"timeout": busy_timeout_s}
        # a pool that never makes a thread wait: Dagster's own storages had no limit either
        pool = {"poolclass": poolclass} if poolclass else {"max_overflow": -1}
        self._options = {"connect_args": connect_args, **pool}
        self._engines: OrderedDict[str, db.Engine] = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self, url: str) -> db.Engine:
        with self._lock:
            if self._pid != os.getpid():
                for engine in self._engines.values():
                    engine.dispose(close=False)  # the parent's connections stay the parent's
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.pop(url, None) or db.create_engine(url, **self._options)
            self._engines[url] = engine
            while len(self._engines) > self._keep:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            while self._engines:
                self._engines.popitem()[1].dispose()


@contextmanager
def _transaction(engine: db.Engine) -> Iterator[db.Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


class _PooledConnect:
    """``connect`` of Dagster's one-file SQLite storages (runs, schedules), on one pooled engine."""

    def __init__(self, conn_string: str, inst_data=None):
        self._engines = Engines()
        super().__init__(conn_string, inst_data)

    @contextmanager
    def connect(self) -> Iterator[db.Connection]:
        with _transaction(self._engines.get(self._conn_string)) as conn:
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engines.dispose()


class PooledSqliteRunStorage(_PooledConnect, SqliteRunStorage):
    pass


class PooledSqliteScheduleStorage(_PooledConnect, SqliteScheduleStorage):
    pass


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None):
        self._engines = Engines(busy_timeout_s=SQLITE_BUSY_TIMEOUT_SECONDS)  # the index database
        # A run's own database is closed after each use, as Dagster does: the last connection's close
        # checkpoints the WAL into the file, and that change is what the web server's live run view
        # watches for. Reusing the engine still saves building one per query.
        self._run_engines = Engines(keep=OPEN_RUN_DATABASES, busy_timeout_s=SQLITE_BUSY_TIMEOUT_SECONDS,
                                    poolclass=db.pool.NullPool)
        super().__init__(base_dir, inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        with self._db_lock:
            engine = (self._engines if shard == INDEX_SHARD_NAME else self._run_engines).get(
                self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with _transaction(engine) as conn:
                yield conn

    def has_table(self, table_name: str) -> bool:
        with self._engines.get(self.conn_string_for_shard(INDEX_SHARD_NAME)).connect() as conn:
            return bool(conn.dialect.has_table(conn, table_name))

    def dispose(self) -> None:
        super().dispose()
        self._engines.dispose()
        self._run_engines.dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """``DagsterSqliteStorage`` with pooled engines: ``CurationInstance``'s default, or named as
    ``storage: custom:`` in dagster.yaml (with ``config: base_dir:``)."""

    def __init__(self, base_dir: str, inst_data=None):
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = PooledSqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class CurationInstance(DagsterInstance):
    """A Dagster instance whose default storage is ``PooledSqliteStorage``, in the folder Dagster itself
    would use: ``DAGSTER_HOME``, a temporary home (``dagster dev`` without one), or ``from_config``'s. An
    explicit ``storage:`` in dagster.yaml (Postgres, say) still wins."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__, PooledSqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        return defaults
