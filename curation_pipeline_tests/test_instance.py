"""The shipped instance storage: Dagster's SQLite files and tables, with engines kept between queries."""

import logging
import os
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from curation_pipeline.instance import (
    Engines,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
    new_run_database,
)

shards = dg.DynamicPartitionsDefinition(name="shards")


@dg.asset(partitions_def=shards)
def table(context) -> int:
    return len(context.partition_key)


@dg.asset_check(asset=table, partitions_def=shards)
def table_is_small(context) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@pytest.fixture
def home(shipped_home):
    return shipped_home


@pytest.fixture
def connections():
    """The database file of every SQLite connection opened (a file open) from here on."""
    opened = []

    def listener(dbapi_connection, record):
        opened.append(Path(dbapi_connection.execute("PRAGMA database_list").fetchone()[2]).name)

    db.event.listen(db.pool.Pool, "connect", listener)
    yield opened
    db.event.remove(db.pool.Pool, "connect", listener)


def materialize(instance, keys):
    instance.add_dynamic_partitions("shards", keys)
    for key in keys:
        result = dg.materialize([table, table_is_small], instance=instance, partition_key=key)
        assert result.success


def test_shipped_settings_pool_the_engines_and_plain_dagster_reads_the_same_files(home, connections):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        new_run_database()  # built once per process
        connections.clear()
        materialize(instance, ["a", "b", "c"])
    # Dagster's own storage opens the runs' and the index database about 100 times here, and each run's
    # own database once per event; plain Dagster below opens the copies of the empty run database
    opened = Counter(connections)
    assert opened["runs.db"] <= 1 and opened["index.db"] <= 1, opened
    runs = {name: count for name, count in opened.items() if name not in ("runs.db", "index.db")}
    assert len(runs) == 3 and max(runs.values()) == 1, opened

    plain = home.parent / "plain"
    plain.mkdir()
    (plain / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(plain))) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert len(instance.get_runs()) == 3
        event = instance.get_latest_materialization_event(dg.AssetKey("table"))
        assert event.dagster_event.partition == "c"
        assert instance.get_materialized_partitions(dg.AssetKey("table")) == {"a", "b", "c"}
        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("table"), "table_is_small"), limit=10)
        assert len(checks) == 3
        materialize(instance, ["d"])  # and the other way round
    with dg.DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("table")) == {"a", "b", "c", "d"}


def _plain(home: Path) -> Path:
    """Settings for a plain Dagster instance on the same storage folder."""
    plain = home.parent / "plain"
    plain.mkdir(exist_ok=True)
    (plain / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return plain


def _entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(error_info=None, level=logging.INFO, user_message=message, run_id=run_id,
                         timestamp=time.time())


def test_the_live_run_view_of_plain_dagster_sees_each_event_as_it_is_written(home):
    """Dagster's web server follows a run by watching the run database's file (not its WAL) change."""
    plain = _plain(home)
    seen: list[str] = []

    def entry(message: str) -> EventLogEntry:
        return _entry("live", message)

    def wait_for(messages: list[str]) -> None:
        deadline = time.monotonic() + 60
        while seen != messages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == messages

    with (dg.DagsterInstance.get() as writer,
          dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(plain))) as viewer):
        assert isinstance(writer.event_log_storage, PooledSqliteEventLogStorage)
        writer.event_log_storage.store_event(entry("first"))
        viewer.event_log_storage.watch("live", None, lambda event, cursor: seen.append(event.user_message))
        try:
            writer.event_log_storage.store_event(entry("second"))
            wait_for(["first", "second"])  # the watcher reads from the start once the file changes
            writer.event_log_storage.store_event(entry("third"))
            wait_for(["first", "second", "third"])
        finally:
            viewer.event_log_storage.dispose()


def test_a_run_database_made_meanwhile_by_another_process_is_kept(home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        path = Path(storage.path_for_shard("other"))
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(_plain(home)))) as other:
            other.event_log_storage.store_event(_entry("other", "theirs"))
        # as if the other process made it between this one's look and its link
        storage._initialized_dbs.discard("other")
        real_exists = Path.exists
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Path, "exists", lambda self: False if self == path else real_exists(self))
            storage.store_event(_entry("other", "ours"))
        assert [e.user_message for e in storage.get_logs_for_run("other")] == ["theirs", "ours"]
        assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_wipe_releases_the_run_databases_and_runs_go_on(home):
    with dg.DagsterInstance.get() as instance:
        materialize(instance, ["a"])
        run_files = [p for p in (home / "history" / "runs").glob("*.db") if p.stem != "index"]
        assert len(run_files) == 1
        instance.wipe()
        assert not run_files[0].exists() and instance.get_runs() == []
        materialize(instance, ["b"])
        assert len(instance.get_runs()) == 1
        assert instance.get_materialized_partitions(dg.AssetKey("table")) == {"b"}


