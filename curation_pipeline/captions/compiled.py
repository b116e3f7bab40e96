"""The largest caption patterns compiled once per machine, not once per process.

``re`` parses a pattern and generates its engine code in Python: the credit pattern (250,000 characters)
takes a third of a second, paid again by every process that reads a caption (a first ``curate run``, each
step process of the multiprocess executor, each Ray actor). ``compile`` keeps that code in the package's cache
folder (``cache_folder``), keyed by the pattern, its flags and this interpreter's regex engine, and hands it to
the engine (``_sre.compile``) as ``re.compile`` itself does once it has generated it: an equal pattern object
(the same code), in milliseconds. Anything unexpected (another Python, a missing, unreadable or damaged file,
code the engine rejects, a read-only cache) compiles the pattern the ordinary way; nothing else changes.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import time
from pathlib import Path

from curation_pipeline import cache_folder

# what a stored file holds and how ``compile`` builds a pattern from it: a change to either must change this
_FORMAT = 1
_HEADER = struct.Struct("<I")  # the length of the JSON header that precedes the code
KEPT_PER_NAME = 4  # files of one name: two checkouts or interpreters do not evict each other's on every run
_ABANDONED_S = 3600.0  # a temporary file that old was left by a process killed while writing


def compile(pattern: str, flags: int, name: str) -> re.Pattern:  # noqa: A001 - as re.compile
    """``re.compile(pattern, flags)``, its generated code read from the cache when there, else stored there under
    ``name`` (the oldest files of that name beyond ``KEPT_PER_NAME`` go)."""
    try:
        import _sre
        from re import _compiler, _parser

        if array.array("I").itemsize != _sre.CODESIZE:
            raise ValueError("the engine's code words are not C unsigned ints here")
        flags = int(flags)
        path = _path(pattern, flags, name, _sre)
        found = _read(path)
        if found is None:
            tree = _parser.parse(pattern, flags)
            code = _compiler._code(tree, flags)
            groupindex = dict(tree.state.groupdict)
            indexgroup: list[str | None] = [None] * tree.state.groups
            for group, index in groupindex.items():
                indexgroup[index] = group
            found = (flags | tree.state.flags, code, tree.state.groups - 1, groupindex, indexgroup)
            _write(path, *found)
        all_flags, code, groups, groupindex, indexgroup = found
        return _sre.compile(pattern, all_flags, code, groups, groupindex, tuple(indexgroup))
    except Exception:  # noqa: BLE001 - a cache, never a reason to fail: the ordinary way
        return re.compile(pattern, flags)


def _path(pattern: str, flags: int, name: str, sre) -> Path:
    key = hashlib.sha256(f"{_FORMAT}\0{sys.version}\0{sre.MAGIC}\0{sre.CODESIZE}\0{flags}\0".encode())
    key.update(pattern.encode("utf-8", "surrogatepass"))
    return cache_folder() / "patterns" / f"{name}.{sys.implementation.cache_tag}.{key.hexdigest()[:32]}.sre"


def _digest(header: dict, body: bytes) -> str:
    described = json.dumps({k: v for k, v in header.items() if k != "digest"}, sort_keys=True).encode()
    return hashlib.sha256(described + b"\0" + body).hexdigest()


def _read(path: Path) -> tuple[int, list[int], int, dict[str, int], list[str | None]] | None:
    """The stored code and groups, or None when absent or not whole (its digest does not match)."""
    try:
        data = path.read_bytes()
        (size,) = _HEADER.unpack_from(data)
        header = json.loads(data[_HEADER.size:_HEADER.size + size])
        body = data[_HEADER.size + size:]
        if _digest(header, body) != header["digest"]:
            return None
        code = array.array("I")
        code.frombytes(body)
        return header["flags"], code.tolist(), header["groups"], header["groupindex"], header["indexgroup"]
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _write(path: Path, flags: int, code: list[int], groups: int, groupindex: dict[str, int],
           indexgroup: list[str | None]) -> None:
    """Written whole or not at all (a temporary file renamed); then the oldest of its name beyond
    ``KEPT_PER_NAME``, and temporary files abandoned long ago, go."""
    body = array.array("I", code).tobytes()
    header = {"flags": flags, "groups": groups, "groupindex": groupindex, "indexgroup": indexgroup}
    header["digest"] = _digest(header, body)
    encoded = json.dumps(header).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_HEADER.pack(len(encoded)) + encoded + body)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        same_name = path.name.rsplit(".", 2)[0]  # <name>.<cache tag>
        for old in _by_age(path.parent.glob(f"{same_name}.*.sre"))[KEPT_PER_NAME:]:
            old.unlink(missing_ok=True)
        for abandoned in path.parent.glob(f".{same_name}.*"):
            if time.time() - abandoned.stat().st_mtime > _ABANDONED_S:
                abandoned.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full cache: the next process generates the code again


def _by_age(paths) -> list[Path]:
    """Newest first; one removed meanwhile (by another process) is left out."""
    aged = []
    for path in paths:
        try:
            aged.append((path.stat().st_mtime, path))
        except OSError:
            continue
    return [path for _, path in sorted(aged, key=lambda item: item[0], reverse=True)]
