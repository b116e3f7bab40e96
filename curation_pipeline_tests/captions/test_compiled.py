"""The caption patterns' code cache gives the very pattern ``re.compile`` gives, from the cache when it is whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from curation_pipeline import cache_folder
from curation_pipeline.captions import compiled
from curation_pipeline.captions import patterns as P

TEXTS = ["Photo: Jane Doe | A shirt reading Photo by John Smith, a man with a © sign. © 2019 Jane Doe",
         "A dog on the beach. Credit: jane_doe", "Jane Doe/AP Photo", "A bus goes via Main Street",
         "Copyright (c) 2015-2019 Jane Doe. All rights reserved.", "Foto von Hans Müller/dpa",
         "Crédit photo : Jean Dupont"]


def _same(pattern: re.Pattern, reference: re.Pattern) -> None:
    assert pattern == reference  # equal patterns: the same text, flags and engine code, word for word
    assert (pattern.groups, pattern.groupindex) == (reference.groups, reference.groupindex)
    for text in TEXTS:
        assert [m.groupdict() for m in pattern.finditer(text)] == [m.groupdict() for m in reference.finditer(text)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "patterns"


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """The long patterns ``re`` parses from here on (it caches what it compiled: purged, so each is seen)."""
    seen: list[str] = []
    parse = re._parser.parse
    monkeypatch.setattr(re._parser, "parse",
                        lambda text, *args: (len(text) > 100_000 and seen.append(text)) or parse(text, *args))
    re.purge()
    return seen


def test_the_credit_pattern_is_stored_once_then_read_without_parsing(cache, parses):
    reference = re.compile(P._CREDIT_PATTERN, re.IGNORECASE)
    parses.clear()
    _same(compiled.compile(P._CREDIT_PATTERN, re.IGNORECASE, "credit"), reference)
    assert parses == [P._CREDIT_PATTERN]
    stored = list(cache.glob("credit.*.sre"))
    assert len(stored) == 1 and stored[0].stat().st_size > 4 * 200_000
    re.purge()
    _same(compiled.compile(P._CREDIT_PATTERN, re.IGNORECASE, "credit"), reference)
    assert parses == [P._CREDIT_PATTERN]  # not parsed again: read


def test_flags_are_part_of_what_is_stored(cache):
    text = r"(?P<who>jane|john) doe"
    for flags in (0, re.IGNORECASE, 0, re.IGNORECASE | re.ASCII):
        _same(compiled.compile(text, flags, "names"), re.compile(text, flags))
    assert compiled.compile(text, 0, "names").search("JANE DOE") is None
    assert compiled.compile(text, re.IGNORECASE, "names").search("JANE DOE").group("who") == "JANE"


def test_a_damaged_or_unwritable_cache_compiles_the_ordinary_way(cache):
    text = r"(?P<who>[A-Z]\w+)\s+(?:Doe|Smith)"
    compiled.compile(text, re.IGNORECASE, "names")
    (stored,) = cache.glob("names.*.sre")
    data = stored.read_bytes()
    stored.write_bytes(data[:-8] + bytes(8))  # the code's last words zeroed: its digest no longer matches
    _same(compiled.compile(text, re.IGNORECASE, "names"), re.compile(text, re.IGNORECASE))
    assert stored.read_bytes() == data  # written again, whole
    stored.write_bytes(data.replace(b'"groups": 1', b'"groups": 0'))  # its header altered: as damaged
    _same(compiled.compile(text, re.IGNORECASE, "names"), re.compile(text, re.IGNORECASE))
    assert stored.read_bytes() == data
    stored.write_bytes(data[:10])  # cut short
    _same(compiled.compile(text, re.IGNORECASE, "names"), re.compile(text, re.IGNORECASE))
    for other in (r"\w+ Jones", r"\w+ Brown", r"\w+ Green", r"\w+ White", r"\w+ Black"):  # the oldest go
        compiled.compile(other, 0, "names")
    assert len(list(cache.glob("names.*.sre"))) == compiled.KEPT_PER_NAME
    abandoned = cache / f".{stored.name}.killed"  # a writer killed before its rename, long ago
    abandoned.write_bytes(b"x")
    os.utime(abandoned, (1, 1))
    compiled.compile(r"\w+ Grey", 0, "names")
    assert not abandoned.exists()
    for path in cache.iterdir():
        path.unlink()
    cache.rmdir()
    cache.write_text("not a folder")  # no cache can be written (a read-only folder is writable by root)
    _same(compiled.compile(text, 0, "names"), re.compile(text))


def test_a_fresh_process_reads_what_another_stored(cache):
    """The way it saves time: a second process finds the code the first one generated, parses no credit pattern,
    and matches alike."""
    script = ("import re, sys; parse = re._parser.parse; seen = []; "
              "re._parser.parse = lambda text, *a: seen.append(len(text)) or parse(text, *a); "
              "from curation_pipeline.captions import patterns as P; "
              "print([m.span() for m in P.CREDIT_RE.finditer(sys.argv[1])], max(seen) > 200_000)")
    env = {**os.environ, "CURATE_CACHE_DIR": str(cache.parent)}
    first, second = (subprocess.run([sys.executable, "-c", script, TEXTS[0]], env=env, capture_output=True,
                                    text=True, check=True).stdout for _ in range(2))
    expected = [m.span() for m in re.compile(P._CREDIT_PATTERN, re.IGNORECASE).finditer(TEXTS[0])]
    assert (first, second) == (f"{expected} True\n", f"{expected} False\n")


def test_the_cache_folder_is_named_or_the_users(monkeypatch, tmp_path):
    monkeypatch.delenv("CURATE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == tmp_path / "curation-pipeline"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG spec says
    assert cache_folder() == Path.home() / ".cache" / "curation-pipeline"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "named"))
    assert cache_folder() == tmp_path / "named"
