"""The caption patterns' code cache gives the very pattern ``re.compile`` gives, from the cache when it is whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from curation_pipeline.captions import compiled
from curation_pipeline.captions import patterns as P

TEXTS = ["Photo: Jane Doe | A shirt reading Photo by John Smith, a man with a © sign. © 2019 Jane Doe",
         "A dog on the beach. Credit: jane_doe", "Jane Doe/AP Photo", "A bus goes via Main Street",
         "Copyright (c) 2015-2019 Jane Doe. All rights reserved.", "Foto von Hans Müller/dpa",
         "Crédit photo : Jean Dupont"]


def _same(pattern: re.Pattern, reference: re.Pattern) -> None:
    assert (pattern.pattern, pattern.flags, pattern.groups, pattern.groupindex) == \
        (reference.pattern, reference.flags, reference.groups, reference.groupindex)
    for text in TEXTS:
        assert [m.span() for m in pattern.finditer(text)] == [m.span() for m in reference.finditer(text)], text
        assert [m.groupdict() for m in pattern.finditer(text)] == [m.groupdict() for m in reference.finditer(text)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "curation-pipeline" / "patterns"


def test_the_credit_pattern_is_stored_once_then_read_without_parsing(cache, monkeypatch):
    reference = re.compile(P._CREDIT_PATTERN, re.IGNORECASE)
    _same(compiled.compile(P._CREDIT_PATTERN, re.IGNORECASE, "credit"), reference)
    stored = list(cache.glob("credit.*.sre"))
    assert len(stored) == 1 and stored[0].stat().st_size > 4 * 200_000

    def parse(*args):
        raise AssertionError("parsed again, though its code is stored")

    monkeypatch.setattr(re._parser, "parse", parse)
    re.purge()  # not re's own cache either
    _same(compiled.compile(P._CREDIT_PATTERN, re.IGNORECASE, "credit"), reference)


def test_a_damaged_or_unwritable_cache_compiles_the_ordinary_way(cache):
    text = r"(?P<who>[A-Z]\w+)\s+(?:Doe|Smith)"
    compiled.compile(text, re.IGNORECASE, "names")
    (stored,) = cache.glob("names.*.sre")
    data = stored.read_bytes()
    stored.write_bytes(data[:-8] + bytes(8))  # the code's last words zeroed: its digest no longer matches
    _same(compiled.compile(text, re.IGNORECASE, "names"), re.compile(text, re.IGNORECASE))
    assert stored.read_bytes() == data  # written again, whole
    stored.write_bytes(data[:10])  # cut short
    _same(compiled.compile(text, re.IGNORECASE, "names"), re.compile(text, re.IGNORECASE))
    other = r"(?P<who>[A-Z]\w+)\s+Jones"  # another pattern of that name replaces it: one file a name
    compiled.compile(other, 0, "names")
    assert len(list(cache.glob("names.*.sre"))) == 1
    cache.chmod(0o500)
    try:
        if os.access(cache, os.W_OK):  # root writes anyway: a file in the folder's place makes it unwritable
            cache.chmod(0o700)
            for path in cache.iterdir():
                path.unlink()
            cache.rmdir()
            cache.write_text("not a folder")
        _same(compiled.compile(text, 0, "names"), re.compile(text))
    finally:
        if cache.is_dir():
            cache.chmod(0o700)


def test_a_fresh_process_reads_what_another_stored(cache):
    """The way it saves time: a second process finds the code the first one generated, and matches alike."""
    script = ("import re, sys; from curation_pipeline.captions import patterns as P; "
              "print([m.span() for m in P.CREDIT_RE.finditer(sys.argv[1])])")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parent.parent)}
    first, second = (subprocess.run([sys.executable, "-c", script, TEXTS[0]], env=env, capture_output=True,
                                    text=True, check=True).stdout for _ in range(2))
    expected = [m.span() for m in re.compile(P._CREDIT_PATTERN, re.IGNORECASE).finditer(TEXTS[0])]
    assert first == second == f"{expected}\n"
    assert {p.name.split(".")[0] for p in cache.glob("*.sre")} >= {"credit", "credited"}
