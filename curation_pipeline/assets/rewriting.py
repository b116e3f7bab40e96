"""Stage 4, rewriting: weak captions of usable images are rewritten, verified, and resolved."""


import re
from typing import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from curation_pipeline.assets.decisions import caption_decisions
from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.metadata import PREVIEW_ROWS, numbers, table, table_metadata
from curation_pipeline.decisions.outcome import resolve_outcomes
from curation_pipeline.pairs import PairBatch
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.reporting.charts import histogram_png, markdown_image
from curation_pipeline.resources import (
    ComputeResource,
    PolicyResource,
    RewriterResource,
    ScoringResource,
    WarehouseResource,
)
from curation_pipeline.rewriting.attempts import empty_lineage, rewrite_batches
from curation_pipeline.scoring.run import score_batch
from curation_pipeline.shards.reader import iter_pair_batches

LINEAGE_PREVIEW = ["key", "accepted", "original_caption", "candidate_caption", "attempted_because", "reason",
                   "score_before", "score_after", "edit_ratio", "semantic_similarity", "rewriter", "run"]


def _needed_columns(policy: PolicyResource) -> set[str]:
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", policy.keep_expression or ""))
    return {policy.quality_column} | (names - {"and", "or", "not", "True", "False"})


def _target_batches(targets: pd.DataFrame, wh_url: str, shard: str, with_images: bool,
                    batch_size: int, expected=None) -> Iterator[PairBatch]:
    """Only the pairs to rewrite; images are decoded again only when a model needs them."""
    if not with_images:
        yield from PairBatch(targets["key"].tolist(), targets["caption"].tolist()).chunks(batch_size)
        return
    wanted = set(targets["key"])
    for batch, _ in iter_pair_batches(wh_url, shard, batch_size=batch_size, expected=expected):
        keep = [i for i, k in enumerate(batch.keys) if k in wanted]
        if keep:
            yield PairBatch([batch.keys[i] for i in keep], [batch.captions[i] for i in keep],
                            [batch.images[i] for i in keep])


def _rewrite_needs_images(kind: str, needed: set[str], scores: pd.DataFrame) -> bool:
    """The local engine's ``model.needs_images or any(s.needs_images for s in rescorers)``, without
    loading a model in this process: the rewriter's class says, and of the scorers only caption text
    quality works without images."""
    from curation_pipeline.rewriting.aitqe import AitqeRewriter
    from curation_pipeline.rewriting.cleaner import CaptionCleaner
    from curation_pipeline.rewriting.vlm import VlmRewriter
    from curation_pipeline.scoring.run import INVENTORY_COLUMNS
    from curation_pipeline.scoring.text_quality import CaptionTextQuality

    model = {"cleaner": CaptionCleaner, "vlm": VlmRewriter, "aitqe": AitqeRewriter}.get(kind)
    if model is None:
        raise ValueError(f"unknown rewriter kind {kind!r}; choose cleaner, vlm or aitqe")
    scored = needed & (set(scores.columns) - set(INVENTORY_COLUMNS))
    return model.needs_images or any(c not in CaptionTextQuality.columns for c in scored)


