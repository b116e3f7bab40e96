"""Curate image-text pairs from webdataset shards: score, rewrite weak captions, keep the rest.

Domain packages (no Dagster imports): ``shards`` (read raw tars, write curated tars),
``scoring`` (per-pair quality signals), ``decisions`` (keep / rewrite / drop),
``rewriting`` (caption rewriters and their verification), ``validation`` (Great
Expectations checks), ``reporting`` (DuckDB report), ``storage`` (the Parquet warehouse).
The Dagster layer is ``assets``, ``checks``, ``automation``, ``resources`` and
``definitions``.
"""


import os
from pathlib import Path

__version__ = "0.1.0"


def cache_folder() -> Path:
    """This package's folder in the user's cache (``$XDG_CACHE_HOME``, else ``~/.cache``): what is made once per
    machine and may be made again (the sample shards of an installed package, compiled caption patterns)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "curation-pipeline"
