"""Write the curated shard: kept pairs, original image bytes, final caption, json sidecar.

Images are copied byte for byte (re-encoding would change the data); the caption
is the final one; the ``.json`` sidecar says where the pair came from and whether
its caption was rewritten, so a trainer can audit or undo any rewrite.
"""

from __future__ import annotations

import json
from typing import IO, Any, Iterable

from webdataset import TarWriter

from curation_pipeline.shards.reader import IMAGE_EXTS


def sidecar(row: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": row["key"],
        "source_shard": row["shard"],
        "caption": row["final_caption"],
        "original_caption": row["original_caption"],
        "rewritten": bool(row["rewritten"]),
        "rewriter": row.get("rewriter"),
        "rewriter_version": row.get("rewriter_version"),
        "outcome_reason": row["reason"],
        "quality_column": row["quality_column"],
        "quality_before": row["quality_before"],
        "quality_final": row["quality_final"],
        "scores": scores,
    }


def write_curated(handle: IO[bytes], samples: Iterable[tuple[str, str, bytes, dict[str, Any]]]) -> int:
    """Write ``(key, image_ext, image_bytes, sidecar)`` samples; returns how many were written.

    Fixed mtime, owner and mode make the tar reproducible for the same inputs.
    """
    count = 0
    with TarWriter(handle, user="", group="", mode=0o644, mtime=0.0, encoder=False) as writer:
        for key, ext, image, meta in samples:
            if ext not in IMAGE_EXTS:
                raise ValueError(f"sample {key!r}: {ext!r} is not an image extension")
            writer.write({
                "__key__": key,
                ext: image,
                "txt": meta["caption"].encode("utf-8"),
                "json": json.dumps(meta, ensure_ascii=False, sort_keys=True, default=_jsonable).encode("utf-8"),
            })
            count += 1
    return count


def _jsonable(value: Any) -> Any:
    """numpy scalars and NaN into JSON-safe values."""
    try:
        value = value.item()
    except AttributeError:
        pass
    if isinstance(value, float) and value != value:
        return None
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
