"""Under ``fallback: drop`` a rewrite must clear the weak-caption bounds the decision applies, not only raise the
quality score: the cleaner takes a credit off a French caption, text_quality rises, and the caption is still not
English. Accepted, it was published as rewritten while its twin without the credit was dropped. Under
``keep_original`` a weak original above drop_threshold is published, so a better candidate weak the same way is
too."""

from curation_pipeline.decisions.policy import DecisionPolicy, StillWeak
from curation_pipeline.pairs import PairBatch
from curation_pipeline.resources import PolicyResource
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.cleaner import CaptionCleaner
from curation_pipeline.rewriting.targets import rescored_columns
from curation_pipeline.scoring.profiles import caption_scorers
from curation_pipeline.scoring.run import score_batch

CAPTIONS = {"fr": "Un chien qui court sur la plage au coucher du soleil. Photo: Jean Dupont / AFP",
            "en": "A brown dog running along the beach at sunset. Photo: Jean Dupont / AFP",
            "short": "Dog. Photo: Getty Images"}


def _rewrite(rules):
    scorers = caption_scorers()
    batch = PairBatch(list(CAPTIONS), list(CAPTIONS.values()))
    before = score_batch(scorers, batch)
    rescorers = [s for s in scorers if rescored_columns({"text_quality"}, rules) & set(s.columns)]
    lineage = rewrite_batches([batch], shard="s", rewriter=CaptionCleaner(),
                              rescore=lambda b: score_batch(rescorers, b), quality_column="text_quality",
                              scores_before=dict(zip(CAPTIONS, before["text_quality"])), rules=rules, run_id="r")
    return {row.key: (row.accepted, row.candidate_caption, row.reason) for row in lineage.itertuples()}


def test_a_candidate_still_weak_by_a_caption_rule_is_rejected_saying_which():
    rules = PolicyResource(fallback="drop").acceptance_rules()
    assert rules.still_weak.columns == {"datacomp_english", "datacomp_words_gt2", "datacomp_chars_gt5"}
    got = _rewrite(rules)
    why = "after rewriting (fallback: drop publishes no caption failing a caption rule)"
    assert got["fr"] == (False, "Un chien qui court sur la plage au coucher du soleil.", f"still not_english {why}")
    assert got["en"][:2] == (True, "A brown dog running along the beach at sunset.")
    assert got["short"] == (False, "Dog.", f"still too_few_words; too_few_chars {why}")


def test_keep_original_or_the_caption_rules_off_check_nothing():
    for policy in (PolicyResource(), PolicyResource(fallback="drop", caption_rules_mark_weak=False)):
        rules = policy.acceptance_rules()
        assert rules.still_weak.columns == frozenset()
        got = _rewrite(rules)
        assert got["fr"][0] is True and got["short"][0] is False  # "Dog." is under drop_threshold: that rule
        assert "too_few_words" not in got["short"][2], got["short"]
    scores = score_batch(caption_scorers(), PairBatch(["en", "fr"], [CAPTIONS["en"], CAPTIONS["fr"]]))
    assert StillWeak(DecisionPolicy(fallback="drop"))(scores) == [None, "not_english"]
