"""Text that is safe to store: every string a shard can smuggle in must encode as UTF-8.

Python strings can hold lone surrogates (``"\\ud800"``): JSON escapes decode to them, and
tar member names that are not UTF-8 decode to them (``surrogateescape``). UTF-8 cannot
encode them, so Parquet, DuckDB and the curated tar would fail on the whole shard. Error
texts from libraries can hold memory addresses (``<_io.BytesIO object at 0x7f...>``), which
would make two identical runs write different tables.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
_ADDRESS = re.compile(r"<([^<>]*?) at 0x[0-9a-fA-F]+>")
REPLACEMENT = "\ufffd"


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    """Lone surrogates become U+FFFD (valid pairs never reach a Python str as surrogates)."""
    return _SURROGATE.sub(REPLACEMENT, text)


def strip_addresses(text: str) -> str:
    """``<foo object at 0x7f..>`` -> ``<foo object>``: the same error reads the same on every run."""
    return _ADDRESS.sub(r"<\1>", text)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception, storable and identical across runs."""
    return replace_surrogates(strip_addresses(f"{type(exc).__name__}: {exc}"))[:limit]


def printable_name(name: str) -> str:
    """A member name as it can be stored and shown: undecodable bytes as ``\\xNN`` escapes."""
    if not has_surrogates(name):
        return name
    raw = name.encode("utf-8", "surrogateescape") if all(
        "\udc80" <= c <= "\udcff" for c in _SURROGATE.findall(name)) else None
    if raw is not None:
        return raw.decode("utf-8", "backslashreplace")
    return name.encode("utf-8", "backslashreplace").decode("utf-8")
