"""The AITQE scorer stores its recaption, but nothing reads it back: the ``aitqe`` rewriter asks the model again.
The scorer's documentation must say what is true, not promise a model call saved."""

from pathlib import Path

from curation_pipeline.scoring import aitqe as scoring_aitqe

PACKAGE = Path(scoring_aitqe.__file__).resolve().parents[1]


def test_no_step_reads_the_stored_recaption_and_the_docstring_says_so():
    writer = Path(scoring_aitqe.__file__).resolve()
    readers = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if p.resolve() != writer and "aitqe_recaption" in p.read_text(encoding="utf-8")]
    assert readers in ([], ["resources.py"]), readers  # resources.py only describes the scoring option
    doc = " ".join(scoring_aitqe.__doc__.split())
    assert "spares" not in doc and "second model call" not in doc, doc
    assert "no later step reads it" in doc and "calls the model again" in doc, doc
