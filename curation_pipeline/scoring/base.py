"""The one interface every quality signal implements.

"Score once, select later" (DataComp): a scorer only measures; it never decides.
Its columns are stored raw with its name and version so that decisions can be
re-run with new thresholds without re-running any model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import pandas as pd

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.columns import Bound, ScoreColumn


class Scorer(ABC):
    """A named, versioned signal over a batch of pairs.

    Subclasses set ``name`` (short, snake_case, used as a column prefix), ``version``
    (bump it when outputs change, so stale scores are detectable), ``needs_images``,
    ``outputs`` (every column it can write, declared once: meaning, type, range) and
    ``bounds`` (what its columns can decide). ``columns`` are the exact output columns
    of this instance, in order: the declared ones unless a model narrows them (e.g. the
    MLM metrics asked for). ``score`` returns a DataFrame with exactly ``columns``, one
    row per pair in batch order (RangeIndex). Unknown values are NaN / None, never 0; a
    scorer that can say why a value is missing adds a ``<name>_error`` string column.
    """

    name: str = ""
    version: str = "1"
    needs_images: bool = False
    outputs: tuple[ScoreColumn, ...] = ()
    bounds: tuple[Bound, ...] = ()

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

    @abstractmethod
    def score(self, batch: PairBatch) -> pd.DataFrame:
        raise NotImplementedError

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"
