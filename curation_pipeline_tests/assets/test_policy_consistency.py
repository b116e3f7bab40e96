"""A shard's steps after caption_decisions run under the policy its decisions were made under: re-run alone from
the UI under another one (a launchpad's `fallback: drop`), final_captions would resolve a duplicate group's kept
copy (action rewrite, rewrite rejected, original kept under keep_original) as dropped while the group's other
copies stay dropped for it, and nothing would say the shard is stale. Such a run fails, naming the settings."""

import shutil

import dagster as dg
import pytest

from curation_pipeline.assets.decisions import POLICY_CONFIG_KEY
from curation_pipeline.checks.quality import FINAL_CAPTION_CHECKS
from curation_pipeline.decisions.dedup import POLICY_KEY
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import ScoringResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, run_pipeline

SHARD = "sample-000001"
SCORING = ScoringResource(profile="text")  # no image model: the steps after scoring are what is tested
FINAL_ALONE = ("final_captions", "curated_shards")


@pytest.fixture
def decided(tmp_path):
    """The shard curated under the default policy: (definitions, instance, warehouse)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / f"{SHARD}.tar", raw / f"{SHARD}.tar")
    instance, results = run_pipeline(raw, tmp_path / "warehouse", [SHARD], report=False, settle=False,
                                     scoring=SCORING)
    assert results[SHARD].success
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "warehouse"), scoring=SCORING)
    return defs, instance, Warehouse(str(tmp_path / "warehouse"))


def run(defs, instance, assets=None, job="curate_shards", checks=None, **policy):
    """The shard's ``assets`` (all: None) or only ``checks`` in one run, with ``policy`` as its run config (the
    launchpad's ``resources: policy: config``)."""
    config = {**QUIET, **({"resources": {"policy": {"config": policy}}} if policy else {})}
    job_def = defs.resolve_job_def(job)
    if checks is not None:
        job_def = job_def.get_subset(asset_selection=set(), asset_check_selection=set(checks))
        assets = None
    return job_def.execute_in_process(
        partition_key=SHARD, instance=instance, raise_on_error=False, run_config=config,
        asset_selection=None if assets is None else [dg.AssetKey(a) for a in assets])


def failure(result) -> str:
    event = next(e for e in result.all_events if e.is_step_failure)
    return str(event.event_specific_data.error) + str(event.event_specific_data.user_failure_data)


def test_final_captions_alone_under_another_fallback_fails_naming_it(decided):
    defs, instance, wh = decided
    published, rows = wh.fs.cat(wh.curated_path(SHARD)), wh.read_table("final_captions", SHARD)
    metadata = wh.table_metadata("caption_decisions", SHARD)
    assert POLICY_KEY in metadata and '"fallback": "keep_original"' in metadata[POLICY_CONFIG_KEY]

    result = run(defs, instance, FINAL_ALONE, fallback="drop")
    assert not result.success
    message = failure(result)
    assert f"final_captions of shard {SHARD!r}" in message
    assert "fallback='keep_original' (this run: 'drop')" in message
    assert "Materialize caption_decisions (or the whole shard, or run reselect_shards) with this policy" in message
    assert wh.read_table("final_captions", SHARD).equals(rows)  # nothing resolved under the other rules
    assert wh.fs.cat(wh.curated_path(SHARD)) == published  # nor published


def test_rewritten_captions_alone_under_other_decision_rules_fails_but_not_under_other_acceptance(decided):
    defs, instance, wh = decided
    result = run(defs, instance, ("rewritten_captions",), keep_threshold=90.0)
    assert not result.success
    message = failure(result)
    assert f"rewritten_captions of shard {SHARD!r}" in message and "keep_threshold=" in message
    # acceptance is the rewrite's own rule (tuned by re-running it): no duplicate group's kept copy depends on it
    assert run(defs, instance, ("rewritten_captions", "final_captions", "curated_shards"),
               acceptance={"min_improvement": 30.0}).success


def test_same_policy_reruns_checks_alone_and_a_reselection_still_run(decided):
    defs, instance, wh = decided
    assert run(defs, instance, FINAL_ALONE).success  # the same policy: resolved again
    assert run(defs, instance, ("rewritten_captions", *FINAL_ALONE)).success
    # a setting no decision reads (the drift check's limits) is no other policy
    assert run(defs, instance, FINAL_ALONE, drift={"max_kl": 0.9}).success
    # a check run alone reads the stored table (no resolve): any policy's limits
    checked = run(defs, instance, checks=[spec.key for spec in FINAL_CAPTION_CHECKS], fallback="drop")
    assert checked.success and len(checked.get_asset_check_evaluations()) == len(FINAL_CAPTION_CHECKS)

    # a new policy through caption_decisions (reselect_shards: decisions -> ... -> tar) holds from there on
    assert run(defs, instance, job="reselect_shards", fallback="drop").success
    assert '"fallback": "drop"' in wh.table_metadata("caption_decisions", SHARD)[POLICY_CONFIG_KEY]
    assert run(defs, instance, FINAL_ALONE, fallback="drop").success
    back = run(defs, instance, FINAL_ALONE)  # now the default is the other policy
    assert not back.success and "fallback='drop' (this run: 'keep_original')" in failure(back)


def test_decisions_that_record_only_a_digest_are_compared_by_it(decided):
    """Decisions made before they recorded their config: the digest still tells another policy apart."""
    defs, instance, wh = decided
    wh.update_table_metadata("caption_decisions", SHARD, {POLICY_CONFIG_KEY: ""})
    assert run(defs, instance, FINAL_ALONE).success
    result = run(defs, instance, FINAL_ALONE, fallback="drop")
    assert not result.success and "policy_digest=" in failure(result)
