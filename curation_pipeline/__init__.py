"""Curate image-text pairs from webdataset shards: score, rewrite weak captions, keep the rest.

Domain packages (no Dagster imports): ``shards`` (read raw tars, write curated tars),
``scoring`` (per-pair quality signals), ``decisions`` (keep / rewrite / drop),
``rewriting`` (caption rewriters and their verification), ``validation`` (Great
Expectations checks), ``reporting`` (DuckDB report), ``storage`` (the Parquet warehouse).
The Dagster layer is ``assets``, ``checks``, ``automation``, ``resources`` and
``definitions``.
"""

__version__ = "0.1.0"
