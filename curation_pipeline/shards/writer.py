"""Write the curated shard: kept pairs, original image bytes (never re-encoded), final caption, json.

The ``.json`` sidecar says where the pair came from and whether its caption was rewritten (so a
trainer can audit or undo any rewrite), with the source sample's own json whole under ``source``.
``verify_curated`` re-reads the written tar before it is renamed into place: a tar whose samples are
not exactly the kept pairs is never published.

A curated tar records which ``final_captions`` it was made from (``curated_record``: the digest of that
table's rows, which the table recorded when it was made, ``ROWS_DIGEST_KEY``), and the raw file its images and
source json came from, in a PAX global header, its first block,
written with the tar and so renamed into place with it: the report (``read_curated_record``, which reads
only the tar's first blocks, against the table's Parquet footer) tells a tar of the current table from one
a killed or concurrent run left. Readers (tarfile, webdataset, GNU
tar) apply a global header and list no member for it. A tar with no sample carries no record: Python's
tarfile cannot read a global header followed by no member, and an empty tar matches any table that
keeps no pair.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tarfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, NamedTuple

import pandas as pd

from curation_pipeline.scoring.registry import score_columns
from curation_pipeline.shards.fingerprint import RawFingerprint
from curation_pipeline.shards.reader import IMAGE_EXTS, ShardReader
from curation_pipeline.shards.text import replace_surrogates
from curation_pipeline.values import jsonable, plain_dict


# the keys of a curated tar's PAX global header (a vendor's keywords are "VENDOR.keyword", POSIX.1-2008)
FINAL_CAPTIONS_KEY = "CURATION.final_captions_rows"  # the rows digest of the final_captions it was made from
RAW_KEY = "CURATION.raw_sha256"  # the raw file its images came from: final_captions' rows alone do not say
SHARD_KEY = "CURATION.shard"
# in final_captions' own file metadata: rows_digest of its rows when it was made (a check run alone later keeps
# it): content, not a run, so the same inputs still give the same tar bytes, on either engine
ROWS_DIGEST_KEY = "rows_digest"


class CuratedShardInvalid(RuntimeError):
    """The curated tar just written is not exactly the kept pairs: it is not published."""


class CuratedRecord(NamedTuple):
    """What a curated tar's first blocks say: its record (empty for a tar written before tars had one, or
    one with no sample) and whether it holds any sample."""

    record: dict[str, str]
    empty: bool


def rows_digest(table: pd.DataFrame) -> str:
    """SHA-256 over a table's column names and rows (pandas' row hashes): whether two reads in one process
    loaded the same rows, and what final_captions records of its rows when made (``ROWS_DIGEST_KEY``). A
    recorded digest is only ever compared with recorded digests: another pandas may hash otherwise."""
    digest = hashlib.sha256(json.dumps([str(c) for c in table.columns]).encode())
    if len(table):
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def curated_record(shard: str, rows: str | None, raw: str | None = None) -> dict[str, str]:
    """The record a shard's curated tar carries of the final_captions it was made from: the digest that
    table recorded of its rows (``ROWS_DIGEST_KEY`` of its metadata; none for a table made before tables
    recorded it), and the sha256 of the raw file it read (a re-encoded download under the same keys and
    captions gives the same rows, not the same images)."""
    return {SHARD_KEY: shard, **({FINAL_CAPTIONS_KEY: rows} if rows else {}), **({RAW_KEY: raw} if raw else {})}


def sidecar(row: dict[str, Any], scores: dict[str, Any], source: dict[str, Any] | None = None,
            source_error: str | None = None, caption_problem: str | None = None) -> dict[str, Any]:
    """A kept pair's ``.json`` sidecar; ``caption_problem``: what the reader repaired in the original caption
    (truncated, NUL bytes removed, invalid UTF-8 replaced), which ``original_caption`` alone does not show.
    ``scores`` are of the image and the original caption (quality_scores'); a rewrite's own is ``quality_final``."""
    return {"key": row["key"], "source_shard": row["shard"], "caption": row["final_caption"],
            "original_caption": row["original_caption"], "rewritten": bool(row["rewritten"]),
            "rewriter": row.get("rewriter"), "rewriter_version": row.get("rewriter_version"),
            "outcome_reason": row["reason"], "quality_column": row["quality_column"],
            "quality_before": row["quality_before"], "quality_final": row["quality_final"], "scores": scores,
            "source": source,  # the raw sample's own json, whole (None if it had none or it was unreadable)
            **({"source_error": source_error} if source_error else {}),
            **({"caption_problem": caption_problem} if caption_problem else {})}


def write_curated(handle: IO[bytes], samples: Iterable[tuple[str, str, bytes, dict[str, Any]]],
                  record: dict[str, str] | None = None) -> int:
    """Write ``(key, image_ext, image_bytes, sidecar)`` samples; returns how many were written. Fixed
    mtime, owner and mode make the tar reproducible for the same inputs. After the ``record``
    (``curated_record``: a PAX global header, left out when there is no sample) the bytes are those of
    webdataset's ``TarWriter(user="", group="", mode=0o644, mtime=0.0)`` (a test holds them equal),
    written with tarfile: webdataset's package imports torch, over a second of every run."""
    count = 0
    samples = iter(samples)
    first = next(samples, None)
    header = {"pax_headers": dict(record)} if record and first is not None else {}
    with tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT, **header) as tar:
        for key, ext, image, meta in itertools.chain([first] if first is not None else [], samples):
            if ext not in IMAGE_EXTS:
                raise ValueError(f"sample {key!r}: {ext!r} is not an image extension")
            sidecar_json = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=jsonable)
            members = {ext: image, "txt": replace_surrogates(meta["caption"]).encode("utf-8"),
                       "json": replace_surrogates(sidecar_json).encode("utf-8")}
            for suffix, data in sorted(members.items()):  # webdataset's member order
                info = tarfile.TarInfo(f"{key}.{suffix}")
                # mtime a float, as TarWriter passes it (tarfile then writes it as a PAX record)
                info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0.0, 0o644, "", ""
                tar.addfile(info, io.BytesIO(data))
            count += 1
    return count


