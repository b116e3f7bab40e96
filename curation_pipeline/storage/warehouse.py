"""The Parquet warehouse: one file per (table, shard), written atomically.

Every write goes to a temporary name beside the target and is renamed into place,
so a crash leaves the previous file or none, and re-running a partition replaces
it. Paths go through fsspec, so the root can be a local folder or object storage.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import IO, Iterator

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation_pipeline.shards.keys import SHARD_KEY_PATTERN, validate_key

TABLES = ("pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions", "skips")


class Warehouse:
    """Where every stage's per-shard tables and the curated shards live."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)

    @property
    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def _join(self, *parts: str) -> str:
        return "/".join([self._root_path, *parts])

    def table_path(self, table: str, shard: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown warehouse table {table!r}; known: {', '.join(TABLES)}")
        return self._join(table, f"{validate_key(shard)}.parquet")

    def table_glob(self, table: str) -> str:
        return self._join(table, "*.parquet")

    @property
    def curated_dir(self) -> str:
        return self._join("curated")

    def curated_path(self, shard: str) -> str:
        return self._join("curated", f"{validate_key(shard)}.tar")

    @property
    def report_db_path(self) -> str:
        return self._join("quality.duckdb")

    def local_path(self, path: str) -> str:
        """Absolute local path, for DuckDB views (remote roots need DuckDB's httpfs)."""
        return os.path.abspath(path) if self.is_local else f"{self.fs.unstrip_protocol(path)}"

    @contextlib.contextmanager
    def atomic_open(self, path: str) -> Iterator[IO[bytes]]:
        """Write to a temporary sibling, then rename: readers never see a partial file."""
        parent, name = path.rsplit("/", 1)
        self.fs.makedirs(parent, exist_ok=True)
        for orphan in self.fs.glob(f"{parent}/.tmp-*-{name}.partial"):  # left by a killed writer of this file
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(orphan)
        # ".partial", never ".parquet"/".tar": globs that readers and DuckDB use must not see it
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{name}.partial"
        try:
            with self.fs.open(tmp, "wb") as handle:
                yield handle
                if hasattr(handle, "flush"):
                    handle.flush()
                if hasattr(handle, "fileno"):
                    with contextlib.suppress(OSError, ValueError, AttributeError):
                        os.fsync(handle.fileno())
            self.fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(tmp)
            raise

    def write_table(self, table: str, shard: str, df: pd.DataFrame,
                    metadata: dict[str, str] | None = None) -> str:
        path = self.table_path(table, shard)
        arrow = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        if metadata:
            merged = dict(arrow.schema.metadata or {})
            merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
            arrow = arrow.replace_schema_metadata(merged)
        with self.atomic_open(path) as handle:
            pq.write_table(arrow, handle, compression="zstd")
        return path

    def read_table(self, table: str, shard: str) -> pd.DataFrame:
        path = self.table_path(table, shard)
        if not self.fs.exists(path):
            raise FileNotFoundError(
                f"{table} for shard {shard!r} is not in the warehouse ({path}); materialize it first"
            )
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle).to_pandas()

    def table_metadata(self, table: str, shard: str) -> dict[str, str]:
        with self.fs.open(self.table_path(table, shard), "rb") as handle:
            meta = pq.read_schema(handle).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"pandas")}

    def has_table(self, table: str, shard: str) -> bool:
        return self.fs.exists(self.table_path(table, shard))

    def shards(self, table: str) -> list[str]:
        stems = (p.rsplit("/", 1)[1][: -len(".parquet")] for p in self.fs.glob(self.table_glob(table)))
        return sorted(s for s in stems if SHARD_KEY_PATTERN.fullmatch(s))

    def table_files(self, table: str) -> list[str]:
        """Paths of a table's shard files (never a writer's temp file), for DuckDB."""
        return [self.local_path(self.table_path(table, shard)) for shard in self.shards(table)]

    def read_all(self, table: str, exclude: str | None = None) -> pd.DataFrame:
        frames = [self.read_table(table, s) for s in self.shards(table) if s != exclude]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
