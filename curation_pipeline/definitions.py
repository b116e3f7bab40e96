"""Wires assets (with their checks: ``checks/quality.py``), jobs, sensors, schedules and resources into one
code location."""


import os

import dagster as dg

from curation_pipeline.assets.curation import curated_shards
from curation_pipeline.assets.decisions import caption_decisions
from curation_pipeline.assets.dedup import dedup_index, dedup_index_job, dedup_settle_sensor
from curation_pipeline.assets.evaluation import EVALUATION_ASSETS
from curation_pipeline.assets.ingest import pairs, raw_shards
from curation_pipeline.assets.io import warehouse_io_manager
from curation_pipeline.assets.reference import caption_length_reference
from curation_pipeline.assets.reporting import quality_report
from curation_pipeline.assets.rewriting import final_captions, rewritten_captions
from curation_pipeline.assets.scoring import quality_scores
from curation_pipeline.assets.selection import selection_cut, selection_cut_job
from curation_pipeline.automation import (curate_shards_job, fill_missing_shards, new_shards_sensor, observe_raw_job,
                                          observe_raw_shards_schedule, prune_shards, register_shards, report_automation,
                                          report_job, reselect_shards_job)
from curation_pipeline.console import console_logger
from curation_pipeline.assets.made_of import rewriter_made_of, scoring_made_of
from curation_pipeline.resources import (RESOURCE_CLASSES, SETTINGS_FILE_ENV, WAREHOUSE_DEFAULTS, ComputeResource,
                                         PolicyResource, RewriterResource, ScoringResource, WarehouseResource,
                                         location_resources)

ASSETS = [raw_shards, pairs, caption_length_reference, quality_scores, selection_cut, dedup_index, caption_decisions,
          rewritten_captions, final_captions, curated_shards, quality_report]


def _setting(env: str, default: str):
    """An environment variable as Dagster reads it (dg.EnvVar: at run start, shown as such in the UI), or
    a default; relative paths resolve against the working directory when a run starts, not at import."""
    return dg.EnvVar(env) if os.environ.get(env) else default


def build_resources(raw_root: str | None = None, warehouse_root: str | None = None, **overrides) -> dict:
    """Resources from environment defaults, and the settings file ``CURATION_SETTINGS`` names (the code location's
    profile, models, policy and compute: what the UI's, the schedules' and the sensors' runs use); tests and the
    CLI pass explicit roots and overrides."""
    warehouse = overrides.get("warehouse") or WarehouseResource(
        raw_root=raw_root or _setting(*WAREHOUSE_DEFAULTS["raw_root"]),
        root=warehouse_root or _setting(*WAREHOUSE_DEFAULTS["root"]))
    path = os.environ.get(SETTINGS_FILE_ENV)
    located = location_resources(path) if path and not all(overrides.get(k) for k in RESOURCE_CLASSES) else {}
    return {
        "warehouse": warehouse,
        "io_manager": warehouse_io_manager,  # per-shard tables between assets, in the run's warehouse
        "scoring": overrides.get("scoring") or located.get("scoring") or ScoringResource(),
        "rewriter": overrides.get("rewriter") or located.get("rewriter") or RewriterResource(),
        "policy": overrides.get("policy") or located.get("policy") or PolicyResource(),
        # where decoding, scoring and rewriting run: this process (local) or a Ray cluster (README "Scaling out");
        # every setting left empty is read from the environment of the run's process (resources.COMPUTE_SETTINGS)
        "compute": overrides.get("compute") or located.get("compute") or ComputeResource(),
    }


# One executor for every path (job page, backfills, "Materialize all"): a shard's steps share its run's process
# (a process per step costs seconds each); shards run in parallel as runs, up to dagster.yaml's run queue limit.
EXECUTOR = dg.in_process_executor


def with_code_it_runs(asset: dg.AssetsDefinition, made: str) -> dg.AssetsDefinition:
    """``asset`` whose code version also names the version of each piece of code it runs in this code location
    (quality_scores: its profile's scorers; rewritten_captions: its rewriter), e.g. ``2+datacomp.3,nsfw.1``, and
    a digest of the settings that choose what that code writes (a model, its prompt or precision:
    ``output_settings``), e.g. ``2+datacomp.3,...,clip.4@fbad86319676``: a scorer's or rewriter's new version, or
    another model, marks the partitions made before stale, as a bump of the asset's own does (a run under other
    scorers or models, set in its run config, records its own: ``assets.made_of.output_provenance``)."""
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}+{made}"))


def versioned_assets(resources: dict) -> list[dg.AssetsDefinition]:
    made = {quality_scores.key: scoring_made_of(resources["scoring"]),
            rewritten_captions.key: rewriter_made_of(resources["rewriter"])}
    return [with_code_it_runs(asset, made[asset.key]) if made.get(asset.key) else asset for asset in ASSETS]


def build_definitions(**kwargs) -> dg.Definitions:
    resources = build_resources(**kwargs)
    return dg.Definitions(
        executor=EXECUTOR,
        assets=[*versioned_assets(resources), *EVALUATION_ASSETS],
        jobs=[curate_shards_job, reselect_shards_job, report_job, observe_raw_job, register_shards, prune_shards,
              dedup_index_job, selection_cut_job],
        sensors=[new_shards_sensor, report_automation, dedup_settle_sensor],
        schedules=[observe_raw_shards_schedule, fill_missing_shards],
        resources=resources,
        loggers={"console": console_logger},  # Dagster's, without an interrupted step's stack
    )


def __getattr__(name: str):
    """``defs``, the code location's definitions (what the UI and the daemon load from this module), built
    on first use: ``curate run`` imports ``build_definitions`` and builds its own from its settings, so a bad
    ``CURATION_*`` variable its ``--set`` overrides must not fail the import first."""
    if name == "defs":
        built = globals()["defs"] = build_definitions()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "defs"})  # Dagster finds the definitions by listing the module
