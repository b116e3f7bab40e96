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
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import (DEFAULT_INSTRUCTION, OVERALL_MARKER, AitqeGenerator, AitqeRewriter,
                                               precision)
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.scoring.aitqe import REPLY_COLUMN, AitqeScorer, scorer_version
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY, raw_sha

SCORES_TABLE = "quality_scores"
STORED_COLUMNS = ("key", "caption")  # and REPLY_COLUMN where the scores have it

StoredScores = Callable[[], tuple[pd.DataFrame, dict[str, str]]]


class ReplyReuse(Rewriter):
    """``rewriter``, answering a pair from its stored reply (``replies``: key -> (caption, reply)) when the pair is
    the one scored; the rest are rewritten by ``rewriter`` itself, as before. ``why_not``: why nothing is
    reused (then ``replies`` is empty)."""

    def __init__(self, rewriter: AitqeRewriter, replies: dict[str, tuple[str | None, str]], source: str | None,
                 why_not: str | None = None):
        self.rewriter, self.replies, self.source, self.why_not = rewriter, replies, source, why_not
        self.name, self.version, self.prompt = rewriter.name, rewriter.version, rewriter.prompt
        self.needs_images = rewriter.needs_images
        self.reused: set[str] = set()  # keys, so a batch split and retried is not counted twice

    def no_caption_to_edit(self, caption: str | None) -> bool:
        return self.rewriter.no_caption_to_edit(caption)

    def _stored(self, key: str, caption: str | None, image) -> str | None:
        stored = self.replies.get(key)
        if stored is None or image is None or stored[0] != caption:
            return None
        return stored[1]

    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        stored = [self._stored(k, c, im) for k, c, im in zip(batch.keys, batch.captions, batch.images)]
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
        if self.why_not:
            return f"all {attempts} generated: {self.why_not}"
        return (f"{len(self.reused)} of {attempts} from the replies {self.source} stored in {SCORES_TABLE} (the call "
                f"{self.rewriter.ident} makes), the rest generated")


def not_the_same_call(rewriter: AitqeRewriter) -> str | None:
    """Why this rewriter asks otherwise than the AITQE scorer does, whatever the scores say (None: it asks the
    same)."""
    if rewriter.prompt != DEFAULT_INSTRUCTION:
        return "the rewriter's instruction (rewriter.prompt) is not the scorer's"
    if rewriter.stop_strings != [OVERALL_MARKER]:
        return f"the rewriter does not stop at {OVERALL_MARKER} as the scorer does"
    if rewriter.trust_remote_code and not isinstance(rewriter.generator, AitqeGenerator):
        return "the rewriter runs the model's own code (trust_remote_code), the scorer does not"
    return None


def reuse_stored_replies(rewriter: Rewriter, stored: StoredScores, raw_file: str | None) -> Rewriter:
    """``rewriter`` itself unless it is AITQE's; else a ``ReplyReuse`` of it, answering from ``stored`` (the scores
    table's ``STORED_COLUMNS`` and reply, with its file metadata; read only when the rewriter asks as the scorer
    does) where the scores say they hold its very call. ``raw_file``: the sha256 of the raw file the rewrite
    reads."""
    if not isinstance(rewriter, AitqeRewriter):
        return rewriter
    why_not, replies, source = not_the_same_call(rewriter), {}, None
    if why_not is None:
        scores, meta = stored()
        made_by = json.loads(meta.get("scorers") or "{}").get(AitqeScorer.name)
        would = scorer_version(rewriter.model, rewriter.max_new_tokens, precision(rewriter.generator),
                               rewriter.vision_tower)
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
        else:
            source = f"{AitqeScorer.name}@{made_by}"
            replies = {key: (caption, reply) for key, caption, reply
                       in zip(scores["key"], scores["caption"], scores[REPLY_COLUMN]) if isinstance(reply, str)}
    return ReplyReuse(rewriter, replies, source, why_not)
