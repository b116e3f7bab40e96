"""The kept selection as DataComp's subset file: apply a curation to the original pool.

DataComp's ``resharder.py`` (``--subset_file``) reads a ``.npy`` of 128-bit uids as a
structured array of two little-endian uint64 (``np.dtype("u8,u8")``: high, low half of
``int(uid, 16)``), sorted, and keeps a sample when ``np.searchsorted`` finds its uid. The uid
is the source sample's own json ``uid`` (32 hex digits), which the curated sidecar carries
under ``source``.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

UID_DTYPE = np.dtype("u8,u8")  # as datacomp/resharder.py: u16 = np.dtype("u8,u8")
_UID = re.compile(r"^[0-9a-fA-F]{1,32}$")


def uid_pair(uid: str) -> tuple[int, int]:
    """(high, low) 64-bit halves of a hex uid, as DataComp's ``divmod(int(uid, 16), 2**64)``."""
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise ValueError(f"uid {uid!r} is not 1-32 hex digits")
    return divmod(int(uid, 16), 2**64)


def uid_array(uids: Iterable[str]) -> np.ndarray:
    """Sorted, de-duplicated structured array in DataComp's subset format."""
    pairs = sorted({uid_pair(u) for u in uids})
    return np.array(pairs, dtype=UID_DTYPE) if pairs else np.zeros(0, dtype=UID_DTYPE)


@dataclass
class UidExport:
    uids: list[str] = field(default_factory=list)
    shards: int = 0
    samples: int = 0
    without_uid: list[str] = field(default_factory=list)  # shard/key of kept samples whose source has no uid
    bad_uid: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)  # shard/key of rewritten samples: left out, or exported


def kept_uids(curated: Iterable[Path], rewritten: bool = False) -> UidExport:
    """The ``source.uid`` of every sample in the given curated tars (the published selection). A rewritten
    sample's uid only with ``rewritten``: DataComp's resharder copies a selected sample from the original pool,
    so its uid would bring back the weak original caption the rewrite replaced."""
    out = UidExport()
    for path in curated:
        out.shards += 1
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not (info.isreg() and info.name.endswith(".json")):
                    continue
                out.samples += 1
                meta = json.loads(tar.extractfile(info).read().decode("utf-8"))
                where = f"{meta.get('source_shard')}/{meta.get('key')}"
                if meta.get("rewritten"):
                    out.rewritten.append(where)
                    if not rewritten:
                        continue
                uid = (meta.get("source") or {}).get("uid")
                if uid is None:
                    out.without_uid.append(where)
                    continue
                try:
                    uid_pair(uid)
                except ValueError:
                    out.bad_uid.append(where)
                    continue
                out.uids.append(uid)
    return out


def write_subset(path: str | Path, uids: Iterable[str]) -> np.ndarray:
    """Write DataComp's subset ``.npy`` (``np.save`` of the sorted structured array)."""
    array = uid_array(uids)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temp file behind
        raise
    return array