def write_tar(path: Path, members: Iterable[tuple[str, bytes]], *, mtime: int = 0,
              tar_format: int = tarfile.DEFAULT_FORMAT) -> Path:
    """A plain tar of ``(name, data)`` members whose bytes depend on the content alone (every header
    field fixed; TarInfo's defaults: mode 0644, no owner), written beside ``path``, then renamed."""
    tmp = path.with_suffix(".tar.tmp")
    try:
        with tarfile.open(tmp, "w", format=tar_format) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), mtime
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a partial tar nor its temp file
        raise
    return path


def verify_curated(path: str, expected_keys: Iterable[str], record: dict[str, str] | None = None) -> int:
    """Check a written curated tar: exactly the expected keys, each with one image, a UTF-8
    caption and a json sidecar that parses and names the key; only regular members, none twice;
    with ``record``, the tar records it (unless it holds no sample, see ``write_curated``).
    Returns the number of samples; raises CuratedShardInvalid naming what is wrong. Each sample is
    checked when its members end, and only its caption and sidecar are kept: memory is one
    sample's, not the shard's (images are read through, so a short one still fails)."""
    expected, done = set(expected_keys), set()
    key, parts = None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            recorded = {k: tar.pax_headers.get(k) for k in record or {}}
            if record and expected and recorded != record:
                raise CuratedShardInvalid(f"{path}: records {recorded}, not the final_captions it was made from "
                                          f"{record}")
            for info in tar:
                tar.members = []  # tarfile keeps every header otherwise
                if not info.isreg():
                    raise CuratedShardInvalid(f"{path}: member {info.name!r} is not a regular file")
                name_key, _, ext = info.name.rpartition(".")
                if name_key != key:
                    if key is not None:
                        _verify_sample(path, key, parts)
                        done.add(key)
                    if name_key in done:  # webdataset would read a second sample of that key
                        raise CuratedShardInvalid(f"{path}: sample {name_key!r} appears again after other samples")
                    key, parts = name_key, {}
                if ext in parts:
                    raise CuratedShardInvalid(f"{path}: member {info.name!r} appears twice")
                data = tar.extractfile(info)
                if ext in ("txt", "json"):
                    parts[ext] = data.read()
                else:
                    while data.read(1 << 20):
                        pass
                    parts[ext] = None
            if key is not None:
                _verify_sample(path, key, parts)
                done.add(key)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CuratedShardInvalid(f"{path}: the curated tar does not read back: {type(exc).__name__}: {exc}") from exc
    missing, extra = sorted(expected - done), sorted(done - expected)
    if missing or extra:
        raise CuratedShardInvalid(f"{path}: holds {len(done)} samples, final_captions keeps {len(expected)}; "
                                  f"missing {missing[:5]}, unexpected {extra[:5]}")
    return len(done)


