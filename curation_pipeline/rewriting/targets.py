"""Which pairs a shard rewrites, what judging a rewrite reads, and whether images must be decoded
again for it: what both engines (local and Ray) ask before rewriting."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from curation_pipeline.decisions.policy import REWRITE_NEEDS
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.shards.fingerprint import RawFingerprint
from curation_pipeline.shards.reader import iter_pair_batches


def rewrite_targets(decisions: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """key, quality_before and caption of every pair decided ``rewrite``, the least score that publishes it
    where its decision records one (``rewrite_needs``), and the caption's stored embedding when the profile made
    one."""
    stored = [CAPTION_EMBEDDING] if CAPTION_EMBEDDING in scores else []
    needs = [REWRITE_NEEDS] if REWRITE_NEEDS in decisions else []
    return decisions.loc[decisions["action"].eq("rewrite"), ["key", "quality_before", *needs]].merge(
        scores[["key", "caption", *stored]], on="key", how="left")


def rewrite_needs_of(targets: pd.DataFrame) -> dict[str, float]:
    """key -> the least score that publishes the pair (``rewrite_targets``' ``rewrite_needs``), what its rewrite
    is judged against besides ``drop_threshold``; empty for decisions that record none."""
    if REWRITE_NEEDS not in targets:
        return {}
    return {key: float(v) for key, v in zip(targets["key"], targets[REWRITE_NEEDS]) if not pd.isna(v)}


def known_embeddings(targets: pd.DataFrame) -> dict[str, np.ndarray]:
    """Original caption -> the vector the duplicate scorer stored for it, so judging a rewrite's
    similarity encodes only the candidates (empty when the profile stores none)."""
    if CAPTION_EMBEDDING not in targets:
        return {}
    return {caption: np.asarray(vector, dtype=np.float32) for caption, vector in
            zip(targets["caption"], targets[CAPTION_EMBEDDING]) if isinstance(caption, str) and vector is not None}


def needed_columns(quality_column: str) -> set[str]:
    """The scores a rewrite is judged by: the quality column. The keep expression's other columns are not
    re-scored (an MLM metric in it would cost four prompts a candidate, and images decoded for a text-only
    rewriter): a pair failing it is published only at a quality score meeting it with those as stored
    (``policy.rewrite_needs``)."""
    return {quality_column}


def rescored_columns(needed: set[str], rules) -> set[str]:
    """What a candidate is scored on: ``needed`` (its judge), and the columns of the weak-caption bounds it must
    clear (``AcceptanceRules.still_weak``). Those are caption rules (DataComp's language and length): they never
    make a rewrite decode its images (``rewrite_needs_images`` reads ``needed`` alone)."""
    return set(needed) | (set(rules.still_weak.columns) if rules.still_weak is not None else set())


def target_batches(targets: pd.DataFrame, raw_url: str, shard: str, with_images: bool, batch_size: int,
                   expected: RawFingerprint | None = None) -> Iterator[PairBatch]:
    """Only the pairs to rewrite, ``batch_size`` of them a batch (not the few of each batch the shard was
    scored in: a model batch of 16 would run on 3 at a 20% rewrite rate); images are decoded again, theirs
    alone, only when a model needs them."""
    if not with_images:
        yield from PairBatch(targets["key"].tolist(), targets["caption"].tolist()).chunks(batch_size)
        return
    for batch, _ in iter_pair_batches(raw_url, shard, batch_size=batch_size, expected=expected,
                                      keys=frozenset(targets["key"])):
        yield PairBatch(batch.keys, batch.captions, batch.images)


def rewrite_needs_images(kind: str, needed: set[str], profile: str) -> bool:
    """The local engine's ``model.needs_images or any(s.needs_images for s in rescorers)``, without
    loading a model in this process: the rewriter's class says, and the classes of the ``profile``'s
    scorers that write a ``needed`` column (not the scores table at hand: an asset loads a few of its
    columns)."""
    from curation_pipeline.rewriting.aitqe import AitqeRewriter
    from curation_pipeline.rewriting.cleaner import CaptionCleaner
    from curation_pipeline.rewriting.vlm import VlmRewriter
    from curation_pipeline.scoring.registry import scorer_classes

    model = {"cleaner": CaptionCleaner, "vlm": VlmRewriter, "aitqe": AitqeRewriter}.get(kind)
    if model is None:
        raise ValueError(f"unknown rewriter kind {kind!r}; choose cleaner, vlm or aitqe")
    rescorers = [cls for cls in scorer_classes(profile) if needed & {c.name for c in cls.outputs}]
    return model.needs_images or any(cls.needs_images for cls in rescorers)


def judged_blind(kind: str, needed: set[str], profile: str) -> bool:
    """Whether a model rewriter's candidates are judged only by scores that do not look at the image
    (``text_quality``): a count corrected to the picture and one made up score alike, so their facts are held
    to the original's (``AcceptanceRules.keep_facts``). The cleaner only removes: never judged blind."""
    from curation_pipeline.rewriting.cleaner import CaptionCleaner
    from curation_pipeline.scoring.registry import scorer_classes

    return kind != CaptionCleaner.name and not any(cls.needs_images for cls in scorer_classes(profile)
                                                   if needed & {c.name for c in cls.outputs})


def blind_judge_warning(kind: str, needed: set[str], profile: str, rules) -> str | None:
    """Why a model rewriter's candidates may be accepted unseen, or None: its rewrites are judged by scores that
    do not look at the image (``text_quality``) and no bound keeps them near the original, so a fluent caption of
    another image, or a translation, scores better and passes. The well-formedness check still refuses model talk,
    and the facts check a number added or a negation dropped."""
    if not judged_blind(kind, needed, profile):
        return None
    if rules.max_edit_ratio is not None or rules.min_similarity is not None:
        return None
    return (f"the {kind} rewriter's candidates are judged by {', '.join(sorted(needed))}, which does not see the "
            "image, and no minimality bound is set: a caption of something else, or a translation, can be "
            "accepted. Set policy.acceptance.min_similarity (e.g. 0.5) or max_edit_ratio, or judge by an "
            "image-text score")
