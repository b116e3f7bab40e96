"""Checks on each stage's table; the drift check blocks curated shards from being written."""


import dagster as dg
import pandas as pd

from curation_pipeline.assets.ingest import pairs
from curation_pipeline.assets.metadata import numbers
from curation_pipeline.assets.rewriting import final_captions
from curation_pipeline.assets.scoring import quality_scores
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import PolicyResource, WarehouseResource
from curation_pipeline.scoring.registry import score_ranges
from curation_pipeline.shards.reader import RECORD_COLUMNS
from curation_pipeline.validation.drift import check_caption_length_drift
from curation_pipeline.validation.tables import check_table


def _table_check_result(result, description: str, check_name: str | None = None) -> dg.AssetCheckResult:
    meta = result.to_metadata()
    return dg.AssetCheckResult(
        check_name=check_name, passed=bool(result.passed), severity=dg.AssetCheckSeverity.ERROR,
        description=description if result.passed else "; ".join(result.failures)[:1000],
        metadata={**numbers({k: v for k, v in meta.items() if not isinstance(v, str)}),
                  **{k: dg.MetadataValue.text(v) for k, v in meta.items() if isinstance(v, str)}})


@dg.asset_check(asset=pairs, blocking=True, partitions_def=shard_partitions, description="Inventory schema: every column present, keys unique and non-null.")
def pairs_schema(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    df = warehouse.warehouse().read_table("pairs", context.partition_key)
    result = check_table(df, required_columns=RECORD_COLUMNS, non_null=["key", "decode_status"], unique=["key"])
    return _table_check_result(result, f"{len(df)} rows, schema and keys ok")


@dg.asset_check(asset=quality_scores, blocking=True, partitions_def=shard_partitions,
                description="Scores: keys unique, each scorer's columns within its range (NaN = unknown is allowed).")
def scores_in_range(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                    policy: PolicyResource) -> dg.AssetCheckResult:
    df = warehouse.warehouse().read_table("quality_scores", context.partition_key)
    result = check_table(df, required_columns=["shard", "key", policy.quality_column], non_null=["key"],
                         unique=["key"], ranges={c: r for c, r in score_ranges().items() if c in df.columns})
    return _table_check_result(result, f"{len(df)} rows within score ranges")


FINAL_CAPTION_CHECKS = [
    dg.AssetCheckSpec("final_captions_complete", asset=final_captions, blocking=True, partitions_def=shard_partitions,
                      description="Final captions: one row per pair, outcome and reason always set, kept pairs "
                      "have a caption."),
    dg.AssetCheckSpec("caption_length_drift", asset=final_captions, blocking=True, partitions_def=shard_partitions,
                      description="Great Expectations caption-length drift: the final captions of the kept pairs "
                      "against the same pairs' original captions (KL on open-tailed quantile bins, mean ratio, "
                      "quantile bands)."),
    dg.AssetCheckSpec("kept_share", asset=final_captions, blocking=False, partitions_def=shard_partitions,
                      description="Warns (never blocks) when a shard keeps nothing, or drops more than "
                      "policy.warn_drop_share of its pairs: a shard of pure duplicates or junk publishes an empty "
                      "or thin tar, which is legitimate but worth a look."),
]


@dg.multi_asset_check(specs=FINAL_CAPTION_CHECKS, can_subset=True,
                      description="The final captions' checks, in one step over one read of the table (each its "
                      "own result; any can run alone).")
def final_captions_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                          policy: PolicyResource):
    wh = warehouse.warehouse()
    df = wh.read_table("final_captions", context.partition_key)
    kept = df[df["outcome"].ne("dropped")]
    checks = {
        "final_captions_complete": lambda: final_captions_complete(df, kept, wh, context.partition_key),
        "caption_length_drift": lambda: caption_length_drift(kept, policy),  # same pairs before and after
        "kept_share": lambda: kept_share(df, kept, policy),
    }
    for key in context.selected_asset_check_keys:
        yield checks[key.name]()


def final_captions_complete(df: pd.DataFrame, kept: pd.DataFrame, wh, shard: str) -> dg.AssetCheckResult:
    n_pairs = len(wh.read_table("pairs", shard, columns=["key"]))
    result = check_table(df, required_columns=["key", "outcome", "reason", "final_caption"],
                         non_null=["key", "outcome", "reason"], unique=["key"])
    captionless = kept.loc[kept["final_caption"].isna(), "key"].tolist() if "final_caption" in kept else []
    if captionless:  # a shard may drop everything (all duplicates, say), but nothing kept may lack a caption
        result.passed = False
        result.failures.append(f"{len(captionless)} kept pairs without a final caption: {captionless[:5]}")
    if len(df) != n_pairs:
        result.passed = False
        result.failures.append(f"{len(df)} final rows for {n_pairs} pairs")
    return _table_check_result(result, f"{len(df)} pairs resolved, {len(kept)} kept with a caption",
                               "final_captions_complete")


def caption_length_drift(kept: pd.DataFrame, policy: PolicyResource) -> dg.AssetCheckResult:
    """Kept pairs only: dropping junk is the filter's doing, not drift from rewriting."""
    result = check_caption_length_drift(kept["original_caption"], kept["final_caption"], policy.drift_thresholds())
    meta = result.to_metadata()
    return dg.AssetCheckResult(
        check_name="caption_length_drift", passed=bool(result.passed), severity=dg.AssetCheckSeverity.ERROR,
        description=("; ".join(result.failures) if result.failures else
                     f"caption lengths stable: KL {result.kl:.3f}, mean ratio {result.mean_ratio:.2f}")[:1000],
        metadata={**numbers({k: v for k, v in meta.items() if not isinstance(v, (str, bool))}),
                  "drift_table": dg.MetadataValue.md(result.to_markdown())})


def kept_share(df: pd.DataFrame, kept: pd.DataFrame, policy: PolicyResource) -> dg.AssetCheckResult:
    n, n_kept = len(df), len(kept)
    dropped_share = (n - n_kept) / n if n else 0.0
    problems = []
    if n_kept == 0:
        problems.append(f"no pair kept out of {n}")
    elif dropped_share > policy.warn_drop_share:
        problems.append(f"{dropped_share:.0%} of {n} pairs dropped (warn above {policy.warn_drop_share:.0%})")
    return dg.AssetCheckResult(
        check_name="kept_share", passed=not problems, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) or f"{n_kept} of {n} pairs kept",
        metadata=numbers({"pairs": n, "kept": n_kept, "dropped_share": dropped_share}))


ALL_CHECKS = [pairs_schema, scores_in_range, final_captions_checks]