def lineage_preview(lineage: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The rows the UI shows: why each caption was attempted (the decision's reason), the verdict,
    and a short run id (the full one is in the table)."""
    if not len(lineage):
        return pd.DataFrame(columns=LINEAGE_PREVIEW)
    why = decisions.set_index("key")["reason"]
    shown = lineage.sort_values("accepted", ascending=False, kind="stable").head(PREVIEW_ROWS).copy()
    shown["attempted_because"] = shown["key"].map(why)
    shown["run"] = shown["run_id"].astype(str).str[:8]
    return shown[LINEAGE_PREVIEW]


def _similarity():
    from curation_pipeline.scoring.signals.embedding import caption_similarity

    return caption_similarity


@dg.asset(
    partitions_def=shard_partitions,
    group_name="rewriting",
    deps=[caption_decisions],
    kinds={"parquet"},
    description="Lineage of every rewrite attempt: original and candidate caption, rewriter and version, "
    "prompt hash, score before/after, edit ratio, length ratio, semantic similarity, accepted or not and "
    "why, run id and time. Only pairs decided `rewrite` are attempted.",
)
def rewritten_captions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, scoring: ScoringResource,
                       rewriter: RewriterResource, policy: PolicyResource,
                       compute: ComputeResource) -> dg.MaterializeResult:
    shard = context.partition_key
    wh = warehouse.warehouse()
    expected = raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    decisions = wh.read_table("caption_decisions", shard)
    scores = wh.read_table("quality_scores", shard)
    targets = decisions.loc[decisions["action"].eq("rewrite"), ["key", "quality_before"]].merge(
        scores[["key", "caption"]], on="key", how="left")
    ray_stats = {}
    if targets.empty:
        lineage = empty_lineage()
    elif compute.uses_ray:  # rewrite + re-score as Ray Data streaming on the cluster; the same rows as below
        from curation_pipeline.compute.ray_data import rewrite_shard

        needed = _needed_columns(policy)
        lineage, stats = rewrite_shard(
            warehouse.raw_url(shard), shard, targets, with_images=_rewrite_needs_images(rewriter.kind, needed, scores),
            rewriter=rewriter.model_dump(), profile=scoring.as_profile(), needed=needed,
            score_column=policy.quality_column, rules=policy.acceptance_rules(), run_id=context.run_id,
            options=compute.options("rewrite", rewriter.batch_size), expected=expected)
        ray_stats = stats.metadata()
    else:
        model = rewriter.rewriter()
        needed = _needed_columns(policy)
        rescorers = [s for s in scoring.scorers() if needed & set(s.columns)]
        with_images = model.needs_images or any(s.needs_images for s in rescorers)
        lineage = rewrite_batches(
            _target_batches(targets, warehouse.raw_url(shard), shard, with_images, rewriter.batch_size, expected),
            shard=shard, rewriter=model, rescore=lambda b: score_batch(rescorers, b),
            score_column=policy.quality_column,
            scores_before=dict(zip(targets["key"], targets["quality_before"].astype(float))),
            rules=policy.acceptance_rules(), run_id=context.run_id, similarity=_similarity())
    path = wh.write_table("rewritten_captions", shard, lineage)
    accepted = int(lineage["accepted"].sum()) if len(lineage) else 0
    gain = (lineage.loc[lineage["accepted"].astype(bool), "score_after"].astype(float)
            - lineage.loc[lineage["accepted"].astype(bool), "score_before"].astype(float))
    preview = lineage_preview(lineage, decisions)
    return dg.MaterializeResult(metadata={
        **table_metadata("rewritten_captions", lineage),
        **numbers({
            "attempts": len(lineage),
            "accepted": accepted,
            "rejected": len(lineage) - accepted,
            "acceptance_rate": accepted / len(lineage) if len(lineage) else 0.0,
            "mean_score_gain": float(gain.mean()) if len(gain) else 0.0,
        }),
        **numbers(ray_stats),
        "lineage": table(preview),
        "lineage_shown": dg.MetadataValue.text(f"first {len(preview)} of {len(lineage)} attempts (accepted first); "
                                               "all rows: curate lineage, or the rewritten_captions table"),
        "path": dg.MetadataValue.path(path),
    })


def _words(captions: pd.Series) -> np.ndarray:
    return captions.fillna("").str.split().str.len().to_numpy(dtype=float)


@dg.asset(
    partitions_def=shard_partitions,
    group_name="rewriting",
    deps=[rewritten_captions],
    kinds={"parquet"},
    description="The final caption of every pair: kept as is, rewritten (the accepted attempt) or dropped, "
    "with the reason. The blocking caption-length drift check runs on this before anything is published.",
)
def final_captions(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                   policy: PolicyResource) -> dg.MaterializeResult:
    shard = context.partition_key
    wh = warehouse.warehouse()
    raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    decisions = wh.read_table("caption_decisions", shard)
    captions = wh.read_table("pairs", shard).set_index("key")["caption"]
    lineage = wh.read_table("rewritten_captions", shard)
    final = resolve_outcomes(decisions, captions, lineage, policy.decision_policy())
    path = wh.write_table("final_captions", shard, final)
    outcomes = final["outcome"].value_counts()
    n = max(len(final), 1)
    kept = final[final["outcome"].ne("dropped")]
    chart = markdown_image(histogram_png(
        {"original": _words(final["original_caption"]), "final (kept)": _words(kept["final_caption"])},
        f"caption length — {shard}", "words"), "caption length") if len(final) else "_no pairs_"
    return dg.MaterializeResult(metadata={
        **table_metadata("final_captions", final),
        **numbers({
            "pairs": len(final),
            "kept_as_is": int(outcomes.get("kept", 0)),
            "rewritten": int(outcomes.get("rewritten", 0)),
            "dropped": int(outcomes.get("dropped", 0)),
            "rewrite_rate": outcomes.get("rewritten", 0) / n,
            "drop_rate": outcomes.get("dropped", 0) / n,
            "mean_quality_final": float(pd.to_numeric(kept["quality_final"], errors="coerce").mean()) if len(kept) else 0.0,
        }),
        "caption_length_histogram": dg.MetadataValue.md(chart),
        "rewritten_preview": table(final.loc[final["rewritten"], ["key", "original_caption", "final_caption",
                                                                   "quality_before", "quality_final", "reason"]]),
        "path": dg.MetadataValue.path(path),
    })