def test_engines_keep_the_most_recent_and_rebuild_after_a_fork(tmp_path, monkeypatch):
    engines = Engines(keep=2)
    urls = [f"sqlite:///{tmp_path / name}.db" for name in "abc"]
    first = engines.get(urls[0])
    assert engines.get(urls[0]) is first
    second = engines.get(urls[1])
    engines.get(urls[0])  # a is the most recent again: b goes when c comes
    engines.get(urls[2])
    assert engines.get(urls[0]) is first and engines.get(urls[1]) is not second

    monkeypatch.setattr("os.getpid", lambda: -1)  # as a forked child sees it
    assert engines.get(urls[0]) is not first


def test_every_home_dagster_would_use_gets_the_pooled_storage_unless_dagster_yaml_names_one(home, tmp_path,
                                                                                           monkeypatch):
    # a home opened by path, with no DAGSTER_HOME (as tests, notebooks and `dagster dev`'s temporary home do)
    monkeypatch.delenv("DAGSTER_HOME")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        materialize(instance, ["a"])
        ref = instance.get_ref()  # what dagster dev hands its web server, daemon and run workers
    assert (home / "history" / "runs.db").is_file() and len(list((home / "history" / "runs").glob("*.db"))) == 2
    with dg.DagsterInstance.from_ref(ref) as instance:
        assert isinstance(instance.run_storage, PooledSqliteRunStorage) and len(instance.get_runs()) == 1

    other = tmp_path / "other"
    (home / "dagster.yaml").write_text((home / "dagster.yaml").read_text() + f"storage:\n  sqlite:\n    base_dir: {other}\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        materialize(instance, ["b"])
    assert (other / "history" / "runs.db").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_a_new_run_database_has_the_mode_dagster_gives_it(tmp_path, umask):
    """A copied run database gets the mode SQLite gives Dagster's own (0644 less the umask, not
    mkstemp's 0600): the web server or daemon running as another user must be able to read it."""
    previous = os.umask(umask)
    try:
        modes = {}
        for cls in (SqliteEventLogStorage, PooledSqliteEventLogStorage):
            storage = cls(str(tmp_path / cls.__name__))
            try:
                storage.store_event(_entry("0123abcd-run", "hello"))
            finally:
                storage.dispose()
            modes[cls.__name__] = (tmp_path / cls.__name__ / "0123abcd-run.db").stat().st_mode & 0o777
    finally:
        os.umask(previous)
    assert modes["PooledSqliteEventLogStorage"] == modes["SqliteEventLogStorage"], {k: oct(v) for k, v in modes.items()}


def test_pooled_connections_commit_without_waiting_for_the_disk(home):
    """WAL with synchronous=NORMAL on every pooled connection: a run's ~470 commits per shard no longer
    each wait for an fdatasync (SQLite's default, FULL, is 2); the journal stays WAL."""
    with dg.DagsterInstance.get() as instance:
        materialize(instance, ["a"])
        storages = [instance.event_log_storage._engines, instance.event_log_storage._run_engines,
                    instance.run_storage._engines]
        engines = [engine for pool in storages for engine in pool._engines.values()]
        assert len(engines) >= 3  # the index, the run's own database, runs.db
        for engine in engines:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1, engine.url
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal", engine.url


def test_has_dynamic_partition_answers_as_dagster_with_one_plain_statement(home):
    """Asked ~50 times per shard's steps: the pooled storage runs one plain SQL statement (Dagster built and
    compiled a SQLAlchemy select each time) and answers as Dagster's own storage does on the same files."""
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("shards", ["a", "b"])
        instance.add_dynamic_partitions("other", ["c"])
        instance.delete_dynamic_partition("shards", "b")
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        plain = SqliteEventLogStorage(storage._base_dir)  # Dagster's own, on the same files
        asked = [("shards", "a"), ("shards", "b"), ("shards", "c"), ("other", "c"), ("nope", "a")]
        engine = storage._engines.get(storage.conn_string_for_shard("index"))
        db.event.listen(engine, "before_cursor_execute", record)
        try:
            answers = [storage.has_dynamic_partition(name, key) for name, key in asked]
        finally:
            db.event.remove(engine, "before_cursor_execute", record)
        assert answers == [plain.has_dynamic_partition(name, key) for name, key in asked] == [
            True, False, False, True, False]
        assert [s for s in statements if "dynamic_partitions" in s] == [
            "SELECT 1 FROM dynamic_partitions WHERE partitions_def_name = ? AND partition = ? LIMIT 1"] * len(asked)


def test_a_run_database_write_signals_the_live_view_by_the_file_time_not_a_checkpoint(home):
    """The live view (watchdog on the run database's file) learns of each write from the file's new
    modification time; no write checkpoints the WAL (its two fsyncs cost 1-10 ms an event on a busy disk,
    several times the rest of storing it). The plain-Dagster viewer test above shows it still follows."""
    statements: list[str] = []

    def trace(dbapi_connection, record):
        dbapi_connection.set_trace_callback(statements.append)

    db.event.listen(db.pool.Pool, "connect", trace)
    try:
        with dg.DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            storage.store_event(_entry("touched", "first"))
            path = Path(storage.path_for_shard("touched"))
            old = path.stat().st_mtime_ns - 10**9
            os.utime(path, ns=(old, old))  # a second back: the next write's time must show
            storage.store_event(_entry("touched", "second"))
            assert path.stat().st_mtime_ns > old
            assert [e.user_message for e in storage.get_logs_for_run("touched")] == ["first", "second"]
    finally:
        db.event.remove(db.pool.Pool, "connect", trace)
    assert any("INSERT INTO event_logs" in s for s in statements)  # the trace saw the writes
    assert not [s for s in statements if "wal_checkpoint" in s.lower()]


def test_schema_and_migration_checks_are_asked_once_while_the_answers_stay(home):
    """Dagster checks the asset_keys columns and the completed data migrations before its asset queries
    (a PRAGMA table_info and a select each time, ~50 per shard's steps): a column or a completed
    migration stays, so the pooled storage asks once, and answers as Dagster's own storage does."""
    statements: list[str] = []

    def trace(dbapi_connection, record):
        dbapi_connection.set_trace_callback(statements.append)

    with dg.DagsterInstance.get() as instance:
        materialize(instance, ["a"])
        storage = instance.event_log_storage
        plain = SqliteEventLogStorage(storage._base_dir)
        db.event.listen(db.pool.Pool, "connect", trace)
        storage._engines.dispose()  # connections opened from here on are traced
        try:
            first = storage.get_asset_records([table.key])
            asked = len(statements)
            again = [storage.get_asset_records([table.key]) for _ in range(3)]
        finally:
            db.event.remove(db.pool.Pool, "connect", trace)
        assert [r.asset_entry for r in again[-1]] == [r.asset_entry for r in first] == [
            r.asset_entry for r in plain.get_asset_records([table.key])]
        later = statements[asked:]
        assert any("FROM asset_keys" in s for s in later)  # the queries themselves still run
        assert not [s for s in later if "table_info" in s.lower() or "secondary_indexes" in s]
        assert all(storage.has_secondary_index(name) == plain.has_secondary_index(name)
                   for name in ("asset_key_index_columns", "no such migration"))
        assert storage.has_asset_key_col("last_materialization_timestamp") and not storage.has_asset_key_col("nope")


def test_asset_records_decode_a_stored_materialization_once_and_answer_as_dagster(home):
    """Each asset step asks for its inputs' asset records (data-version provenance): the pooled storage decodes
    a stored latest materialization once, and answers as Dagster's own storage on the same files, for an asset
    only observed, one never seen, and one wiped (its pre-wipe materialization no longer the latest)."""
    from dagster._serdes import serialize_value

    keys = [dg.AssetKey("table"), dg.AssetKey("seen"), dg.AssetKey("missing")]

    def latest(storage) -> dict[str, str | None]:
        return {record.asset_entry.asset_key.to_user_string(): (
            serialize_value(record.asset_entry.last_materialization_record)
            if record.asset_entry.last_materialization_record else None)
            for record in storage.get_asset_records(keys)}

    with dg.DagsterInstance.get() as instance:
        materialize(instance, ["a", "b"])
        instance.report_runless_asset_event(dg.AssetObservation("seen"))
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        plain = SqliteEventLogStorage(storage._base_dir)
        found = latest(storage)
        assert found == latest(plain) and set(found) == {"table", "seen"} and found["seen"] is None
        record = storage.get_asset_records(keys[:1])[0].asset_entry.last_materialization_record
        assert record.partition_key == "b"
        assert storage.get_asset_records(keys[:1])[0].asset_entry.last_materialization_record is record

        time.sleep(0.01)  # the wipe's time after the materializations'
        instance.wipe_assets([keys[0]])
        # a run that began before the wipe stores its materialization after it (the row holds a record older
        # than the wipe), and an observation makes the row seen again: Dagster's own storage passes the record over
        with storage.index_connection() as conn:
            conn.exec_driver_sql("UPDATE asset_keys SET last_materialization = ? WHERE asset_key = ?",
                                 (serialize_value(record), keys[0].to_string()))
        instance.report_runless_asset_event(dg.AssetObservation("table"))
        assert latest(storage) == latest(plain) and latest(storage)["table"] is None
        materialize(instance, ["c"])
        found = latest(storage)
        assert found == latest(plain) and storage.get_asset_records(keys[:1])[0].asset_entry.last_materialization_record \
            .partition_key == "c"


def test_the_run_queue_starts_one_run_per_shard_at_a_time(home):
    """A UI backfill queued beside the schedule's run of the same shard was dequeued with it: the shard was scored
    twice and the later writer failed. The shipped queue holds it until the first run ends; other shards go on."""
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    origin = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("curation"), "__repository__")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        for job, shard in (("curate_shards", "s1"), ("__ASSET_JOB", "s1"), ("curate_shards", "s2")):
            create_run_for_test(instance, job_name=job, remote_job_origin=origin.get_job_origin(job),
                                status=dg.DagsterRunStatus.QUEUED, tags={"dagster/partition": shard})
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        picked = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
    assert sorted(run.tags["dagster/partition"] for run in picked) == ["s1", "s2"]
