"""What code a model asset's code version names (``quality_scores``: its profile's scorers; ``rewritten_captions``:
its rewriter), from the resources that run it: the code location's, when ``definitions`` versions the assets, and a
run's own.

Dagster records the definition's code version with every materialization, whatever the run's config: a run
launched with another profile or rewriter in its run config recorded versions it was not made with, and the
shard read up to date, never made again with the location's code. Such a run records its own
(``output_provenance``)."""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from curation_pipeline.resources import RewriterResource, ScoringResource
from curation_pipeline.rewriting.base import CODE_VERSIONS as REWRITER_VERSIONS
from curation_pipeline.scoring.registry import code_versions

CODE_VERSION_TAG = "dagster/code_version"  # Dagster's own tag of a materialization's code version


def made_of(runs: dict[str, str], settings: dict | None = None) -> str:
    """``datacomp.3,nsfw.1``, and a digest of the ``settings`` that choose what that code writes (a model, its
    prompt or precision: ``output_settings``): ``datacomp.3,...,clip.4@fbad86319676``."""
    made = ",".join(f"{name}.{version}" for name, version in runs.items())
    if settings:
        made += "@" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return made


def scoring_made_of(scoring) -> str | None:
    """None where the profile cannot say (a model profile without its model: its runs fail naming the setting)."""
    if not isinstance(scoring, ScoringResource):
        return None
    try:
        runs = code_versions(scoring.as_profile())
    except ValueError:
        return None
    try:
        settings = scoring.output_settings()
    except ValueError:  # as above
        settings = None
    return made_of(runs, settings)


def rewriter_made_of(rewriter) -> str | None:
    if not isinstance(rewriter, RewriterResource):
        return None
    return made_of({rewriter.kind: REWRITER_VERSIONS[rewriter.kind]}, rewriter.output_settings())


def output_provenance(context: dg.AssetExecutionContext, made: str | None, what: str) -> dict:
    """``dg.Output``'s provenance arguments for a run whose ``what`` (``scoring`` or ``rewriter``) settings, from
    its run config, are not the code location's: none where they are. Else the code version the output was made
    with (Dagster's ``dagster/code_version`` tag, which an output's tags override), so the shard reads stale
    against the location and its schedule makes it again with the location's code; and a data version of its own,
    so the steps after it read stale then too (Dagster's would be the location's, computed from the location's
    code version and the same inputs)."""
    version = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
    if "+" not in version or made is None:  # not versioned by its code (definitions built without resources)
        return {}
    base, location = version.split("+", 1)
    if made == location:
        return {}
    actual = f"{base}+{made}"
    context.log.warning(
        f"{context.partition_key}: this run's {what} settings are not the code location's: recorded as made with "
        f"code version {actual} (the location's: {version}); the shard reads stale to the location's "
        "fill_missing_shards schedule (and `curate run --only-missing` with its settings), which makes it again with "
        "the location's settings (set those where the code location is defined)")
    digest = hashlib.sha256(f"{actual}:{context.run_id}".encode()).hexdigest()
    return {"tags": {CODE_VERSION_TAG: actual}, "data_version": dg.DataVersion(digest)}
