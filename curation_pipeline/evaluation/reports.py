"""Evaluation reports as JSON: NaN becomes null, and a copy is kept under ``<warehouse>/evaluation/``."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec

from curation_pipeline.values import plain_tree


def dumps(report: dict) -> str:
    return json.dumps(plain_tree(report), indent=2, ensure_ascii=False)


def save_report(report: dict, path: str | Path | None = None, *, warehouse_root: str | None = None,
                name: str = "report.json") -> str:
    """Write the report to ``path``, or to ``<warehouse_root>/evaluation/<name>``; returns where."""
    target = str(path) if path else f"{str(warehouse_root).rstrip('/')}/evaluation/{name}"
    fs, fs_path = fsspec.core.url_to_fs(target)
    parent = fs_path.rsplit("/", 1)[0] if "/" in fs_path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(fs_path, "w", encoding="utf-8") as handle:
        handle.write(dumps(report) + "\n")
    return target
