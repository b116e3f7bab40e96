"""Dagster's staleness of every shard, from a few queries per asset instead of several per shard.

Dagster's ``CachingStaleStatusResolver`` looks up each (asset, partition)'s latest record, and each
partitioned input's newer records, one query at a time: 13-17 ms a shard here, so a schedule tick over
DataComp medium's ~12,800 shards would take minutes, past the daemon's 60 s for a tick. This resolver
reads the latest storage id of every partition of the assets it is given (one query per asset and event
type), then their records without their metadata (a query per 500), and answers from those; whatever it
did not read (another asset, an observable asset's partition that was also materialized, an input with a
record after the cursor, a record that does not decode) goes to Dagster's own code, so the answers are
Dagster's. About 2 ms a shard (``benchmarks/refresh_plan.py``).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import dagster as dg
import sqlalchemy as db
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, DataProvenance
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.partitions.mapping import IdentityPartitionMapping
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._serdes import deserialize_value

RECORDS_PER_QUERY = 500  # storage ids per query: well under SQLite's bound variables


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while thousands of records are read and compared: each full collection
    walks the whole heap (the definitions' objects included), a quarter of the time of a plan over 1,000
    shards. Records and statuses are freed by reference counting, so little waits for the next one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _without_metadata(storage: SqlEventLogStorage, key: dg.AssetKey, storage_ids: list[int]
                      ) -> dict[int, dg.EventLogRecord]:
    """The asset's records of these storage ids, their metadata left out. Staleness reads a record's tags (data
    and code versions, the inputs' versions and event pointers), its run and its time, never its metadata:
    about 15 KB a shard table (schema, previews, charts), most of the time of decoding every shard's records
    and most of their memory. Where a record's layout is not the one expected, it is decoded whole; a record
    that cannot be decoded is left out (a partition without one here is asked of Dagster, which skips it)."""
    table = SqlEventLogStorageTable
    query = db_select([table.c.id, table.c.event]).where(
        db.and_(table.c.id.in_(storage_ids), table.c.asset_key == key.to_string()))
    with storage.index_connection() as conn:
        rows = conn.execute(query).fetchall()
    records = {}
    for storage_id, text in rows:
        try:
            tree = json.loads(text)
            data = (tree.get("dagster_event") or {}).get("event_specific_data") or {}
            for field in ("materialization", "asset_observation"):
                event = data.get(field)
                if isinstance(event, dict) and event.get("__class__") in ("AssetMaterialization", "AssetObservation"):
                    for name, empty in (("metadata_entries", []), ("metadata", {})):
                        if isinstance(event.get(name), type(empty)):
                            event[name] = empty
            entry = deserialize_value(json.dumps(tree), dg.EventLogEntry)
        except Exception:  # a row that does not parse: left out here, so Dagster's own read handles it (skips it)
            continue
        records[storage_id] = dg.EventLogRecord(storage_id=storage_id, event_log_entry=entry)
    return records


def asset_graph_view(instance: dg.DagsterInstance, asset_graph) -> AssetGraphView:
    """Dagster's view of the asset graph as of now, through which a staleness resolver loads."""
    return AssetGraphView(temporal_context=TemporalContext(effective_dt=datetime.now(timezone.utc), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)


class PrefetchedStaleStatusResolver(CachingStaleStatusResolver):
    def __init__(self, instance: dg.DagsterInstance, asset_graph, loading_context, assets: Iterable[dg.AssetKey]):
        super().__init__(instance=instance, asset_graph=asset_graph, loading_context=loading_context)
        # (asset, is_source) -> partition -> latest storage id: what get_latest_data_version_record reads
        self._latest_ids: dict[tuple[dg.AssetKey, bool], dict[str, int]] = {}
        # asset -> (partition -> the storage id of its latest record, those records by id, the partitions
        # left to Dagster): what the queryer's look-up of a partition's latest record finds
        self._latest: dict[dg.AssetKey, tuple[dict[str, int], dict[int, dg.EventLogRecord], set[str]]] = {}
        self._identity_inputs: dict[dg.AssetKey, list[tuple[dg.AssetKey, bool]] | None] = {}
        for key in assets:
            self._prefetch(key)

    def _prefetch(self, key: dg.AssetKey) -> None:
        node = self.asset_graph.get(key)
        if not node.is_partitioned:
            return
        storage = self._instance.event_log_storage
        materialized = dict(storage.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION))
        self._latest_ids[(key, False)] = materialized
        if node.is_external or node.is_observable:
            observed = dict(storage.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_OBSERVATION))
            self._latest_ids[(key, True)] = observed
        if node.is_observable:  # its latest observation, unless a materialization competes with it
            ids, undecided, fetch = observed, set(observed) & set(materialized), self._instance.fetch_observations
        else:
            record = self.instance_queryer.get_asset_record(key)
            # no asset record: the queryer finds nothing, whatever the partition
            ids = materialized if record and record.asset_entry.last_materialization_record else {}
            undecided, fetch = set(), self._instance.fetch_materializations
        found = sorted({i for p, i in ids.items() if p not in undecided})
        records = {}
        for start in range(0, len(found), RECORDS_PER_QUERY):
            chunk = found[start:start + RECORDS_PER_QUERY]
            records.update(_without_metadata(storage, key, chunk) if isinstance(storage, SqlEventLogStorage) else
                           {r.storage_id: r for r in fetch(dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk),
                                                           limit=len(chunk)).records})
        self._latest[key] = (ids, records, undecided)

    def latest_materializations(self, key: dg.AssetKey) -> tuple[dict[str, int], dict[int, dg.EventLogRecord]] | None:
        """A materialized asset's partition -> latest materialization's storage id, and those records by id, as
        read here (None: not read here)."""
        latest = self._latest.get(key)
        return None if latest is None or self.asset_graph.get(key).is_observable else latest[:2]

    def _get_latest_data_version_record(self, key: AssetKeyPartitionKey) -> dg.EventLogRecord | None:
        latest = self._latest.get(key.asset_key) if key.partition_key is not None else None
        if latest is not None:
            ids, records, undecided = latest
            if key.partition_key not in ids:
                return None
            if key.partition_key not in undecided and ids[key.partition_key] in records:
                return records[ids[key.partition_key]]
        return super()._get_latest_data_version_record(key=key)  # left to Dagster, or a record gone since

    def _get_partition_dependencies(self, *, key: AssetKeyPartitionKey) -> list[AssetKeyPartitionKey]:
        """A partition's inputs where each partitioned one is the same partition of the same partitions (the
        identity mapping: every shard asset's): Dagster's answer without building a partition subset per
        input and partition."""
        inputs = self._inputs(key.asset_key) if key.partition_key is not None else None
        if inputs is None:
            return super()._get_partition_dependencies(key=key)
        return [AssetKeyPartitionKey(parent, key.partition_key if partitioned else None)
                for parent, partitioned in inputs]

    def _inputs(self, child: dg.AssetKey) -> list[tuple[dg.AssetKey, bool]] | None:
        """The asset's inputs in Dagster's order, each with whether it is partitioned, when every one is
        unpartitioned or partitioned alike through the identity mapping (never the asset itself); else None."""
        if child not in self._identity_inputs:
            inputs = []
            for parent in self.asset_graph.get(child).parent_keys:
                node = self.asset_graph.get(parent)
                if parent == child or (node.is_partitioned and not (
                        node.partitions_def == self.asset_graph.get(child).partitions_def
                        and isinstance(self.asset_graph.get_partition_mapping(child, parent),
                                       IdentityPartitionMapping))):
                    inputs = None
                    break
                inputs.append((parent, node.is_partitioned))
            self._identity_inputs[child] = inputs
        return self._identity_inputs[child]

    def _is_dep_updated(self, provenance: DataProvenance, dep_key: AssetKeyPartitionKey) -> bool:
        if dep_key.partition_key is not None:
            latest = self._latest_ids.get((dep_key.asset_key, self.asset_graph.get(dep_key.asset_key).is_external))
            if latest is not None:
                newest, cursor = latest.get(dep_key.partition_key), provenance.input_storage_ids[dep_key.asset_key]
                if newest is None or (cursor and newest <= cursor):  # no record after the cursor
                    return False
        return super()._is_dep_updated(provenance, dep_key)
