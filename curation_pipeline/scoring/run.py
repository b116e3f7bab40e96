"""Run a profile's scorers over a stream of batches, surviving a failing model batch.

A failing batch is split and retried; pairs that still fail get NaN and the reason in every error
column the scorer declares (``columns.error_columns``). A prefetch thread reads, decodes and runs
each scorer's optional ``prepare(batch)`` (passed back as ``score(batch, prepared=...)``) ahead;
scores do not change. ``raised_on`` counts, from the stored table, the pairs a scorer raised on: the
``scores_complete`` check fails a shard where a model failed systematically instead of pair by pair.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from curation_pipeline.pairs import ContractError, PairBatch, split_on_failure
from curation_pipeline.scoring.base import NO_INPUT, Scorer
from curation_pipeline.scoring.columns import ERROR_SUFFIX, error_columns
from curation_pipeline.scoring.prefetch import DEFAULT_DEPTH, prefetch
from curation_pipeline.scoring.signals import limit_torch_threads

log = logging.getLogger(__name__)

INVENTORY_COLUMNS = ["shard", "key", "caption", "decode_status", "width", "height", "image_sha256", "caption_sha256"]


def _view(scorer: Scorer, batch: PairBatch) -> PairBatch:
    return batch if scorer.needs_images else PairBatch(batch.keys, batch.captions)


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """A pair's reason when scoring it raised: ``<ExceptionType>: <message>``, as a traceback ends. Scorers
    that catch an exception on one pair write the same (``image_quality``, ``dup``): ``is_raised`` tells
    these from the reasons a scorer gives for input it lacked ("no image") or a reply it could not read."""
    return f"{type(exc).__name__}: {exc}"[:limit]


_RAISED = re.compile(r"[^\W\d]\w*: ")  # an exception type's name (an identifier), then ": "


def is_raised(reason) -> bool:
    """Whether an error column's value is ``failure_reason``'s: the scorer raised on the pair."""
    return isinstance(reason, str) and _RAISED.match(reason) is not None


@dataclass
class Faults:
    """The exceptions scorers raised in one stream, per scorer and exception type: how many pairs each
    failed, and the first one's traceback, formatted at once (a kept exception would hold its frames,
    a model's tensors among them, for the rest of the shard)."""

    seen: dict[str, dict[str, list]] = field(default_factory=dict)  # scorer -> type -> [pairs, traceback]

    def add(self, scorer: str, exc: BaseException, pairs: int) -> None:
        entry = self.seen.setdefault(scorer, {}).setdefault(
            type(exc).__name__, [0, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__,
                                                                       chain=False))])  # not each halving's
        entry[0] += pairs

    def merge(self, later: Faults) -> None:
        """Add what a later part of the same stream raised (the Ray actors' batches, in shard order):
        counts add up, and a traceback is kept only where this one had none of that scorer and type."""
        for scorer, kinds in later.seen.items():
            for kind, (pairs, trace) in kinds.items():
                self.seen.setdefault(scorer, {}).setdefault(kind, [0, trace])[0] += pairs

    def sole_traceback(self, scorer: str) -> str | None:
        """The traceback when ``scorer`` raised one exception type only (None if none, or several)."""
        kinds = self.seen.get(scorer, {})
        return next(iter(kinds.values()))[1] if len(kinds) == 1 else None


