"""The one interface every quality signal implements.

"Score once, select later" (DataComp): a scorer only measures; it never decides.
Its columns are stored raw with its name and version so that decisions can be
re-run with new thresholds without re-running any model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import pandas as pd

from curation_pipeline.pairs import PairBatch


class Scorer(ABC):
    """A named, versioned signal over a batch of pairs.

    Subclasses set ``name`` (short, snake_case, used as a column prefix), ``version``
    (bump it when outputs change, so stale scores are detectable), ``needs_images``,
    and ``columns`` (the exact output columns, in order). ``score`` returns a
    DataFrame with exactly ``columns``, one row per pair in batch order
    (RangeIndex). Unknown values are NaN / None, never 0; a scorer that can say why
    a value is missing adds a ``<name>_error`` string column.
    """

    name: str = ""
    version: str = "1"
    needs_images: bool = False
    columns: tuple[str, ...] = ()

    @abstractmethod
    def score(self, batch: PairBatch) -> pd.DataFrame:
        raise NotImplementedError

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"
