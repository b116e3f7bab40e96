"""Stage 3, decisions: keep / rewrite / drop per pair, re-selected cheaply from stored scores."""


import dagster as dg

from curation_pipeline.assets.dedup import dedup_index
from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.metadata import counts_markdown, numbers, table, table_metadata
from curation_pipeline.assets.scoring import quality_scores
from curation_pipeline.assets.selection import selection_cut
from curation_pipeline.decisions.cut_store import CutUnavailable, cut_for_shard
from curation_pipeline.decisions.dedup import DIGEST_KEY, mark_duplicates
from curation_pipeline.decisions.policy import decide, in_top_fraction
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import PolicyResource, WarehouseResource


@dg.asset(
    partitions_def=shard_partitions,
    group_name="decisions",
    deps=[quality_scores, selection_cut, dedup_index],
    kinds={"parquet"},
    description="Keep, rewrite or drop for every pair, with the reason naming the signal (AITQE: rewrite "
    "weak captions of usable images instead of dropping them). Duplicate groups are resolved over the whole "
    "pool (the dedup_index; computed on the spot if it is stale), keeping the largest usable copy, whatever "
    "the order of shard runs. With keep_fraction on, applies the global cut stored by "
    "selection_cut (materialize that first). No model runs: change thresholds and re-materialize.",
)
def caption_decisions(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                      policy: PolicyResource) -> dg.MaterializeResult:
    shard = context.partition_key
    wh = warehouse.warehouse()
    raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    scores = wh.read_table("quality_scores", shard)
    rules = policy.decision_policy()
    cut = None
    if rules.keep_fraction is not None:
        try:
            cut = cut_for_shard(wh, rules.keep_fraction, rules.quality_column, shard, scores)
        except CutUnavailable as exc:
            raise dg.Failure(description=str(exc)) from exc
    scores, dedup = mark_duplicates(scores, wh, shard, rules)  # over the whole pool, order-free
    decisions = decide(scores, rules, cut=cut)
    for column in ("dup_group", "dup_kind", "dup_of"):
        if column in scores:
            decisions[column] = scores[column].to_numpy()
    if dedup is not None:
        context.log.info(f"{shard}: duplicate groups from {dedup.source}")
    path = wh.write_table("caption_decisions", shard, decisions,
                          metadata={DIGEST_KEY: dedup.digest} if dedup is not None else None)
    actions = decisions["action"].value_counts()
    drops = decisions.loc[decisions["action"].eq("drop"), "reason"].str.split(" ").str[0].value_counts()
    n = max(len(decisions), 1)
    return dg.MaterializeResult(metadata={
        **table_metadata("caption_decisions", decisions),
        **numbers({
            "pairs": len(decisions),
            "keep": int(actions.get("keep", 0)),
            "rewrite": int(actions.get("rewrite", 0)),
            "drop": int(actions.get("drop", 0)),
            "rewrite_share": float(actions.get("rewrite", 0) / n),
            "drop_share": float(actions.get("drop", 0) / n),
            "nsfw_review": int(decisions["nsfw_review"].sum()),
        }),
        **({} if cut is None else numbers({
            "in_keep_fraction": int(in_top_fraction(scores, rules, cut).sum()),  # inside the global cut
            "keep_fraction": cut.fraction,
            "keep_fraction_cut_score": cut.cut_score,
            "keep_fraction_pool_scored": cut.scored,
            "keep_fraction_pool_kept": cut.kept,
        })),
        **({} if dedup is None else {
            **numbers({"duplicates_dropped": int((~scores["dup_keep"].astype(bool)).sum()),
                       "in_duplicate_groups": int(scores["dup_kind"].notna().sum())}),
            "dedup_source": dg.MetadataValue.text(dedup.source)}),
        "drop_reasons": dg.MetadataValue.md(counts_markdown(drops, "Drop reasons")),
        "decisions_preview": table(decisions[["key", "action", "reason", "quality_before"]]),
        "path": dg.MetadataValue.path(path),
    })
