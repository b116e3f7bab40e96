"""Evaluation reports as JSON: NaN becomes null, and a copy is kept under ``<warehouse>/evaluation/``."""

from __future__ import annotations

import json
from pathlib import Path

from curation_pipeline.values import plain_tree


def dumps(report: dict) -> str:
    return json.dumps(plain_tree(report), indent=2, ensure_ascii=False)


def save_report(report: dict, path: str | Path | None = None, *, warehouse_root: str | None = None,
                name: str = "report.json") -> str:
    """Write the report to ``path``, or to ``<warehouse_root>/evaluation/<name>``; returns where. As every
    warehouse write: made whole first (a report that cannot be serialised leaves the old one), then written
    to a temporary sibling, read back on object storage and renamed (``Warehouse.atomic_open``), never
    creating a bucket."""
    from curation_pipeline.storage.warehouse import Warehouse

    target = str(path) if path else f"{str(warehouse_root).rstrip('/')}/evaluation/{name}"
    text = dumps(report) + "\n"
    folder, _, file_name = target.rstrip("/").rpartition("/")
    where = Warehouse(folder or ".")
    with where.atomic_open(where.join(file_name)) as handle:
        handle.write(text.encode("utf-8"))
    return target
