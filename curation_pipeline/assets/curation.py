"""Stage 5, curation: the published webdataset shard of kept pairs with final captions."""


from typing import Iterator

import dagster as dg
import pandas as pd

from curation_pipeline.assets.metadata import numbers
from curation_pipeline.assets.rewriting import final_captions
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import WarehouseResource
from curation_pipeline.shards.reader import ShardReader
from curation_pipeline.shards.writer import sidecar, write_curated
from curation_pipeline.values import plain_dict

SIDECAR_SCORE_SKIP = {"shard", "key", "caption", "decode_status", "width", "height", "image_sha256",
                      "caption_sha256", "dup_caption_emb"}


def curated_samples(raw_url: str, shard: str, final: pd.DataFrame, scores: pd.DataFrame) -> Iterator[tuple]:
    """Kept pairs in shard order, with original image bytes (never re-encoded)."""
    kept = final[final["outcome"].ne("dropped")].set_index("key")
    score_cols = [c for c in scores.columns if c not in SIDECAR_SCORE_SKIP and not c.endswith("_error")]
    by_key = scores.set_index("key")[score_cols]
    for sample in ShardReader(raw_url, shard, decode=False):
        if sample.key not in kept.index or sample.image_data is None:
            continue
        row = {"key": sample.key, **kept.loc[sample.key].to_dict()}
        yield (sample.key, sample.record["image_ext"], sample.image_data,
               plain_dict(sidecar(row, plain_dict(by_key.loc[sample.key].to_dict()))))


@dg.asset(
    partitions_def=shard_partitions,
    group_name="curation",
    deps=[final_captions],
    kinds={"webdataset"},
    description="Curated webdataset .tar of the kept pairs: the original image bytes, the final caption "
    "(.txt) and a .json sidecar with the original caption, whether it was rewritten (by which rewriter), "
    "the scores and the source shard. Written only after the blocking checks on final_captions pass.",
)
def curated_shards(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    shard = context.partition_key
    wh = warehouse.warehouse()
    final = wh.read_table("final_captions", shard)
    scores = wh.read_table("quality_scores", shard)
    path = wh.curated_path(shard)
    with wh.atomic_open(path) as handle:
        written = write_curated(handle, curated_samples(warehouse.raw_url(shard), shard, final, scores))
    expected = int(final["outcome"].ne("dropped").sum())
    if written != expected:
        raise RuntimeError(f"{shard}: wrote {written} curated samples but final_captions keeps {expected}")
    size = wh.fs.info(path)["size"]
    return dg.MaterializeResult(metadata={
        **numbers({"samples": written, "rewritten": int(final["rewritten"].sum()), "bytes": int(size)}),
        "path": dg.MetadataValue.path(wh.local_path(path) if wh.is_local else path),
    })
