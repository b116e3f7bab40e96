"""Run a profile's scorers over a stream of batches, surviving a failing model batch.

One bad batch (an exception, an out-of-memory error) must not stop a shard: the
batch is split and retried, and pairs that still fail get NaN with the reason in
the scorer's ``<name>_error`` column.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer

log = logging.getLogger(__name__)

INVENTORY_COLUMNS = ["shard", "key", "caption", "decode_status", "width", "height", "image_sha256", "caption_sha256"]


def error_column(scorer: Scorer) -> str:
    return f"{scorer.name}_error"


def _failed(scorer: Scorer, n: int, reason: str) -> pd.DataFrame:
    frame = pd.DataFrame({c: [np.nan] * n for c in scorer.columns})
    frame[error_column(scorer)] = reason
    return frame


def score_with_retry(scorer: Scorer, batch: PairBatch, min_batch: int = 1) -> pd.DataFrame:
    """Score a batch; on failure halve it until single pairs, then mark those missing."""
    view = batch if scorer.needs_images else PairBatch(batch.keys, batch.captions)
    try:
        out = scorer.score(view)
    except Exception as exc:  # model code raises anything, torch OOM included
        if len(batch) <= min_batch:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("%s failed on %s: %s", scorer.ident, batch.keys, reason)
            return _failed(scorer, len(batch), reason)
        half = max(len(batch) // 2, 1)
        parts = [score_with_retry(scorer, part, min_batch) for part in batch.chunks(half)]
        return pd.concat(parts, ignore_index=True)
    if len(out) != len(batch):
        raise RuntimeError(f"{scorer.ident} returned {len(out)} rows for a batch of {len(batch)}")
    missing = [c for c in scorer.columns if c not in out.columns]
    if missing:
        raise RuntimeError(f"{scorer.ident} did not return its declared columns {missing}")
    return out.reset_index(drop=True)


def score_batch(scorers: Sequence[Scorer], batch: PairBatch) -> pd.DataFrame:
    frames = [score_with_retry(s, batch) for s in scorers]
    return pd.concat(frames, axis=1) if frames else pd.DataFrame(index=range(len(batch)))


def score_records(scorers: Sequence[Scorer], batch: PairBatch, records: list[dict]) -> pd.DataFrame:
    """One batch's rows of the score table: the pairs' identity and decode status, then every
    scorer's columns. The local stream and the Ray actors (``curation_pipeline.compute``) both
    build each batch's rows here, so the two engines write the same table."""
    inventory = pd.DataFrame.from_records(records)
    inventory = inventory.reindex(columns=INVENTORY_COLUMNS)
    return pd.concat([inventory.reset_index(drop=True), score_batch(scorers, batch)], axis=1)


def assemble_scores(frames: list[pd.DataFrame], scorers: Sequence[Scorer]) -> pd.DataFrame:
    """The score table from its batches' rows, in shard order. ``scorers`` need only ``name``
    and ``columns`` (the Ray path passes their descriptions, not the loaded models)."""
    if not frames:
        cols = INVENTORY_COLUMNS + [c for s in scorers for c in s.columns]
        return pd.DataFrame(columns=cols)
    table = pd.concat(frames, ignore_index=True)
    # error columns exist for every scorer, so the table's schema does not depend on luck
    for s in scorers:
        if error_column(s) not in table.columns:
            table[error_column(s)] = None
    return table


def score_stream(scorers: Sequence[Scorer], batches: Iterable[tuple[PairBatch, list[dict]]]) -> pd.DataFrame:
    """Score table: the pairs' identity and decode status, then every scorer's columns."""
    return assemble_scores([score_records(scorers, batch, records) for batch, records in batches], scorers)
