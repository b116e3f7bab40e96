"""The ``aitqe`` rewriter's candidates from the replies the AITQE scorer stored, where it would ask the same.

AITQE rates a pair and writes its recaption in one generation, and a rewrite target was scored already: with
the same checkpoint, instruction, stop at ``<Overall>``, budget, precision and greedy decoding, the rewriter's
reply is the scorer's (``aitqe_reply``), so generating it again only doubles the most expensive step. A stored
reply is reused when, and only when:

- the rewriter asks what the scorer asks: the default instruction, stopping after the overall score, and no
  code of the model's own (``trust_remote_code``) where the scorer loads none;
- the version the scores were stored with is the one a scorer with the rewriter's model, budget, precision
  and vision tower states (``scoring.aitqe.scorer_version``), and the scores come from the raw file the
  rewrite reads and passed their blocking checks;
- the row is the target's: the same key and the same caption, and the pair has an image now.

The candidate is the one the rewriter makes of that reply (``AitqeRewriter.answer``): the same caption, error
text, raw reply, scores and prompt hash, a cut-off or refused-to-parse reply included. A pair whose stored
reply is empty (no image, the pad-token refusal, a scorer that raised) goes to the rewriter: for the first two
it gives the same reason without asking the model, and for the last it asks. So the lineage is the one a
rewriter run writes, and its ``rewriter``, ``rewriter_version`` and ``prompt_hash`` name the call that made
the reply; which pairs came from the scores is counted (``ReplyReuse.reused``) for the run's metadata.

The decision is ``stored_replies`` over the call (``AitqeCall``): of the loaded rewriter locally, and on Ray
planned where the rewrite actors run, without loading the weights (``AitqeCall.planned``), so that targets
which all have a stored reply are answered by a rewriter built without its model (``load_model=False``). An
actor that loads the model checks its call is the planned one (``StoredReplies.checked``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import (DEFAULT_INSTRUCTION, OVERALL_MARKER, AitqeGenerator, AitqeRewriter,
                                               planned_precision, precision)
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.scoring.aitqe import REPLY_COLUMN, AitqeScorer, scorer_version
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY, raw_sha

SCORES_TABLE = "quality_scores"
STORED_COLUMNS = ("key", "caption")  # and REPLY_COLUMN where the scores have it

StoredScores = Callable[[], tuple[pd.DataFrame, dict[str, str]]]


@dataclass(frozen=True)
class AitqeCall:
    """What an ``aitqe`` rewriter asks its model, as far as the reply depends on it (``released``: the released
    checkpoint, ``AitqeGenerator``, not a chat VLM; ``dtype``: the precision it generates in)."""

    model: str
    max_new_tokens: int
    dtype: str
    vision_tower: str | None
    prompt: str
    stop_strings: tuple[str, ...] | None
    trust_remote_code: bool
    released: bool
    # what the AITQE scorer stores as its version when it asks this, resolved where the call is made or planned: the
    # model's cached snapshot is that node's (``model_ident``), a driver without the model reads it from here
    scorer_version: str

    @classmethod
    def of(cls, rewriter: AitqeRewriter) -> "AitqeCall":
        """The call of a rewriter whose model is loaded."""
        generator = rewriter.generator
        return cls._make(rewriter, precision(generator), isinstance(generator, AitqeGenerator))

    @classmethod
    def planned(cls, rewriter: AitqeRewriter, device: str | None) -> "AitqeCall":
        """The call ``rewriter`` (its model loaded or not) makes once its model loads in this process on
        ``device`` (None: the one this process picks): the layout from the checkpoint's config and the
        precision ``load_aitqe`` gives it, without reading the weights. Run where the model would load (a Ray
        task with the rewrite actors' resources): the precision depends on the GPU there."""
        return cls._make(rewriter, *planned_precision(rewriter.model, device, rewriter.dtype))

    @classmethod
    def _make(cls, rewriter: AitqeRewriter, dtype: str, released: bool) -> "AitqeCall":
        stop = tuple(rewriter.stop_strings) if rewriter.stop_strings else None
        return cls(rewriter.model, rewriter.max_new_tokens, dtype, rewriter.vision_tower, rewriter.prompt, stop,
                   rewriter.trust_remote_code, released,
                   scorer_version(rewriter.model, rewriter.max_new_tokens, dtype, rewriter.vision_tower))


@dataclass(frozen=True)
class StoredReplies:
    """The replies a rewrite may answer from (``replies``: key -> (caption, reply)), made by ``source`` for
    ``call``, which the rewriter ``asker`` (its ident) makes; or why none can serve (``why_not``; then ``replies``
    is empty)."""

    replies: dict[str, tuple[str | None, str]]
    source: str | None
    call: AitqeCall
    asker: str
    why_not: str | None = None

    def reply(self, key: str, caption: str | None, image=True) -> str | None:
        """The stored reply that answers this pair, if any: the same key and caption, and an image now."""
        stored = self.replies.get(key)
        if stored is None or image is None or stored[0] != caption:
            return None
        return stored[1]

    def for_pairs(self, keys, captions) -> "StoredReplies":
        """Only the replies that can answer these pairs (what a Ray rewrite ships to its actors)."""
        kept = {k: self.replies[k] for k, c in zip(keys, captions) if self.reply(k, c) is not None}
        return StoredReplies(kept, self.source, self.call, self.asker, self.why_not)

    def answers_all(self, keys, captions) -> bool:
        """Every pair has a stored reply (given its image is read again): the model need not load."""
        return all(self.reply(k, c) is not None for k, c in zip(keys, captions))

    def checked(self, rewriter: AitqeRewriter) -> "StoredReplies":
        """These replies where the loaded ``rewriter`` makes the call they were planned for, else none, saying
        why (a Ray actor whose GPU gives another precision than the planning task's)."""
        if not self.replies:
            return self
        loaded = AitqeCall.of(rewriter)
        if loaded == self.call and rewriter.ident == self.asker:
            return self
        return StoredReplies({}, None, loaded, rewriter.ident, f"the rewriter loaded as {loaded}, the replies were "
                                                               f"planned for {self.call}")

    def summary(self, reused: int, attempts: int) -> str:
        """For the run's metadata: how many candidates came from stored replies, and whose."""
        if self.why_not:
            return f"all {attempts} generated: {self.why_not}"
        return (f"{reused} of {attempts} from the replies {self.source} stored in {SCORES_TABLE} (the call "
                f"{self.asker} makes), the rest generated")


@dataclass
class Reuse:
    """Which candidates came from stored replies (``reused``: keys, so a batch split and retried is not
    counted twice), for the run's metadata; ``not_reused``: why a Ray actor answered none from them, where its
    loaded model asks otherwise than the driver planned (``StoredReplies.checked``)."""

    stored: StoredReplies
    reused: set[str] = field(default_factory=set)
    not_reused: set[str] = field(default_factory=set)

    def summary(self, attempts: int) -> str:
        said = self.stored.summary(len(self.reused), attempts)
        return "; ".join([said, *(f"an actor generated all its targets: {why}" for why in sorted(self.not_reused))])


class ReplyReuse(Rewriter):
    """``rewriter``, answering a pair from its stored reply (``stored``) when the pair is the one scored; the
    rest are rewritten by ``rewriter`` itself, as before."""

    def __init__(self, rewriter: AitqeRewriter, stored: StoredReplies):
        self.rewriter, self.stored, self.reuse = rewriter, stored, Reuse(stored)
        self.name, self.version, self.prompt = rewriter.name, rewriter.version, rewriter.prompt
        self.needs_images = rewriter.needs_images

    @property
    def reused(self) -> set[str]:
        return self.reuse.reused

    def no_caption_to_edit(self, caption: str | None) -> bool:
        return self.rewriter.no_caption_to_edit(caption)

    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        stored = [self.stored.reply(k, c, im) for k, c, im in zip(batch.keys, batch.captions, batch.images)]
        rest = [i for i, reply in enumerate(stored) if reply is None]
        candidates: list[RewriteCandidate | None] = [None] * len(batch)
        if rest:
            generated = self.rewriter.rewrite(PairBatch(
                [batch.keys[i] for i in rest], [batch.captions[i] for i in rest], [batch.images[i] for i in rest],
                [batch.original_sizes[i] for i in rest]))
            if len(generated) != len(rest):
                raise RuntimeError(f"{self.rewriter.ident} returned {len(generated)} candidates for {len(rest)} pairs")
            for i, candidate in zip(rest, generated):
                candidates[i] = candidate
        for i, reply in enumerate(stored):
            if reply is not None:
                candidates[i] = self.rewriter.answer(batch.captions[i], reply)
                self.reused.add(batch.keys[i])
        return candidates

    def summary(self, attempts: int) -> str:
        """For the run's metadata: how many candidates came from stored replies, and whose."""
        return self.reuse.summary(attempts)


def not_the_same_call(call: AitqeCall) -> str | None:
    """Why this call is asked otherwise than the AITQE scorer asks, whatever the scores say (None: the same)."""
    if call.prompt != DEFAULT_INSTRUCTION:
        return "the rewriter's instruction (rewriter.prompt) is not the scorer's"
    if call.stop_strings != (OVERALL_MARKER,):
        return f"the rewriter does not stop at {OVERALL_MARKER} as the scorer does"
    if call.trust_remote_code and not call.released:
        return "the rewriter runs the model's own code (trust_remote_code), the scorer does not"
    return None


def stored_replies(call: AitqeCall, asker: str, stored: StoredScores, raw_file: str | None) -> StoredReplies:
    """The replies in ``stored`` (the scores table's ``STORED_COLUMNS`` and reply, with its file metadata; read
    only when ``call`` is asked as the scorer asks) that are the very reply to ``call``, or why there are none.
    ``asker``: the ident of the rewriter making the call; ``raw_file``: the sha256 of the raw file the rewrite
    reads."""
    why_not = not_the_same_call(call)
    if why_not is not None:
        return StoredReplies({}, None, call, asker, why_not)
    scores, meta = stored()
    made_by = json.loads(meta.get("scorers") or "{}").get(AitqeScorer.name)
    would = call.scorer_version
    if made_by is None:
        why_not = f"{SCORES_TABLE} has no AITQE scores"
    elif made_by != would:
        why_not = f"{SCORES_TABLE} was made by aitqe@{made_by}, the rewriter asks as aitqe@{would}"
    elif meta.get(FAILED_CHECKS_KEY):
        why_not = f"{SCORES_TABLE} failed its blocking checks"
    elif raw_file is None or raw_sha(meta) != raw_file:
        why_not = f"{SCORES_TABLE} comes from another raw file than the rewrite reads"
    elif REPLY_COLUMN not in scores:
        why_not = f"{SCORES_TABLE} has no {REPLY_COLUMN}"
    if why_not is not None:
        return StoredReplies({}, None, call, asker, why_not)
    replies = {key: (caption, reply) for key, caption, reply
               in zip(scores["key"], scores["caption"], scores[REPLY_COLUMN]) if isinstance(reply, str)}
    return StoredReplies(replies, f"{AitqeScorer.name}@{made_by}", call, asker)


def reuse_stored_replies(rewriter: Rewriter, stored: StoredScores, raw_file: str | None) -> Rewriter:
    """``rewriter`` itself unless it is AITQE's; else a ``ReplyReuse`` of it, answering from ``stored`` where the
    scores say they hold its very call (``stored_replies``)."""
    if not isinstance(rewriter, AitqeRewriter):
        return rewriter
    return ReplyReuse(rewriter, stored_replies(AitqeCall.of(rewriter), rewriter.ident, stored, raw_file))
