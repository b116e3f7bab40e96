"""The one interface every quality signal implements: "score once, select later" (DataComp).

A scorer only measures; its raw columns are stored with its name and version, so decisions can be
re-run with new thresholds without re-running any model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import pandas as pd

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.columns import Bound, ScoreColumn


class Scorer(ABC):
    """A named, versioned signal over a batch of pairs.

    Subclasses set ``name`` (column prefix), ``version`` (bump when outputs change: the class's is its code's,
    which quality_scores' code version is made of; a model scorer's instance adds its model and settings), ``needs_images``
    (and ``reads_pixels = False`` if it reads only an image's size, in a way that does not depend on
    orientation: the shard is then verified at reduced scale, with the same statuses, and the images it
    gets are unloaded, in their stored mode and orientation), ``outputs`` (every column it can write)
    and ``bounds``. ``score`` returns exactly ``columns`` (the
    declared ones unless an instance narrows them), one row per pair in batch order; unknown values
    are NaN / None, never 0, with the reason in its declared error columns (``columns.error_column``;
    ``<name>_error`` for a scorer that declares none: ``columns.error_columns``).
    """

    name: str = ""
    version: str = "1"
    needs_images: bool = False
    reads_pixels: bool = True
    outputs: tuple[ScoreColumn, ...] = ()
    bounds: tuple[Bound, ...] = ()
    # what a user must know of this instance's scores (settings under which they are not the reference's):
    # quality_scores logs each in its step
    caveats: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.__dict__.get("_columns") or tuple(c.name for c in self.outputs)

    @columns.setter
    def columns(self, names) -> None:
        self._columns = tuple(names)

    @classmethod
    def from_profile(cls, profile) -> "Scorer | None":
        """This scorer as a ``ScoringProfile`` configures it; None when the profile leaves it out."""
        return cls()

    @classmethod
    def profile_columns(cls, profile) -> tuple[str, ...]:
        """The columns ``from_profile``'s scorer writes, known without building it (no model loaded)."""
        return tuple(c.name for c in cls.outputs)

    @abstractmethod
    def score(self, batch: PairBatch) -> pd.DataFrame:
        raise NotImplementedError

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"


NO_IMAGE, NO_CAPTION = "no image", "no caption"  # a pair's reason when the scorer had nothing to score
NO_INPUT = (NO_IMAGE, NO_CAPTION)


def scorable(batch: PairBatch) -> tuple[list[int], list[str | None]]:
    """The rows with an image and a non-blank caption, and per pair why it cannot be scored (or None)."""
    errors = [NO_IMAGE if image is None else NO_CAPTION if not (caption or "").strip() else None
              for image, caption in zip(batch.images, batch.captions)]
    return [i for i, error in enumerate(errors) if error is None], errors
