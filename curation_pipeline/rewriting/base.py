"""The one interface every caption rewriter implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from curation_pipeline.pairs import PairBatch
from curation_pipeline.validation.lengths import words


@dataclass
class RewriteCandidate:
    """What a rewriter proposed for one pair, before verification: ``caption`` (None, with ``error``
    saying why, when nothing usable came; ``error`` with a caption: what else the reply got wrong, recorded
    with the verdict), ``raw`` (the untouched output, for lineage) and ``scores`` (any the rewriter itself
    emitted: AITQE rates while it rewrites)."""

    caption: str | None
    error: str | None = None
    raw: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    prompt_hash: str | None = None  # of the prompt this pair was actually asked with; None: the rewriter's


def no_caption_to_edit(caption: str | None, image_token: str | None = None) -> bool:
    """Whether a pair has no caption to edit: no words once the model's image placeholder (``image_token``,
    which a rewriter removes before asking) is gone. Its candidate is then a fresh caption, not an edit:
    the rewriter asks it another prompt, and its edit ratio, length ratio and similarity are not measured.
    The one definition the rewriters (``Rewriter.no_caption_to_edit``), the lineage and the judge use."""
    text = caption or ""
    if image_token:
        text = text.replace(image_token, "")
    return not words(text)


def hash_prompt(prompt: str | None) -> str | None:
    return None if prompt is None else hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


# Each rewriter kind's code version, known without importing its module (a model rewriter's imports torch):
# bump when the same inputs give other rewrites (each class says why each was). rewritten_captions' code
# version is made of the configured kind's; a model rewriter's ``version`` adds its model and settings.
CODE_VERSIONS = {"cleaner": "19", "vlm": "6", "aitqe": "10"}


class Rewriter(ABC):
    """Proposes a minimally changed caption for each pair of a batch (one candidate per pair, in order).
    Subclasses set ``name``, ``version`` (``CODE_VERSIONS``' for their kind), ``needs_images`` and ``prompt``
    (None for rule-based ones)."""

    name: str = ""
    version: str = "1"
    needs_images: bool = False
    prompt: str | None = None

    @abstractmethod
    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        raise NotImplementedError

    def no_caption_to_edit(self, caption: str | None) -> bool:
        """Whether this rewriter sees no caption to edit in ``caption`` (so it writes a fresh one); a
        model rewriter also discounts its image placeholder."""
        return no_caption_to_edit(caption)

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def prompt_hash(self) -> str | None:
        """Recorded with every rewrite so a changed prompt is visible in lineage (a candidate's own
        ``prompt_hash`` wins: a model rewriter asks a pair without a caption another prompt)."""
        return hash_prompt(self.prompt)
