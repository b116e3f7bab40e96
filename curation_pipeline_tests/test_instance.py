"""The shipped instance storage: Dagster's SQLite files and tables, with engines kept between queries."""

import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.instance.ref import InstanceRef

from curation_pipeline.instance import Engines, PooledSqliteEventLogStorage, PooledSqliteRunStorage
from curation_pipeline_tests.conftest import REPO_ROOT

shards = dg.DynamicPartitionsDefinition(name="shards")


@dg.asset(partitions_def=shards)
def table(context) -> int:
    return len(context.partition_key)


@dg.asset_check(asset=table, partitions_def=shards)
def table_is_small(context) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


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
        connections.clear()
        materialize(instance, ["a", "b", "c"])
    # Dagster's own storage opens the runs' and the index database about 100 times here; each run's own
    # database is still opened for each use (the web server's live view watches that file change)
    opened = Counter(connections)
    assert opened["runs.db"] <= 1 and opened["index.db"] <= 1, opened
    runs = {name: count for name, count in opened.items() if name not in ("runs.db", "index.db")}
    assert len(runs) == 3 and min(runs.values()) > 3, opened

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
