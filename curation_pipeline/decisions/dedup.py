"""Duplicate groups within a shard and against earlier shards, keeping the best pair.

"Earlier" means shards whose key sorts before this one and that are already in the
warehouse: the first occurrence in key order wins whatever order partitions ran in,
so the result does not depend on scheduling.
"""

from __future__ import annotations

import pandas as pd

from curation_pipeline.storage.warehouse import Warehouse

DUP_COLUMNS = ("dup_image_sha", "dup_phash", "dup_caption_norm_sha", "dup_caption_emb")


def prior_pairs(warehouse: Warehouse, shard: str) -> pd.DataFrame | None:
    """Pairs of earlier shards that their own decisions kept."""
    frames = []
    for other in warehouse.shards("final_captions"):
        if other >= shard or not warehouse.has_table("quality_scores", other):
            continue
        final = warehouse.read_table("final_captions", other)
        kept = set(final.loc[final["outcome"].ne("dropped"), "key"])
        scores = warehouse.read_table("quality_scores", other)
        cols = ["shard", "key", *[c for c in DUP_COLUMNS if c in scores.columns]]
        frames.append(scores.loc[scores["key"].isin(kept), cols])
    return pd.concat(frames, ignore_index=True) if frames else None


def mark_duplicates(scores: pd.DataFrame, warehouse: Warehouse, shard: str, quality_column: str) -> pd.DataFrame:
    """Add dup_group / dup_kind / dup_keep / dup_of when the profile computed duplicate signals."""
    if not all(c in scores.columns for c in DUP_COLUMNS[:3]):
        return scores
    from curation_pipeline.scoring.signals.duplicates import assign_duplicate_groups

    quality = pd.to_numeric(scores.get(quality_column), errors="coerce") if quality_column in scores else None
    if quality is None:
        quality = pd.Series(0.0, index=scores.index)
    groups = assign_duplicate_groups(scores, prior_pairs(warehouse, shard), quality)
    out = scores.copy()
    for column in ("dup_group", "dup_kind", "dup_keep", "dup_of"):
        out[column] = groups[column].to_numpy()
    return out
