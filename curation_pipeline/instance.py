"""The Dagster instance's SQLite storage, with each database's engine kept between queries.

Dagster's SQLite storages create an engine, and so open the file, for every query: one shard's run
makes about 900 of them, and opening, committing and closing cost about 1.3 ms each, most of a shard's
steps outside scoring. ``PooledSqliteStorage`` is Dagster's ``DagsterSqliteStorage`` (the same files,
tables and WAL journal, so the web UI, the daemon and other processes share them as before) whose run,
event-log and schedule storages keep their connections open in a pool per database file. The shipped
``dagster.yaml`` selects it through ``CurationInstance``. Its connections commit with
``synchronous=NORMAL`` (``_no_sync_per_commit``).
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as db
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.assets import AssetDetails
from dagster._core.events import DagsterEventType
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.base import EventLogRecord
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
from dagster._serdes import ConfigurableClassData, deserialize_value

from curation_pipeline.compute_logs import ThreadMirroredComputeLogManager

# Run-sharded event logs: one database per run, and a web server reads many; engines kept for the latest.
OPEN_RUN_DATABASES = 8
# decoded latest materializations kept (by their stored text): a step asks for each of its inputs' assets
DECODED_RECORDS = 64


class Engines:
    """Pooled engines by database URL, the least recently used closed beyond ``keep``; a forked child
    builds its own (a pooled SQLite connection must not cross a fork)."""

    def __init__(self, keep: int = 1, busy_timeout_s: float | None = None):
        self._keep = keep
        connect_args = {} if busy_timeout_s is None else {"timeout": busy_timeout_s}
        # a pool that never makes a thread wait: Dagster's own storages had no limit either
        self._options = {"connect_args": connect_args, "max_overflow": -1}
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
            engine = self._engines.pop(url, None)
            if engine is None:
                engine = db.create_engine(url, **self._options)
                db.event.listen(engine, "connect", _no_sync_per_commit)
            self._engines[url] = engine
            while len(self._engines) > self._keep:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            while self._engines:
                self._engines.popitem()[1].dispose()


def _no_sync_per_commit(dbapi_connection, _record) -> None:
    """WAL with ``synchronous=NORMAL``: a commit no longer waits for the disk (fdatasync), a checkpoint still
    does. A crash of the process or the OS loses nothing; a power cut may lose the last commits (events
    of the runs then under way), never the database. Most commits of a run are its event log's: about
    470 per shard, 0.4 ms each on this disk, a third of a shard's non-scoring steps."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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


def _touch(path: str) -> None:
    """The web server's live run view watches the run's database file, not its WAL, for a change
    (watchdog: a write or an attribute change, inotify's IN_MODIFY or IN_ATTRIB), then reads the new
    events through SQLite, which reads the WAL. Dagster's storage changed the file by closing its last
    connection (a checkpoint); an open connection changed it by checkpointing after each write, whose
    two fsyncs cost 1-10 ms a write on this disk, more than the rest of an event's storage. A new
    modification time is the same signal for a few microseconds; SQLite still checkpoints the WAL into
    the file itself (every 1000 pages, and when the last connection closes)."""
    with suppress(FileNotFoundError):  # deleted meanwhile (wipe): nothing left to watch
        os.utime(path)


