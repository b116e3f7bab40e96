"""Stage 5, curation: the published webdataset shard of kept pairs with final captions."""


import dagster as dg
import pandas as pd

from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.io import LOADED, columns, versioned
from curation_pipeline.assets.metadata import OWNERS, numbers
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import WarehouseResource
from curation_pipeline.shards.writer import (ROWS_DIGEST_KEY, curated_record, curated_samples, rows_digest,
                                             verify_curated, write_curated)
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline.storage.warehouse import FileChanged

@dg.asset(
    partitions_def=shard_partitions, group_name="curation", owners=OWNERS, tags={"stage": "curation"},
    code_version="4",  # bump when the same inputs give different output (2: the tar records its final_captions;
    # 3: a sidecar carries the original caption's caption_problem; 4: the tar records its raw file's sha256)
    ins={"final_captions": versioned(), "quality_scores": dg.AssetIn(),
         "pairs": columns("key", "meta_json", "meta_error")},
    kinds={"webdataset"},
    description="Curated webdataset .tar of the kept pairs: the original image bytes, the final caption "
    "(.txt) and a .json sidecar with the original caption, whether it was rewritten (by which rewriter), "
    "the scores, the source shard and the source sample's own json (`source`: uid, url, ...). Written only "
    "after the blocking checks on final_captions pass, and only if the raw shard is still the file pairs "
    "read; the tar is verified (count, keys, members) before it is renamed into place, and only while "
    "final_captions is still the file this run loaded (else FileChanged: another run made it again). The tar's "
    "first block (a PAX global header, which readers skip) records the digest that final_captions recorded of its "
    "rows, which the report compares with the current one's.",
)
def curated_shards(context: dg.AssetExecutionContext, warehouse: WarehouseResource, final_captions: pd.DataFrame,
                   quality_scores: pd.DataFrame, pairs: pd.DataFrame) -> dg.MaterializeResult:
    shard = context.partition_key
    wh = warehouse.warehouse()
    expected_raw = raw_fingerprint(warehouse, shard)
    final, scores = final_captions, quality_scores
    # the version of final_captions this run loaded (the IO manager says which; popped, so the frames made from
    # it do not copy it), which must still be there when the tar is renamed into place; another run may have
    # made it again since: if so, the file there now is held to the rows loaded (the same rows, its checks run
    # again and passed, still make this tar)
    loaded = final.attrs.pop(LOADED, None)
    final_version, stored_meta = (loaded["version"], loaded["metadata"]) if loaded else (None, {})
    if loaded is None or wh.file_version(wh.table_path("final_captions", shard)) != final_version:
        stored, stored_meta, final_version = wh.read_table_versioned("final_captions", shard)
        if rows_digest(stored) != rows_digest(final):
            raise FileChanged(_made_again(shard, "before this run began its tar"))
        if stored_meta.get(FAILED_CHECKS_KEY):  # its checks run again alone, and failed, after it was loaded
            raise dg.Failure(description=(
                f"{shard}: final_captions failed its blocking check(s) {stored_meta[FAILED_CHECKS_KEY]} when they "
                "were run again after this run loaded it, so nothing of it is published (curated/"
                f"{shard}.tar is as it was): fix the cause, then run its checks again or the shard"),
                metadata={"shard": shard, "failed_blocking_checks": stored_meta[FAILED_CHECKS_KEY]})
    record = curated_record(shard, stored_meta.get(ROWS_DIGEST_KEY), expected_raw.sha256)
    kept_keys = final.loc[final["outcome"].ne("dropped"), "key"].tolist()
    path = wh.curated_path(shard)
    written = 0

    def verify(tmp_path: str) -> None:  # runs on the complete temp file, before the rename
        if written != len(kept_keys):
            raise dg.Failure(description=f"{shard}: wrote {written} curated samples but final_captions keeps "
                             f"{len(kept_keys)}; nothing was published")
        verify_curated(tmp_path, kept_keys, record)

    try:
        with wh.atomic_open(path, verify=verify,
                            requires={wh.table_path("final_captions", shard): final_version}) as handle:
            written = write_curated(handle, curated_samples(warehouse.raw_url(shard), shard, final, scores, pairs,
                                                            expected=expected_raw), record)
    except FileChanged as exc:
        raise FileChanged(f"{_made_again(shard, 'while this run wrote its tar')} ({exc})") from exc
    size = wh.fs.info(path)["size"]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(int(written)),
        **numbers({"samples": written, "rewritten": int(final["rewritten"].sum()), "bytes": int(size)}),
        "raw_sha256": dg.MetadataValue.text(expected_raw.sha256),
        "path": dg.MetadataValue.path(wh.local_path(path)),
    })


def _made_again(shard: str, when: str) -> str:
    return (f"{shard}: its final_captions was made again by another run (or its checks run again) {when}, so "
            f"the tar this run made from the one it loaded was not published (curated/{shard}.tar is as it was): "
            "run the shard again")
