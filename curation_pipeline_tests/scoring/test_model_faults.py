"""A failing model batch is retried smaller; pairs that still fail are NaN with the reason."""

import pandas as pd
import pytest

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.run import score_batch

pytestmark = pytest.mark.faults


class FlakyScorer(Scorer):
    """Runs out of memory on batches over 2 pairs and always fails on the key 'poison'."""

    name, columns = "flaky", ("flaky_score",)

    def __init__(self):
        self.calls = []

    def score(self, batch):
        self.calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if "poison" in batch.keys:
            raise ValueError("cannot process this pair")
        return pd.DataFrame({"flaky_score": [float(len(c or "")) for c in batch.captions]})


def test_scorer_oom_is_retried_smaller_and_a_poison_pair_is_marked_missing():
    keys = ["a", "b", "poison", "d", "e", "f", "g", "h"]
    scorer = FlakyScorer()
    out = score_batch([scorer], PairBatch(keys, [k * 2 for k in keys]))
    assert len(out) == 8
    assert out["flaky_score"].tolist()[:2] == [2.0, 2.0]
    assert pd.isna(out.loc[2, "flaky_score"]) and "cannot process this pair" in out.loc[2, "flaky_error"]
    assert out.loc[out.index != 2, "flaky_score"].notna().all()
    assert out.loc[out.index != 2, "flaky_error"].isna().all()
    assert max(scorer.calls[1:]) <= 4 and scorer.calls[0] == 8


class FlakyRewriter(Rewriter):
    name = "flaky"

    def rewrite(self, batch):
        if len(batch) > 1 or batch.keys == ["poison"]:
            raise MemoryError("out of memory")
        return [RewriteCandidate(f"A better caption for {batch.keys[0]}.")]


def test_rewriter_faults_become_rejected_attempts_not_a_failed_shard():
    keys = ["a", "poison", "c"]
    lineage = rewrite_batches(
        [PairBatch(keys, ["x", "y", "z"])], shard="s", rewriter=FlakyRewriter(),
        rescore=lambda b: pd.DataFrame({"q": [90.0] * len(b)}), quality_column="q",
        scores_before={k: 10.0 for k in keys}, rules=AcceptanceRules(), run_id="r")
    got = lineage.set_index("key")
    assert got["accepted"].to_dict() == {"a": True, "poison": False, "c": True}
    assert got.loc["poison", "reason"].startswith("no candidate: rewriter failed: MemoryError")


def test_a_scorer_that_returns_the_wrong_number_of_rows_is_an_error_not_a_split():
    """A broken contract is raised at once: halving the batch would hide it as per-pair failures."""
    import pandas as pd

    from curation_pipeline.pairs import ContractError, PairBatch
    from curation_pipeline.scoring.base import Scorer
    from curation_pipeline.scoring.run import score_with_retry

    calls = []

    class Short(Scorer):
        name, columns = "short", ("short_score",)

        def score(self, batch):
            calls.append(len(batch))
            return pd.DataFrame({"short_score": [1.0] * (len(batch) - 1)})

    with pytest.raises(ContractError, match="returned 3 rows for a batch of 4"):
        score_with_retry(Short(), PairBatch(list("abcd"), list("abcd")))
    assert calls == [4]