def score_with_retry(scorer: Scorer, batch: PairBatch, min_batch: int = 1, prepared=None,
                     faults: Faults | None = None) -> pd.DataFrame:
    """Score a batch; on failure halve it until single pairs, then mark those missing.
    ``prepared``: the scorer's ``prepare(batch)``, made ahead; the halves prepare their own.
    ``faults``: where what still failed is recorded, for the step log."""
    def run(part: PairBatch) -> pd.DataFrame:
        view = _view(scorer, part)
        out = scorer.score(view) if prepared is None or part is not batch else scorer.score(view, prepared=prepared)
        if len(out) != len(part):  # a broken contract: raised, never split and retried
            raise ContractError(f"{scorer.ident} returned {len(out)} rows for a batch of {len(part)}")
        return out.reset_index(drop=True)

    def failed(part: PairBatch, exc: Exception) -> pd.DataFrame:
        reason = failure_reason(exc)
        log.warning("%s failed on %s: %s", scorer.ident, part.keys, reason)
        if faults is not None:
            faults.add(scorer.name, exc, len(part))
        frame = pd.DataFrame({c: [np.nan] * len(part) for c in scorer.columns})
        for column in error_columns(scorer):  # each of them, or the pair reads as scored with no reason
            frame[column] = reason
        return frame

    out = split_on_failure(batch, run, failed, lambda parts: pd.concat(parts, ignore_index=True), min_batch)
    missing = [c for c in scorer.columns if c not in out.columns]
    if missing:
        raise RuntimeError(f"{scorer.ident} did not return its declared columns {missing}")
    return out.reset_index(drop=True)


def score_batch(scorers: Sequence[Scorer], batch: PairBatch, prepared: dict[int, object] | None = None,
                faults: Faults | None = None) -> pd.DataFrame:
    """Every scorer's columns for one batch; ``prepared`` maps a scorer's index to its inputs."""
    prepared = prepared or {}
    frames = [score_with_retry(s, batch, prepared=prepared.get(i), faults=faults) for i, s in enumerate(scorers)]
    return pd.concat(frames, axis=1) if frames else pd.DataFrame(index=range(len(batch)))


@dataclass
class PreparedBatch:
    """A batch as the prefetch thread hands it over: decoded, with each preparing scorer's inputs."""

    batch: PairBatch
    records: list[dict]
    inputs: dict[int, object] = field(default_factory=dict)


def prepare_batch(scorers: Sequence[Scorer], batch: PairBatch, records: list[dict]) -> PreparedBatch:
    """Run every scorer's ``prepare``; a failing one leaves that scorer to prepare again inside
    ``score_with_retry``, so a bad pair is isolated exactly as without prefetch."""
    inputs = {}
    for i, scorer in enumerate(scorers):
        prepare = getattr(scorer, "prepare", None)
        if prepare is None:
            continue
        try:
            inputs[i] = prepare(_view(scorer, batch))
        except Exception as exc:  # noqa: BLE001 - retried (and reported) where it is scored
            log.debug("%s: prepare failed on %s, scoring will retry: %s", scorer.ident, batch.keys[:3], exc)
    return PreparedBatch(batch, records, inputs)


def score_records(scorers: Sequence[Scorer], batch: PairBatch, records: list[dict],
                  prepared: dict[int, object] | None = None, faults: Faults | None = None) -> pd.DataFrame:
    """One batch's rows: the pairs' identity and decode status, then every scorer's columns. The local
    stream and the Ray actors both build rows here, so the two engines write the same table."""
    inventory = pd.DataFrame.from_records(records).reindex(columns=INVENTORY_COLUMNS)
    return pd.concat([inventory.reset_index(drop=True), score_batch(scorers, batch, prepared, faults)], axis=1)


def assemble_scores(frames: list[pd.DataFrame], scorers: Sequence[Scorer]) -> pd.DataFrame:
    """The score table from its batches' rows, in shard order. ``scorers`` need only ``name``
    and ``columns`` (the Ray path passes their descriptions, not the loaded models)."""
    table = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=INVENTORY_COLUMNS + [c for s in scorers for c in s.columns]))
    for s in scorers:  # error columns exist for every scorer, so the table's schema does not depend on luck
        for column in error_columns(s):
            if column not in table.columns:
                table[column] = None
    return table


