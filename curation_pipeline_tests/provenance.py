"""Shards' Dagster events as runs record them, without running the pipeline: the raw file's observation,
then each shard asset's materialization with its data version, code version and input event pointers, so
Dagster's staleness reads them as it reads a run's (``test_staleness``, ``benchmarks/refresh_plan.py``)."""

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

from curation_pipeline.automation import RAW, SHARD_KEYS
from curation_pipeline.definitions import defs
from curation_pipeline.partitions import shard_partitions

GRAPH = defs.get_repository_def().asset_graph


class Home:
    """Shards' events as runs record them (data versions, code versions, the input event pointers)."""

    def __init__(self, instance: dg.DagsterInstance, metadata: dict | None = None):
        """``metadata``: what each materialization carries besides its tags (a run's: schema, counts, charts)."""
        self.instance, self.latest, self.made, self.metadata = instance, {}, 0, metadata or {}
        for key in GRAPH.materializable_asset_keys:  # the pool-wide tables the shard assets read
            if not GRAPH.get(key).is_partitioned and any(key in GRAPH.get(k).parent_keys for k in SHARD_KEYS):
                self.materialize(key)

    def _last(self, key, partition, observation):
        kind = dg.DagsterEventType.ASSET_OBSERVATION if observation else dg.DagsterEventType.ASSET_MATERIALIZATION
        if partition is None:
            return self.instance.fetch_materializations(key, limit=1).records[0].storage_id
        return self.instance.event_log_storage.get_latest_storage_id_by_partition(key, kind, {partition})[partition]

    def observe(self, shard, version):
        self.instance.report_runless_asset_event(dg.AssetObservation(RAW, partition=shard,
                                                                     tags={DATA_VERSION_TAG: version}))
        self.latest[(RAW, shard)] = (self._last(RAW, shard, True), version)

    def materialize(self, key, shard=None, code=None):
        node = GRAPH.get(key)
        self.made += 1
        tags = {DATA_VERSION_TAG: f"v{self.made}", CODE_VERSION_TAG: code or node.code_version}
        for parent in node.parent_keys:
            found = self.latest.get((parent, shard if GRAPH.get(parent).is_partitioned else None))
            if found:
                tags[get_input_data_version_tag(parent)] = found[1]
                tags[get_input_event_pointer_tag(parent)] = str(found[0])
        self.instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=shard, tags=tags,
                                                                         metadata=self.metadata))
        self.latest[(key, shard)] = (self._last(key, shard, False), tags[DATA_VERSION_TAG])

    def shard(self, shard, raw="r"):
        self.instance.add_dynamic_partitions(shard_partitions.name, [shard])
        self.observe(shard, f"{raw}-{shard}")
        for key in SHARD_KEYS:
            self.materialize(key, shard)
