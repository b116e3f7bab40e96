"""Stage 5, curation: the published webdataset shard of kept pairs with final captions."""


import json
from typing import Iterator

import dagster as dg
import pandas as pd

from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.metadata import numbers
from curation_pipeline.assets.rewriting import final_captions
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import WarehouseResource
from curation_pipeline.shards.fingerprint import RawFingerprint
from curation_pipeline.shards.reader import ShardReader
from curation_pipeline.shards.writer import sidecar, verify_curated, write_curated
from curation_pipeline.values import plain_dict

SIDECAR_SCORE_SKIP = {"shard", "key", "caption", "decode_status", "width", "height", "image_sha256",
                      "caption_sha256", "dup_caption_emb"}


def curated_samples(raw_url: str, shard: str, final: pd.DataFrame, scores: pd.DataFrame,
                    pairs: pd.DataFrame | None = None, expected: RawFingerprint | None = None) -> Iterator[tuple]:
    """Kept pairs in shard order, with original image bytes (never re-encoded) and, from ``pairs``,
    the source sample's json. With ``expected``, the raw file must hash to what pairs read."""
    kept = final[final["outcome"].ne("dropped")].set_index("key")
    score_cols = [c for c in scores.columns if c not in SIDECAR_SCORE_SKIP and not c.endswith("_error")]
    by_key = scores.set_index("key")[score_cols]
    sources = pairs.set_index("key")[["meta_json", "meta_error"]] if pairs is not None else None
    for sample in ShardReader(raw_url, shard, decode=False, expected=expected):
        if sample.key not in kept.index or sample.image_data is None:
            continue
        row = {"key": sample.key, **kept.loc[sample.key].to_dict()}
        source, source_error = None, None
        if sources is not None and sample.key in sources.index:
            text, source_error = sources.at[sample.key, "meta_json"], sources.at[sample.key, "meta_error"]
            source = json.loads(text) if isinstance(text, str) else None
            source_error = source_error if isinstance(source_error, str) else None
        yield (sample.key, sample.record["image_ext"], sample.image_data,
               plain_dict(sidecar(row, plain_dict(by_key.loc[sample.key].to_dict()), source, source_error)))


@dg.asset(
    partitions_def=shard_partitions,
    group_name="curation",
    deps=[final_captions],
    kinds={"webdataset"},
    description="Curated webdataset .tar of the kept pairs: the original image bytes, the final caption "
    "(.txt) and a .json sidecar with the original caption, whether it was rewritten (by which rewriter), "
    "the scores, the source shard and the source sample's own json (`source`: uid, url, ...). Written only "
    "after the blocking checks on final_captions pass, and only if the raw shard is still the file pairs "
    "read; the tar is verified (count, keys, members) before it is renamed into place.",
)
def curated_shards(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    shard = context.partition_key
    wh = warehouse.warehouse()
    expected_raw = raw_fingerprint(warehouse, shard)
    final = wh.read_table("final_captions", shard)
    scores = wh.read_table("quality_scores", shard)
    pairs = wh.read_table("pairs", shard)
    kept_keys = final.loc[final["outcome"].ne("dropped"), "key"].tolist()
    path = wh.curated_path(shard)
    written = 0

    def verify(tmp_path: str) -> None:  # runs on the complete temp file, before the rename
        if written != len(kept_keys):
            raise dg.Failure(description=f"{shard}: wrote {written} curated samples but final_captions keeps "
                             f"{len(kept_keys)}; nothing was published")
        verify_curated(tmp_path, kept_keys)

    with wh.atomic_open(path, verify=verify) as handle:
        written = write_curated(handle, curated_samples(warehouse.raw_url(shard), shard, final, scores, pairs,
                                                        expected=expected_raw))
    size = wh.fs.info(path)["size"]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(written)),
        **numbers({"samples": written, "rewritten": int(final["rewritten"].sum()), "bytes": int(size)}),
        "raw_sha256": dg.MetadataValue.text(expected_raw.sha256),
        "path": dg.MetadataValue.path(wh.local_path(path) if wh.is_local else path),
    })
