"""Shard names become Dagster partition keys and warehouse file names, so they are strict."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

SHARD_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class InvalidShardName(ValueError):
    """A raw shard whose file name cannot be a partition key."""


def shard_key(url_or_name: str) -> str:
    """The partition key for a raw ``.tar``: its stem, restricted to ``[A-Za-z0-9_-]``.

    Anything else is rejected rather than sanitised: two different files must never
    map to one key, and a key must never reach outside the warehouse as a path.
    """
    name = PurePosixPath(url_or_name.rstrip("/")).name
    if not name.endswith(".tar"):
        raise InvalidShardName(f"{url_or_name!r} is not a .tar shard")
    stem = name[: -len(".tar")]
    if not SHARD_KEY_PATTERN.fullmatch(stem):
        raise InvalidShardName(
            f"shard file name {name!r} gives the key {stem!r}, which has characters outside "
            "[A-Za-z0-9_-] (or is empty / over 128 characters); rename the file, e.g. to "
            f"{re.sub(r'[^A-Za-z0-9_-]+', '_', stem)[:128] or 'shard'}.tar"
        )
    return stem


def validate_key(key: str) -> str:
    """Check a partition key before it is used to build a path."""
    if not SHARD_KEY_PATTERN.fullmatch(key or ""):
        raise InvalidShardName(f"{key!r} is not a valid shard key (allowed: [A-Za-z0-9_-], 1-128 chars)")
    return key
