"""Joins on a sample key alone: webdataset keys are per shard (000000, 000001, ... repeat in every
shard), so a key names one sample only where it occurs in a single shard of the other table."""

from __future__ import annotations

from typing import Iterable

import pandas as pd

EXAMPLES = 5


def require_unambiguous_keys(keys: Iterable, other: pd.DataFrame, what: str, where: str) -> None:
    """Raise unless each of ``keys`` (``what`` names them, e.g. the file) occurs in at most one shard
    of ``other`` (``where``). Keys compare as text; an ``other`` without shards cannot be ambiguous."""
    if "shard" not in other or "key" not in other:
        return
    wanted = {str(k) for k in keys}
    found = other[["shard", "key"]].assign(key=other["key"].astype(str))
    shards = found[found["key"].isin(wanted)].drop_duplicates().groupby("key")["shard"].nunique()
    ambiguous = sorted(shards[shards > 1].index)
    if ambiguous:
        raise ValueError(f"{what} names samples by key alone, but {len(ambiguous)} of its keys are in more than "
                         f"one shard of {where} (e.g. {', '.join(ambiguous[:EXAMPLES])}): keys repeat across "
                         "shards, so add a 'shard' column naming each sample's shard")
