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


CACHE_ENV = "CURATE_CACHE_DIR"


def cache_folder() -> Path:
    """Where what is made once per machine and may be made again goes (the sample shards of an installed package,
    compiled caption patterns): ``$CURATE_CACHE_DIR``, else this package's folder in the user's cache
    (``$XDG_CACHE_HOME``, an absolute path as the XDG spec asks, else ``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "curation-pipeline"
