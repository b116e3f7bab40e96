"""A run whose run config picks other scorers than the code location's records what it was made with: Dagster
records the definition's code version whatever a run's config says, so a launchpad run with the text profile
recorded the offline profile's scorers, and the shard read up to date; the location's schedule never scored it
with NSFW, OCR, image quality or duplicates."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus

from curation_pipeline.assets.made_of import CODE_VERSION_TAG, scoring_made_of
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import ScoringResource
from curation_pipeline.staleness import asset_graph_view
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

SHARD = "sample-000001"
SCORES, DECISIONS = dg.AssetKey("quality_scores"), dg.AssetKey("caption_decisions")


def _latest(instance, key):
    return instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[SHARD]),
                                           limit=1).records[0].asset_materialization.tags


def _status(instance, defs, key):
    graph = defs.get_repository_def().asset_graph
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph,
                                          loading_context=asset_graph_view(instance, graph))
    return resolver.get_status(key, SHARD), [c.reason for c in resolver.get_stale_causes(key, SHARD)]


def test_a_run_with_other_scorers_in_its_run_config_records_them_and_reads_stale(tmp_path):
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path / "wh"))  # the offline profile
    location = defs.get_repository_def().asset_graph.get(SCORES).code_version
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    job = defs.resolve_job_def("curate_shards")

    text = {**QUIET, "resources": {"scoring": {"config": {"profile": "text"}}}}
    assert job.execute_in_process(partition_key=SHARD, instance=instance, run_config=text).success
    made = _latest(instance, SCORES)
    assert made[CODE_VERSION_TAG] == "2+" + scoring_made_of(ScoringResource(profile="text")) != location
    status, causes = _status(instance, defs, SCORES)
    assert status == StaleStatus.STALE and any("code version" in c for c in causes), causes

    assert job.execute_in_process(partition_key=SHARD, instance=instance, run_config=QUIET).success
    again = _latest(instance, SCORES)
    assert again[CODE_VERSION_TAG] == location and "dagster/data_version_is_user_provided" not in again
    assert again["dagster/data_version"] != made["dagster/data_version"]  # the steps after it read it as new
    assert _status(instance, defs, SCORES)[0] == StaleStatus.FRESH
    assert _status(instance, defs, DECISIONS)[0] == StaleStatus.FRESH


def test_a_run_with_another_rewriter_in_its_run_config_records_it(tmp_path):
    from curation_pipeline.assets.made_of import rewriter_made_of
    from curation_pipeline.resources import RewriterResource
    from curation_pipeline_tests.tiny_models import make_tiny_llava

    rewrites = dg.AssetKey("rewritten_captions")
    vlm = str(make_tiny_llava(tmp_path / "vlm"))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"))  # the cleaner
    location = defs.get_repository_def().asset_graph.get(rewrites).code_version
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    settings = {"kind": "vlm", "model": vlm, "max_new_tokens": 8}
    defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=SHARD, instance=instance, raise_on_error=False,  # a random model's rewrites may fail a check
        run_config={**QUIET, "resources": {"rewriter": {"config": settings}}})
    own = location.split("+")[0]
    assert _latest(instance, rewrites)[CODE_VERSION_TAG] == f"{own}+" + rewriter_made_of(RewriterResource(**settings))
    assert _status(instance, defs, rewrites)[0] == StaleStatus.STALE
    assert _status(instance, defs, SCORES)[0] == StaleStatus.FRESH  # its scorers are the location's