def unscored(scores: pd.DataFrame, scorers: Sequence[Scorer]) -> dict[str, int]:
    """Pairs with a reason in any of a scorer's error columns, per scorer; also per error column for a
    scorer with several (MLM-Filter's metrics), named as the column without its ``_error``."""
    counts = {}
    for s in scorers:
        reasons = scores.reindex(columns=list(error_columns(s))).notna()
        counts[s.name] = int(reasons.any(axis=1).sum())
        if reasons.shape[1] > 1:
            counts.update({c.removesuffix(ERROR_SUFFIX): int(n) for c, n in reasons.sum().items()})
    return counts


@dataclass(frozen=True)
class Raised:
    """What one scorer raised on over a table: ``pairs`` of the ``attempted`` (every pair but those it had no
    input for, the reader's skips: a pair one of whose metrics it scored, or whose model reply it could not
    read, was attempted), and its most common reason, on ``reason_pairs`` of them."""

    scorer: str
    pairs: int
    attempted: int
    reason: str | None = None
    reason_pairs: int = 0

    @property
    def share(self) -> float:
        return self.pairs / self.attempted if self.attempted else 0.0

    def systematic(self, max_share: float) -> bool:
        """The model, not a pair, failed: on every pair it attempted, or on more than ``max_share`` of them.
        One pair is never evidence of that (a one-pair shard with an image the model rejects)."""
        return self.pairs >= 2 and (self.pairs == self.attempted or self.share > max_share)


def raised_on(scores: pd.DataFrame, scorers: Sequence[Scorer]) -> dict[str, Raised]:
    """Per scorer, the pairs it raised on (``is_raised``, in any of its declared error columns). ``scorers``
    need only ``name`` and ``columns``."""
    out = {}
    for s in scorers:
        reasons = scores.reindex(columns=list(error_columns(s)))
        raised = reasons.map(is_raised)
        per_pair = raised.any(axis=1)
        first = pd.Series(None, index=reasons.index, dtype=object)  # a pair's reason counts once
        for column in reasons.columns:
            first = first.where(first.notna(), reasons[column].where(raised[column]))
        top = first.value_counts()
        no_input = reasons.isin(NO_INPUT).all(axis=1)  # every column: "no image" / "no caption"
        out[s.name] = Raised(s.name, int(per_pair.sum()), int((~no_input).sum()),
                             str(top.index[0]) if len(top) else None, int(top.iloc[0]) if len(top) else 0)
    return out


def reads_pixels(scorers: Sequence[Scorer]) -> bool:
    """Whether any scorer reads pixels: if none does, images are only verified (``decode_image``)
    and nothing is prefetched (decoding then costs little, and a reader thread only contends for the GIL
    with pure-Python scorers)."""
    return any(s.needs_images and s.reads_pixels for s in scorers)


def decode_mode(scorers: Sequence[Scorer]) -> Literal[True, "verify"]:
    """How a shard's images are decoded for these scorers, on either engine: fully, or only verified."""
    return True if reads_pixels(scorers) else "verify"


def score_stream(scorers: Sequence[Scorer], batches: Iterable[tuple[PairBatch, list[dict]]],
                 prefetch_depth: int = DEFAULT_DEPTH, faults: Faults | None = None) -> pd.DataFrame:
    """Score table, with batches prepared ``prefetch_depth`` ahead in a background thread (0: serially;
    always serial when no scorer reads pixels); torch's pool is sized to the run's thread budget so
    side-by-side runs do not oversubscribe. ``faults`` collects what the scorers raised."""
    limit_torch_threads()
    if not reads_pixels(scorers):
        prefetch_depth = 0
    stream = prefetch(batches, lambda item: prepare_batch(scorers, *item), depth=prefetch_depth)
    try:
        frames = [score_records(scorers, item.batch, item.records, item.inputs, faults) for item in stream]
    finally:  # on an error too: else the prefetch thread and the shard reader (an open tar) live on with the traceback
        stream.close()
        if prefetch_depth <= 0 and hasattr(batches, "close"):
            batches.close()  # serially, the stream is a plain generator expression: it does not close its source
    return assemble_scores(frames, scorers)
