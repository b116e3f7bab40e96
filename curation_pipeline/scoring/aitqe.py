"""AITQE's own verdict as a score: its 1-10 overall rating and its recaption, stored once.

The policy can take ``aitqe_overall`` as its quality column (the paper publishes no cut-off; its
examples suggest 6-8). AITQE rates and recaptions in one generation, so the reply itself is stored too
(``aitqe_reply``): the ``aitqe`` rewriter takes its candidate from it instead of generating the same
reply again, where the version recorded with the scores says it would ask the same
(``rewriting.reuse``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation_pipeline.models.loading import model_ident
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import (AITQE_MAX_NEW_TOKENS, DEFAULT_INSTRUCTION, OVERALL_MARKER,
                                               aitqe_instruction, load_aitqe, parse_aitqe_output, precision,
                                               skip_refused)
from curation_pipeline.rewriting.vlm import generate_in_batches
from curation_pipeline.rewriting.base import RewriteCandidate
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.columns import ScoreColumn, error_column

REPLY_COLUMN = "aitqe_reply"


def scorer_version(model: str, max_new_tokens: int, dtype: str, vision_tower: str | None = None) -> str:
    """What ``AitqeScorer.version`` says of a scorer that generates with these settings (``dtype``: the loaded
    model's, ``precision``): the one place its format is defined, as ``rewriting.reuse`` compares against it.
    The instruction and the stop at ``<Overall>`` are fixed in the scorer, so they are implied."""
    # 2: images as the reference decodes them (model_image); 3: a caption holding the released checkpoint's
    # pad token gets no score, as the reference refuses it (AitqeGenerator.refusal); 4: a recaption holding
    # escaped quotes is no longer rejected as ambiguous (rewriting.aitqe._quoted_value); 5: a cut-off reply's
    # \uXXXX escapes in the recaption are decoded, as in a complete reply; 6: the reply is stored (aitqe_reply),
    # with the precision (and a vision tower given in place of the checkpoint's) that generated it; 7: a reply
    # cut off at <Overall> rates with the value just before the marker, not an "Overall Score" inside an ambiguous
    # recaption, and an unquoted recaption followed by another key than the overall is ambiguous
    # (rewriting.aitqe.parse_aitqe_output); 8: a caption holding <img_start>/<img_end> gets no score (nor reply),
    # as the reference's processor would rewrite it or load an image it names (AitqeGenerator.refusal); 9: a score
    # the reply ends inside (no <Overall> after it) is NaN, it may be the "1" of "10"; a score value must be the
    # number alone ("8 dogs", "3.7e1" are none); a recaption that is not text is an error (parse_aitqe_output)
    tower = f":tower={model_ident(vision_tower)}" if vision_tower else ""  # an id with its cached snapshot's commit
    return f"{AitqeScorer.version}:{model_ident(model)}:max_new={max_new_tokens}:dtype={dtype}{tower}"


class AitqeScorer(Scorer):
    """``aitqe_overall`` (1-10, NaN when the reply has none), ``aitqe_recaption``, ``aitqe_reply`` (the reply
    both were read from; None where the model was not asked), ``aitqe_error``."""

    name = "aitqe"
    version = "9"  # the code's (``scorer_version`` says why each); an instance's adds its model and settings
    outputs = (ScoreColumn("aitqe_overall", "AITQE's overall rating of the pair, 1-10.", range=(1, 10)),
               ScoreColumn("aitqe_recaption", "AITQE's recaption of the image.", "str"),
               ScoreColumn(REPLY_COLUMN, "AITQE's reply as generated, which the rating and recaption were read from "
                           "(empty where the model was not asked); the aitqe rewriter reuses it.", "str",
                           sidecar=False),
               error_column("aitqe"))
    needs_images = True

    @classmethod
    def from_profile(cls, profile) -> "AitqeScorer | None":
        if not profile.aitqe_model:
            return None
        return cls(profile.aitqe_model, device=profile.device, batch_size=profile.batch_size,
                   vision_tower=profile.aitqe_vision_tower)

    @classmethod
    def profile_columns(cls, profile) -> tuple[str, ...]:
        return super().profile_columns(profile) if profile.aitqe_model else ()  # left out without a model

    def __init__(self, model: str, *, batch_size: int = 8, max_new_tokens: int = AITQE_MAX_NEW_TOKENS,
                 device: str | None = None, dtype=None, vision_tower: str | None = None):
        self.batch_size = batch_size
        self.generator = load_aitqe(model, max_new_tokens=max_new_tokens, stop_strings=[OVERALL_MARKER],
                                    device=device, dtype=dtype, vision_tower=vision_tower)
        self.version = scorer_version(model, max_new_tokens, precision(self.generator), vision_tower)

    def score(self, batch: PairBatch) -> pd.DataFrame:
        def instruction(caption):
            return aitqe_instruction(self.generator, DEFAULT_INSTRUCTION, caption)

        def candidate(reply):
            parsed = parse_aitqe_output(reply)
            return RewriteCandidate(parsed.recaption, error=parsed.error, raw=reply, scores={"o": parsed.overall})

        results = skip_refused(self.generator, batch, instruction, lambda rest: generate_in_batches(
            rest, self.batch_size, instruction, self.generator.generate, candidate))
        overall = [r.scores.get("o", np.nan) if r.scores else np.nan for r in results]
        return pd.DataFrame({"aitqe_overall": np.array(overall, dtype=float),
                             "aitqe_recaption": pd.Series([r.caption for r in results], dtype=object),
                             REPLY_COLUMN: pd.Series([None if r.raw is None else str(r.raw) for r in results],
                                                     dtype=object),
                             "aitqe_error": pd.Series([r.error for r in results], dtype=object)})
