"""The one interface every caption rewriter implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from curation_pipeline.pairs import PairBatch


@dataclass
class RewriteCandidate:
    """What a rewriter proposed for one pair, before verification: ``caption`` (None, with ``error``
    saying why, when nothing usable came), ``raw`` (the untouched output, for lineage) and ``scores``
    (any the rewriter itself emitted: AITQE rates while it rewrites)."""

    caption: str | None
    error: str | None = None
    raw: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    prompt_hash: str | None = None  # of the prompt this pair was actually asked with; None: the rewriter's


def hash_prompt(prompt: str | None) -> str | None:
    return None if prompt is None else hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


class Rewriter(ABC):
    """Proposes a minimally changed caption for each pair of a batch (one candidate per pair, in order).
    Subclasses set ``name``, ``version``, ``needs_images`` and ``prompt`` (None for rule-based ones)."""

    name: str = ""
    version: str = "1"
    needs_images: bool = False
    prompt: str | None = None

    @abstractmethod
    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        raise NotImplementedError

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def prompt_hash(self) -> str | None:
        """Recorded with every rewrite so a changed prompt is visible in lineage (a candidate's own
        ``prompt_hash`` wins: a model rewriter asks a pair without a caption another prompt)."""
        return hash_prompt(self.prompt)
