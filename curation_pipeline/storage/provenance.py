"""What a stored table records about where it came from, in its Parquet schema metadata: the raw file it
derives from, and the blocking checks it failed when made. The IO manager writes and enforces it; the
report reads it (without Dagster)."""

from __future__ import annotations

from curation_pipeline.shards.fingerprint import RawFingerprint

# a DataFrame's ``attrs[FILE_METADATA]`` (str -> str) goes into the Parquet file's schema metadata
FILE_METADATA = "file_metadata"
FINGERPRINT_KEY = "raw_fingerprint"  # pairs': the raw file it read
RAW_SHA_KEY = "raw_sha256"  # every later table's: the raw file its inputs came from
FAILED_CHECKS_KEY = "failed_blocking_checks"  # a checked table's: its blocking checks that failed when made


def raw_sha(meta: dict[str, str]) -> str | None:
    """The raw file a stored table derives from, by its metadata; None for a table written before this
    was recorded."""
    if meta.get(FINGERPRINT_KEY):
        return RawFingerprint.from_json(meta[FINGERPRINT_KEY]).sha256
    return meta.get(RAW_SHA_KEY) or None
