"""The AITQE scorer stores its recaption for inspection, and its reply, which the ``aitqe`` rewriter reuses where it
would ask the same (``rewriting.reuse``). The scorer's documentation must say what is true."""

from pathlib import Path

from curation_pipeline.scoring import aitqe as scoring_aitqe

PACKAGE = Path(scoring_aitqe.__file__).resolve().parents[1]


def _readers(column: str) -> list[str]:
    writer = Path(scoring_aitqe.__file__).resolve()
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                  if p.resolve() != writer and column in p.read_text(encoding="utf-8"))


def test_only_the_reply_is_read_back_and_the_docstring_says_so():
    assert _readers("aitqe_recaption") in ([], ["resources.py"])  # resources.py only describes the scoring option
    assert _readers("REPLY_COLUMN") == ["assets/rewriting.py", "rewriting/reuse.py"]
    doc = " ".join(scoring_aitqe.__doc__.split())
    assert "no later step reads it" not in doc and "calls the model again" not in doc, doc
    assert "``aitqe_reply``" in doc and "instead of generating the same reply again" in doc, doc
