"""Stage 2, scoring: every configured scorer's raw columns per pair ("score once, select later")."""


import json

import dagster as dg
import pandas as pd

from curation_pipeline import heap
from curation_pipeline.assets.ingest import pairs
from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.io import FILE_METADATA, RAW_SHA_KEY
from curation_pipeline.assets.made_of import output_provenance, scoring_made_of
from curation_pipeline.assets.metadata import numbers
from curation_pipeline.checks.quality import SCORES_CHECKS, checked_table, scores_checks, table_out
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.reporting.charts import histogram_png, markdown_image
from curation_pipeline.resources import ComputeResource, PolicyResource, ScoringResource, WarehouseResource
from curation_pipeline.scoring.run import Faults, decode_mode, raised_on, score_stream, unscored
from curation_pipeline.shards.reader import iter_pair_batches


@dg.multi_asset(
    name="quality_scores", partitions_def=shard_partitions, can_subset=True, deps=[pairs],
    check_specs=SCORES_CHECKS,
    outs={"quality_scores": table_out(
        "scoring", "2",  # code version: bump when the same inputs give different output (2: the shard is
        # read as pairs reads it since its version 2; models see the authors' decode; scores_complete)
        "Per-pair quality scores from the active scoring profile (DataComp rules, caption text quality, NSFW, "
        "OCR text area, image quality, duplicate hashes, and CLIPScore / MLM-Filter metrics in model profiles). "
        "Stored raw with each scorer's name and version, so thresholds can change without re-running models.",
        kinds=("parquet", "pytorch"))},
)
def quality_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                   scoring: ScoringResource, policy: PolicyResource, compute: ComputeResource):
    # its check alone reads the stored scores: no model runs
    yield from checked_table(context, warehouse, "quality_scores",
                             lambda: _score(context, warehouse, scoring, policy, compute),
                             lambda scores: scores_checks(scores, policy),
                             # the scorers this run's config picked, where they are not the code location's
                             lambda: output_provenance(context, scoring_made_of(scoring), "scoring"))


def _score(context: dg.AssetExecutionContext, warehouse: WarehouseResource, scoring: ScoringResource,
           policy: PolicyResource, compute: ComputeResource) -> tuple[pd.DataFrame, dict]:
    shard = context.partition_key
    expected = raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    ray_stats, faults = {}, Faults()  # what the models raised (on Ray, the actors return theirs)
    if compute.uses_ray:  # decode + score as Ray Data streaming on the cluster; the same rows as below
        from curation_pipeline.compute.ray_data import score_shard

        # the scorers as the cluster built them: name, version and the columns each instance writes (a
        # model scorer's name and columns are its instance's, not its class's)
        scores, scorers, stats = score_shard(warehouse.raw_url(shard), shard, scoring.as_profile(),
                                             compute.options("score", warehouse.batch_size), expected=expected,
                                             faults=faults, warn=context.log.warning)
        versions = {s.name: s.version for s in scorers}
        ray_stats = stats.metadata()
        context.log.info(f"{shard}: scored {stats.pairs} pairs in {stats.batches} batches on {len(stats.nodes)} "
                         f"Ray node(s), {len(stats.workers)} model actor(s)")
    else:
        scorers = scoring.scorers()
        batches = iter_pair_batches(warehouse.raw_url(shard), shard, batch_size=warehouse.batch_size,
                                    expected=expected, decode=decode_mode(scorers))
        for caveat in (c for s in scorers for c in s.caveats):
            context.log.warning(f"{shard}: {caveat}")
        scores = score_stream(scorers, batches, prefetch_depth=scoring.prefetch, faults=faults)
        versions = {s.name: s.version for s in scorers}
        if len(scores):  # the scorers' lazy models are loaded by now (an empty shard loads none), for good
            heap.freeze(heap.MODELS)
    # which scorer versions wrote these rows, from which raw file
    scores.attrs[FILE_METADATA] = {"scorers": json.dumps(versions), RAW_SHA_KEY: expected.sha256}
    quality = scores.get(policy.quality_column)
    meta = {}
    for column in scores.columns:
        if column in ("width", "height") or scores[column].dtype.kind not in "fi":
            continue
        values = scores[column].astype(float)
        if values.notna().any():
            meta[f"mean_{column}"] = float(values.mean())
    errors = unscored(scores, scorers)  # from each scorer's declared error columns
    raised = raised_on(scores, scorers)  # of those, the pairs it raised on (the scores_complete check)
    for r in raised.values():
        trace = faults.sole_traceback(r.scorer)
        if trace and r.pairs == r.attempted:  # one exception on every pair: its traceback once, not per pair
            context.log.error(f"{shard}: {r.scorer} raised on all {r.pairs} pairs it attempted (most often "
                              f"{r.reason}); the first traceback:\n{trace}")
    charts = ""
    if quality is not None and len(scores):
        charts = markdown_image(histogram_png({policy.quality_column: quality.to_numpy(dtype=float)},
                                              f"{policy.quality_column} — {shard}", policy.quality_column),
                                policy.quality_column)
    return scores, {
        **numbers({"pairs": len(scores), **meta}),
        **numbers({f"missing_{k}": v for k, v in errors.items()}),
        **numbers({f"raised_{k}": r.pairs for k, r in raised.items()}),
        **numbers({"unknown_quality_share": float(quality.isna().mean()) if quality is not None and len(scores) else None}),
        **numbers(ray_stats),
        "compute": dg.MetadataValue.text(compute.engine),
        "compute_settings": dg.MetadataValue.json(compute.resolved("score", warehouse.batch_size)),
        "scorers": dg.MetadataValue.json(versions),
        "quality_histogram": dg.MetadataValue.md(charts or "_no scores_"),
    }