def read_curated_record(handle: IO[bytes]) -> CuratedRecord:
    """The record of the curated tar open in ``handle``, from its first blocks only (the global header and
    the first member's header: never the samples). Raises ``tarfile.TarError`` for a tar that does not read."""
    with tarfile.open(fileobj=handle, mode="r|") as tar:
        first = tar.next()
        return CuratedRecord({k: v for k, v in tar.pax_headers.items() if k.startswith("CURATION.")}, first is None)


def _verify_sample(path: str, key: str, parts: dict[str, bytes | None]) -> None:
    images = [e for e in parts if e in IMAGE_EXTS]
    if len(images) != 1 or set(parts) != {images[0], "txt", "json"}:
        raise CuratedShardInvalid(f"{path}: sample {key!r} has members {sorted(parts)}, expected one image, "
                                  ".txt and .json")
    try:
        parts["txt"].decode("utf-8")
        meta = json.loads(parts["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CuratedShardInvalid(f"{path}: sample {key!r}: unreadable caption or sidecar: {exc}") from exc
    if not isinstance(meta, dict):
        raise CuratedShardInvalid(f"{path}: sample {key!r}: its sidecar is {type(meta).__name__}, not an object")
    if meta.get("key") != key:
        raise CuratedShardInvalid(f"{path}: sample {key!r}: its sidecar names key {meta.get('key')!r}")


def curated_samples(raw_url: str, shard: str, final: pd.DataFrame, scores: pd.DataFrame,
                    pairs: pd.DataFrame | None = None, expected: RawFingerprint | None = None) -> Iterator[tuple]:
    """Kept pairs in shard order, with original image bytes (never re-encoded) and, from ``pairs``,
    the source sample's json. With ``expected``, the raw file must hash to what pairs read."""
    # rows as plain dicts by key: a pandas row look-up per sample cost more than writing it
    kept = final[final["outcome"].ne("dropped")].set_index("key").to_dict("index")
    declared = score_columns()  # each scorer says which of its columns a sidecar carries
    score_cols = [c for c in scores.columns if c in declared and declared[c].sidecar]
    by_key = scores.set_index("key")[score_cols].to_dict("index")
    sources = pairs.set_index("key")[["meta_json", "meta_error"]].to_dict("index") if pairs is not None else {}
    for sample in ShardReader(raw_url, shard, decode=False, expected=expected):
        if sample.key not in kept or sample.image_data is None:
            continue
        row = {"key": sample.key, **kept[sample.key]}
        source_row = sources.get(sample.key, {})
        text, source_error = source_row.get("meta_json"), source_row.get("meta_error")
        source = json.loads(text) if isinstance(text, str) else None
        source_error = source_error if isinstance(source_error, str) else None
        yield (sample.key, sample.record["image_ext"], sample.image_data,
               plain_dict(sidecar(row, plain_dict(by_key[sample.key]), source, source_error,
                                  sample.record.get("caption_problem"))))