_HAS_PARTITION = "SELECT 1 FROM dynamic_partitions WHERE partitions_def_name = ? AND partition = ? LIMIT 1"


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None):
        self._engines = Engines(busy_timeout_s=SQLITE_BUSY_TIMEOUT_SECONDS)  # the index database
        self._run_engines = Engines(keep=OPEN_RUN_DATABASES, busy_timeout_s=SQLITE_BUSY_TIMEOUT_SECONDS)
        self._tables: set[str] = set()
        self._asset_key_columns: set[str] = set()
        self._secondary_indexes: set[str] = set()
        self._decoded_records: OrderedDict[str, object] = OrderedDict()
        self._decode_lock = threading.Lock()
        super().__init__(base_dir, inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        with self._db_lock:
            run_database = shard != INDEX_SHARD_NAME
            engine = (self._run_engines if run_database else self._engines).get(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                sqlite = conn.connection.dbapi_connection
                changes = sqlite.total_changes
                with conn.begin():
                    yield conn
                if run_database and sqlite.total_changes != changes:
                    _touch(engine.url.database)

    def has_table(self, table_name: str) -> bool:
        """Asked before most partition and check queries; a table, once there, stays (migrations add them)."""
        if table_name in self._tables:
            return True
        with self._engines.get(self.conn_string_for_shard(INDEX_SHARD_NAME)).connect() as conn:
            found = bool(conn.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        """Dagster's query as plain SQL: asked about 50 times in one shard's steps (each partition range of an
        input, output or check), where building the statement through SQLAlchemy cost 3x the query."""
        self._check_partitions_table()
        with self.index_connection() as conn:
            row = conn.exec_driver_sql(_HAS_PARTITION, (partitions_def_name, partition_key)).first()
        return row is not None

    # Schema and data-migration checks Dagster makes before its asset queries (about 50 in one shard's steps,
    # each a PRAGMA table_info or a select): a column or a completed migration, once there, stays there
    # (migrations add them; a wipe keeps both), so a yes is remembered as has_table's is, a no asked again.
    def has_asset_key_col(self, column_name: str) -> bool:
        if column_name in self._asset_key_columns:
            return True
        return super().has_asset_key_col(column_name)

    def _has_asset_key_col_on_connection(self, conn: db.Connection, column_name: str) -> bool:
        if column_name in self._asset_key_columns:
            return True
        found = super()._has_asset_key_col_on_connection(conn, column_name)
        if found:
            self._asset_key_columns.add(column_name)
        return found

    def has_secondary_index(self, name: str) -> bool:
        if name in self._secondary_indexes:
            return True
        found = super().has_secondary_index(name)
        if found:
            self._secondary_indexes.add(name)
        return found

    def _initdb(self, engine: db.Engine, for_index_shard: bool = False) -> None:
        """A new run's database starts as a copy of one Dagster built once in this process: Dagster
        builds each with Alembic, which reads every migration script twice (about 200 ms a run)."""
        path = Path(engine.url.database)
        if for_index_shard or path.exists():
            super()._initdb(engine, for_index_shard)
            return
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
        try:
            # mkstemp makes it 0600; SQLite (so Dagster's own storage) creates a database 0644 less the
            # umask (SQLITE_DEFAULT_FILE_PERMISSIONS), which a web server or daemon of another user reads
            os.fchmod(handle, 0o644 & ~_umask())
            with os.fdopen(handle, "wb") as fresh:
                fresh.write(new_run_database())
                fresh.flush()
                os.fsync(fresh.fileno())
            try:
                os.link(name, path)  # never over the database another process has made meanwhile
            except FileExistsError:
                super()._initdb(engine, for_index_shard)
        finally:
            os.unlink(name)

    def _get_latest_materialization_records(self, raw_asset_rows) -> dict[AssetKey, EventLogRecord | None]:
        """Each asset step asks for its input assets' records (Dagster's data-version provenance): Dagster decodes
        each row's stored latest materialization again (about 0.5 ms with a table preview's metadata) and then
        runs its back-compat query even for no row. The same stored text decodes once here; rows Dagster's
        fast path would not take (none stored, an old format, or older than the asset's wipe) go to it."""
        results: dict[AssetKey, EventLogRecord | None] = {}
        rest = []
        for row in raw_asset_rows:
            asset_key = AssetKey.from_db_string(row["asset_key"])
            record = self._decoded(row["last_materialization"]) if row["last_materialization"] else None
            details = AssetDetails.from_db_string(row["asset_details"])
            wiped = details.last_wipe_timestamp if details else None
            if (asset_key and isinstance(record, EventLogRecord)
                    and (wiped is None or record.event_log_entry.timestamp > wiped)):
                results[asset_key] = record
            else:
                rest.append(row)
        if rest:
            results.update(super()._get_latest_materialization_records(rest))
        return results

    def _decoded(self, stored: str):
        with self._decode_lock:
            record = self._decoded_records.pop(stored, None)
            if record is None:
                record = deserialize_value(stored, NamedTuple)
            self._decoded_records[stored] = record  # most recent last
            while len(self._decoded_records) > DECODED_RECORDS:
                self._decoded_records.popitem(last=False)
            return record

    def wipe(self) -> None:
        self._run_engines.dispose()  # the run databases are deleted: no connection may write on into one
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._engines.dispose()
        self._run_engines.dispose()


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would change it for every thread
    meanwhile) where Linux shows it."""
    with suppress(OSError, StopIteration, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_new_run_database: bytes | None = None
_new_run_database_lock = threading.Lock()


def new_run_database() -> bytes:
    """The file of an empty run database, as Dagster's own storage makes it (tables, indexes, Alembic
    revision, WAL journal), built on first use; the forkserver builds it before its children fork."""
    global _new_run_database
    with _new_run_database_lock:
        if _new_run_database is None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder, "run.db")
                engine = db.create_engine(f"sqlite:///{path}", poolclass=db.pool.NullPool)
                SqliteEventLogStorage._initdb(None, engine)  # the base's method uses nothing of its instance
                engine.dispose()  # the last connection's close checkpoints the WAL into the file
                if Path(f"{path}-wal").exists():
                    raise RuntimeError(f"the new run database's journal was not checkpointed into {path}")
                _new_run_database = path.read_bytes()
        return _new_run_database


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


@functools.cache
def _creator_tagging_run_domain() -> type:
    """Dagster's ``RunDomain`` that also tags a run its creating process starts itself (made to start now, with no
    code location's origin to launch it from: ``execute_in_process``) with that process (``workers.CREATOR_TAG``):
    a process interrupted between creating and starting a run (Ctrl-C in ``curate run``) would leave it
    NOT_STARTED for ever, holding its shard from the schedule and the settle sensor; so tagged, it is marked
    failed once its creator is gone (``workers.settle``). Worker and creator tags copied from a parent run
    (re-execution) are dropped: they name the parent's processes."""
    from dagster._core.instance.runs.run_domain import RunDomain

    from curation_pipeline.workers import CREATOR_TAG, WORKER_TAG, identity

    class CreatorTaggingRunDomain(RunDomain):
        def create_run(self, *, tags=None, status=None, **kwargs):
            # a re-execution copies its parent's tags: the parent's processes are not this run's
            tags = {k: v for k, v in (tags or {}).items() if k not in (CREATOR_TAG, WORKER_TAG)}
            # only a run no launcher can start (none from a code location: execute_in_process) is its creator's
            # to start; a daemon that died leaving one of its runs NOT_STARTED submits it again when it resumes
            if status in (None, DagsterRunStatus.NOT_STARTED) and kwargs.get("remote_job_origin") is None:
                tags[CREATOR_TAG] = identity()
            return super().create_run(tags=tags, status=status, **kwargs)

    return CreatorTaggingRunDomain


class CurationInstance(DagsterInstance):
    """A Dagster instance whose default storage is ``PooledSqliteStorage``, in the folder Dagster itself
    would use: ``DAGSTER_HOME``, a temporary home (``dagster dev`` without one), or ``from_config``'s, and
    whose default compute logs are ``ThreadMirroredComputeLogManager``'s. An explicit ``storage:`` or
    ``compute_logs:`` in dagster.yaml (Postgres, S3, say) still wins."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @property
    def run_domain(self):
        """Dagster's run domain, whose ``create_run`` every run's creation goes through (``execute_in_process``,
        the web UI, schedules, sensors), tagging a run with its creator (``_creator_tagging_run_domain``)."""
        return _creator_tagging_run_domain()(self)

    def handle_new_event(self, event, *, batch_metadata=None) -> None:
        """Also tags a run with the process that starts it (``workers``), so a run whose process is killed
        outright can be told from one still running."""
        if event.dagster_event is not None and event.dagster_event.event_type == DagsterEventType.RUN_START:
            from curation_pipeline.workers import WORKER_TAG, identity

            # before the run reads STARTED: never a moment when a started run names another process
            self.add_run_tags(event.run_id, {WORKER_TAG: identity()})
        super().handle_new_event(event, batch_metadata=batch_metadata)

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__, PooledSqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        logs = defaults["compute_logs"]  # Dagster's folder and settings, mirrored without processes
        defaults["compute_logs"] = ConfigurableClassData(
            ThreadMirroredComputeLogManager.__module__, ThreadMirroredComputeLogManager.__name__, logs.config_yaml)
        return defaults
