"""Keep / rewrite / drop on concrete score rows, and the final outcome after rewrite attempts."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.decisions.outcome import resolve_outcomes
from curation_pipeline.decisions.policy import DecisionPolicy, decide
from curation_pipeline.resources import PolicyResource
from curation_pipeline.rewriting.verify import judge
from curation_pipeline.rewriting.attempts import LINEAGE_COLUMNS, empty_lineage
from curation_pipeline.scoring.selection import global_cut


def scores(**overrides):
    base = {
        "shard": ["s"] * 6,
        "key": ["good", "weak", "broken", "small", "unsafe", "dup"],
        "caption": ["A dog on a beach.", "IMG_1.JPG", "x", "A cat.", "A person.", "A dog on a beach."],
        "decode_status": ["ok", "ok", "corrupt", "ok", "ok", "ok"],
        "text_quality": [100.0, 0.0, 100.0, 100.0, 100.0, 100.0],
        "text_quality_rules": ["", "filename", "", "", "", ""],
        "datacomp_english": pd.array([True, False, True, True, True, True], dtype="boolean"),
        "datacomp_min_side_ge200": pd.array([True, True, pd.NA, False, True, True], dtype="boolean"),
        "datacomp_aspect_le3": pd.array([True, True, pd.NA, True, True, True], dtype="boolean"),
        "nsfw_prob": [0.01, 0.3, np.nan, 0.0, 0.95, 0.01],
        "dup_keep": [True, True, True, True, True, False],
        "dup_kind": [None, None, None, None, None, "exact_pair"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_each_pair_gets_the_action_and_reason_naming_its_signal():
    d = decide(scores(), DecisionPolicy()).set_index("key")
    assert d["action"].to_dict() == {"good": "keep", "weak": "rewrite", "broken": "drop", "small": "drop",
                                     "unsafe": "drop", "dup": "drop"}
    assert d.loc["broken", "reason"] == "image_corrupt"
    assert d.loc["small", "reason"] == "image_too_small"
    assert d.loc["unsafe", "reason"] == "nsfw"
    assert d.loc["dup", "reason"] == "duplicate:exact_pair"
    assert d.loc["weak", "reason"] == "low_text_quality=0.0 (filename); not_english"
    assert bool(d.loc["weak", "nsfw_review"]) and not bool(d.loc["good", "nsfw_review"])


def test_an_image_a_drop_rule_could_not_check_is_not_published_as_if_it_passed():
    """The NSFW model failed on two pairs (NaN with its error): unknown is not safe. A pair with no
    image keeps its own reason, and a rule that is off checks nothing."""
    failed = "RuntimeError: onnxruntime: Failed to allocate memory"
    s = scores(nsfw_prob=[np.nan, 0.3, np.nan, 0.0, np.nan, 0.01],
               nsfw_error=[failed, None, "no image", None, failed, None])
    d = decide(s, DecisionPolicy()).set_index("key")
    assert d.loc["good", "action"] == "drop" and d.loc["good", "reason"] == "unchecked:nsfw_prob"
    assert d.loc["unsafe", "reason"] == "unchecked:nsfw_prob"
    assert d.loc["broken", "reason"] == "image_corrupt" and d.loc["weak", "action"] == "rewrite"
    off = decide(s, DecisionPolicy(nsfw_drop=None)).set_index("key")
    assert off.loc["good", "action"] == "keep"
    unscored = decide(s.drop(columns=["nsfw_prob", "nsfw_error"]), DecisionPolicy()).set_index("key")
    assert unscored.loc["good", "action"] == "keep"  # the profile runs no NSFW model: no rule to check


def test_a_caption_whose_weak_check_failed_is_not_kept_as_if_it_passed():
    """The DataComp rules raised on a pair (each value NA, the error set): its caption was never language-checked,
    so it is weak, as an image a drop rule could not check is dropped, and a rewrite candidate failing so is not
    passed as if English. With the switch off nothing is checked."""
    from curation_pipeline.decisions.policy import StillWeak

    failed = "RuntimeError: fasttext broke"
    s = scores(datacomp_english=pd.array([pd.NA, False, True, True, True, True], dtype="boolean"),
               datacomp_error=[failed, None, None, None, None, None])
    lenient = DecisionPolicy(require_image_rules=False, nsfw_drop=None, drop_duplicates=False)
    d = decide(s, lenient).set_index("key")
    assert d.loc["good", "action"] == "rewrite" and d.loc["good", "reason"] == "caption_unchecked:datacomp_english"
    assert decide(s, DecisionPolicy(**{**vars(lenient), "rewrite": False})).set_index("key").loc[
        "good", "reason"] == "caption_unchecked:datacomp_english"
    off = DecisionPolicy(**{**vars(lenient), "caption_rules_mark_weak": False})
    assert decide(s, off).set_index("key").loc["good", "action"] == "keep"
    still = StillWeak(DecisionPolicy(fallback="drop"))
    assert still(s.iloc[:2].reset_index(drop=True)) == ["caption_unchecked:datacomp_english", "not_english"]


def test_switches_change_decisions_without_rescoring():
    d = decide(scores(), DecisionPolicy(rewrite=False, require_image_rules=False, drop_duplicates=False)).set_index("key")
    assert d.loc["weak", "action"] == "drop" and d.loc["small", "action"] == "keep" and d.loc["dup", "action"] == "keep"


def test_keep_expression_over_model_columns():
    s = scores(mlm_itm=[80.0, 90.0, 10.0, 80.0, 80.0, 40.0], mlm_odf=[30.0, 30.0, 0.0, 30.0, 30.0, 30.0])
    d = decide(s, DecisionPolicy(keep_expression="mlm_itm >= 66 and mlm_odf >= 20", drop_duplicates=False,
                                 require_image_rules=False, nsfw_drop=None)).set_index("key")
    # failing it on a score a text_quality rewrite does not re-score: no rewrite could publish it
    assert d.loc["dup", "action"] == "drop" and "fails: mlm_itm >= 66" in d.loc["dup", "reason"]
    assert d.loc["dup", "reason"].endswith("not rewritten: no text_quality score would publish it (keep_expression "
                                           "fails on its other scores as stored)")
    assert d.loc["good", "action"] == "keep"


def test_unknown_quality_column_is_a_clear_error():
    with pytest.raises(KeyError, match="clip_score"):
        decide(scores(), DecisionPolicy(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.5))


def test_thresholds_are_validated():
    with pytest.raises(ValueError):
        DecisionPolicy(keep_threshold=50, drop_threshold=60)
    with pytest.raises(ValueError):
        DecisionPolicy(fallback="maybe")


@pytest.mark.parametrize("settings, message", [
    ({"quality_column": "aitqe_overall"}, "keep_threshold=95 is outside aitqe_overall's declared range 1..10"),
    ({"quality_column": "aitqe_overall", "keep_threshold": 8, "drop_threshold": 0}, "drop_threshold=0 is outside"),
    ({"nsfw_drop": 80, "nsfw_review": 20}, "nsfw_drop=80 is outside nsfw_prob's declared range 0..1"),
    ({"min_brightness": 3}, "min_brightness=3 is outside iq_brightness's declared range"),
    ({"keep_expression": "dup_phash > 0"}, "compares 'dup_phash', a str column"),
    # ranked as a quality, a text failed only after the shard was scored, a True/False only in rewriting
    ({"quality_column": "datacomp_lang"}, "quality_column 'datacomp_lang' is a str column: pick a numeric score ("),
    ({"quality_column": "datacomp_english"}, "quality_column 'datacomp_english' is a bool column"),
    ({"keep_expression": "aitqe_overall >= 70"}, "compares aitqe_overall with 70, outside its declared range 1..10"),
    ({"keep_expression": "not (0.2 < clip_sigmoid <= 1.5)"}, "compares clip_sigmoid with 1.5, outside its declared range 0..1"),
    ({"keep_expression": "mlm_itm >= 66 or clip_cosine > -2"}, "compares clip_cosine with -2, outside its declared range -1..1"),
    ({"nsfw_review": 20}, "nsfw_review=20 is outside nsfw_prob's declared range 0..1"),
    ({"nsfw_review": -0.1}, "nsfw_review=-0.1 is outside nsfw_prob's declared range 0..1"),
    ({"quality_column": "clip_score", "keep_threshold": 0.8, "drop_threshold": 0.5, "min_improvement": 5},
     "min_improvement=5 is outside 0..2.5, the width of clip_score's declared range 0..2.5"),
    ({"min_improvement": -1}, "min_improvement=-1 is outside 0..100, the width of text_quality's declared range"),
])
def test_thresholds_are_held_to_the_scales_the_scorers_declare(settings, message):
    """A threshold on another scale would run, and quietly rewrite or keep everything."""
    with pytest.raises(ValueError, match=re.escape(message)):
        DecisionPolicy(**settings)
    DecisionPolicy(quality_column="aitqe_overall", keep_threshold=7, drop_threshold=3)
    DecisionPolicy(keep_expression="datacomp_english == 1 and mlm_itm >= 66", nsfw_drop=None)
    DecisionPolicy(nsfw_drop=0.1)  # stricter than the review band's start: the band is empty, not an error


README = Path(__file__).resolve().parents[2] / "README.md"
# a selection as the README writes one: `column op number`, joined by and / or
_COMPARISON = r"[a-z_]+ (?:[<>]=?|[=!]=) -?[\d.]+"
_EXAMPLE = re.compile(rf"`({_COMPARISON}(?: (?:and|or) {_COMPARISON})*)`( is refused)?")


def test_the_documented_keep_expressions_validate_and_the_refused_one_is_refused():
    """Every keep_expression the README, the setting's description and the CLI's hint show must still pass
    the scale check; the one the README names as refused must be refused."""
    found = _EXAMPLE.findall(README.read_text(encoding="utf-8"))
    valid = [expr for expr, refused in found if not refused]
    assert {"mlm_itm >= 66 and mlm_odf >= 20", "mlm_su >= 85"} <= set(valid)
    assert [expr for expr, refused in found if refused] == ["aitqe_overall >= 70"]
    description = PolicyResource.model_fields["keep_expression"].description.replace('"', "`")
    valid += [expr for expr, _ in _EXAMPLE.findall(description)] + ["clip_score >= 0.3"]  # cli.py's --set hint
    assert len(valid) >= 4
    for expr in valid:
        DecisionPolicy(keep_expression=expr)
    DecisionPolicy(keep_expression="60 <= mlm_itm <= 100 and aitqe_overall >= 1 and clip_cosine > -1")  # inclusive
    DecisionPolicy(keep_expression="iq_sharpness > 5000 and mlm_itm >= mlm_odf")  # no declared range / no number
    with pytest.raises(ValueError, match="outside its declared range 1..10"):
        DecisionPolicy(keep_expression="aitqe_overall >= 70")


def test_the_default_rewrite_margin_is_a_share_of_the_quality_columns_range():
    """min_improvement's default is 1 point on the 0-100 scales as before, and as much of CLIPScore's 0-2.5
    or AITQE's 1-10; an explicit value keeps its meaning, points on the quality column's scale."""
    assert DecisionPolicy().min_improvement == 1.0
    assert DecisionPolicy(quality_column="mlm_itm", keep_threshold=66, drop_threshold=20).min_improvement == 1.0
    assert DecisionPolicy(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.5).min_improvement == 0.025
    assert DecisionPolicy(quality_column="aitqe_overall", keep_threshold=7, drop_threshold=3).min_improvement \
        == pytest.approx(0.09)
    explicit = PolicyResource(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.5,
                              acceptance={"min_improvement": 0.5})
    assert explicit.decision_policy().min_improvement == explicit.acceptance_rules().min_improvement == 0.5
    assert PolicyResource(acceptance={"min_improvement": 3}).acceptance_rules().min_improvement == 3


def test_a_better_rewrite_is_accepted_on_clip_score_with_the_default_margin():
    """The pipeline's acceptance rules for quality_column clip_score (0-2.5): a rewrite lifting CLIPScore
    from 0.55 (weak) to 0.95 (above keep_threshold) is a real gain, not 0.4 short of a 0-100 point."""
    policy = PolicyResource(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.5)
    rules = policy.acceptance_rules()
    assert judge(0.55, 0.95, 0.2, 1.0, 0.9, rules) == (True, "score improved 0.55 -> 0.95")
    assert judge(0.55, 0.56, 0.2, 1.0, 0.9, rules)[0] is False  # noise is still not a gain
    with pytest.raises(ValueError, match="min_improvement=3 is outside 0..2.5"):
        PolicyResource(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.5,
                       acceptance={"min_improvement": 3}).acceptance_rules()


def _lineage(rows):
    """As ``rewrite_batches`` builds it: the lineage columns, a pair's missing ones empty."""
    return pd.DataFrame(rows, columns=LINEAGE_COLUMNS) if rows else empty_lineage()


def test_outcomes_follow_acceptance_and_fallback():
    decisions = pd.DataFrame({
        "shard": "s", "key": ["k", "r_ok", "r_low", "r_rej_keep", "r_rej_drop", "d"],
        "action": ["keep", "rewrite", "rewrite", "rewrite", "rewrite", "drop"],
        "reason": ["fine", "weak", "weak", "weak", "weak", "image_corrupt"],
        "quality_column": "text_quality", "quality_before": [100, 30, 10, 70, 20, 100.0]})
    captions = pd.Series({"k": "a", "r_ok": "b", "r_low": "c", "r_rej_keep": "d", "r_rej_drop": "e", "d": "f"})
    lineage = _lineage([
        {"key": "r_ok", "attempt": 1, "candidate_caption": "B!", "quality_after": 90.0, "accepted": True,
         "rewriter": "cleaner", "rewriter_version": "1", "reason": "improved"},
        {"key": "r_low", "attempt": 1, "candidate_caption": "C", "quality_after": 40.0, "accepted": True,
         "rewriter": "cleaner", "rewriter_version": "1", "reason": "improved"},
        {"key": "r_rej_keep", "attempt": 1, "candidate_caption": "D", "quality_after": 60.0, "accepted": False,
         "rewriter": "cleaner", "rewriter_version": "1", "reason": "score did not improve"},
        {"key": "r_rej_drop", "attempt": 1, "candidate_caption": None, "quality_after": np.nan, "accepted": False,
         "rewriter": "cleaner", "rewriter_version": "1", "reason": "no candidate: no change"},
    ])
    out = resolve_outcomes(decisions, captions, lineage, DecisionPolicy(drop_threshold=65)).set_index("key")
    assert out["outcome"].to_dict() == {"k": "kept", "r_ok": "rewritten", "r_low": "dropped",
                                        "r_rej_keep": "kept", "r_rej_drop": "dropped", "d": "dropped"}
    assert out.loc["r_ok", "final_caption"] == "B!" and out.loc["r_ok", "rewriter"] == "cleaner"
    assert out.loc["r_ok", "quality_final"] == 90.0
    assert out.loc["r_rej_keep", "final_caption"] == "d"
    # the decision's reason first: why a rewrite was tried, then why the original stands
    assert out.loc["r_rej_keep", "reason"] == "weak; rewrite rejected (score did not improve); kept original"
    assert "still weak after rewriting" in out.loc["r_low", "reason"]
    assert out.loc["d", "final_caption"] is None
    # a dropped one says why its original was not kept instead: under drop_threshold, or the fallback
    assert out.loc["r_rej_drop", "reason"] == ("caption weak and not rewritten (no candidate: no change; original 20.0 "
                                               "< drop_threshold 65)")
    dropping = resolve_outcomes(decisions, captions, lineage,
                                DecisionPolicy(drop_threshold=65, fallback="drop")).set_index("key")
    assert dropping.loc["r_rej_keep", "outcome"] == "dropped"
    assert dropping.loc["r_rej_keep", "reason"] == ("caption weak and not rewritten (score did not improve; "
                                                    "fallback: drop)")


def test_keep_fraction_applies_the_global_cut_exactly():
    n = 40
    s = pd.DataFrame({"shard": "s", "key": [f"k{i}" for i in range(n)], "decode_status": "ok",
                      "text_quality": [100.0] * 10 + [80.0] * 20 + [50.0] * 10})
    policy = DecisionPolicy(keep_fraction=0.5, keep_threshold=0, drop_threshold=0)
    cut = global_cut(s, 0.5, "text_quality")
    d = decide(s, policy, cut=cut)
    kept = d[d["action"] == "keep"]
    assert len(kept) == 20
    assert set(s.loc[:9, "key"]) <= set(kept["key"])  # all above the cut, 10 of the 20 tied at 80
    assert (d.loc[d["action"] == "rewrite", "reason"].str.contains("outside top 50% by text_quality")).all()
    again = decide(s.iloc[::-1], policy, cut=cut)
    assert set(again.loc[again["action"] == "keep", "key"]) == set(kept["key"])  # ties by hash, not row order


def test_keep_fraction_needs_the_matching_global_cut():
    s = pd.DataFrame({"shard": "s", "key": ["a", "b"], "decode_status": "ok", "text_quality": [100.0, 50.0]})
    with pytest.raises(ValueError, match="one cut over all shards"):
        decide(s, DecisionPolicy(keep_fraction=0.5))
    with pytest.raises(ValueError, match="keep_fraction=0.3"):
        decide(s, DecisionPolicy(keep_fraction=0.5), cut=global_cut(s, 0.3, "text_quality"))
    with pytest.raises(ValueError, match="keep_fraction must be in"):
        DecisionPolicy(keep_fraction=2.0)
    assert decide(s, DecisionPolicy(), cut=None)["action"].tolist() == ["keep", "rewrite"]  # off: no cut needed


def test_the_first_reason_is_the_first_check_that_holds_as_masking_in_turn_gave():
    """``image_drop_reasons`` picks each pair's reason in arrays (some twenty ``Series.mask`` calls cost
    more than the rest of ``decide``): the first check whose mask holds, a label Series giving each row
    its own, NaN where none holds, exactly as masking the checks in turn gave."""
    from curation_pipeline.decisions.policy import _first_reason

    rng = np.random.default_rng(7)
    index = pd.Index([3, 1, 4, 0, 5, 9, 2, 6])
    for _ in range(50):
        checks = [(str(i), pd.Series(rng.random(len(index)) < 0.2, index=index)) for i in range(6)]
        checks.append((pd.Series([f"duplicate:{k}" for k in rng.choice(["exact", "near"], len(index))],
                                 index=index), pd.Series(rng.random(len(index)) < 0.5, index=index)))
        masked = pd.Series(None, index=index, dtype=object)
        for label, mask in checks:
            masked = masked.mask(masked.isna() & mask, label)
        got = _first_reason(index, checks)
        pd.testing.assert_series_equal(got, masked)
        assert [repr(v) for v in got] == [repr(v) for v in masked]  # NaN where no check holds, as before


def test_a_low_score_is_never_shown_at_or_past_its_threshold():
    """One decimal, except where rounding would reach the threshold: 94.96 under 95 is not "95.0"."""
    def reason(value, column="text_quality", **policy):
        table = scores(**{column: [value, 0.0, 100.0, 100.0, 100.0, 100.0]})
        return decide(table, DecisionPolicy(quality_column=column, **policy)).set_index("key").loc["good", "reason"]

    assert reason(94.96, keep_threshold=95.0) == "low_text_quality=94.96"
    assert reason(94.94, keep_threshold=95.0) == "low_text_quality=94.9"
    assert reason(12.0, keep_threshold=95.0) == "low_text_quality=12.0"
    assert reason(0.76, "clip_score", keep_threshold=0.8, drop_threshold=0.1) == "low_clip_score=0.76"
    assert reason(0.7, "clip_score", keep_threshold=0.8, drop_threshold=0.1) == "low_clip_score=0.7"
    # on a 0-1 scale to its thousandths: 0.66 and 0.74 (one dropped, one kept) read 0.7 alike before
    assert reason(0.6612, "clip_score", keep_threshold=0.8, drop_threshold=0.1) == "low_clip_score=0.661"
    # and text_quality's rules only beside its own score: a credit is not why a clip_score is low
    table = scores(clip_score=[0.5, 0.9, 0.9, 0.9, 0.9, 0.9], text_quality_rules=["credit", "", "", "", "", ""])
    decided = decide(table, DecisionPolicy(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.1))
    assert decided.set_index("key").loc["good", "reason"] == "low_clip_score=0.5"


def test_an_outcome_never_shows_a_score_rounded_onto_its_drop_threshold():
    """0.66 under a clip_score drop_threshold of 0.7 read "original 0.7 < drop_threshold 0.7"."""
    table = scores(clip_score=[0.66, 0.9, 0.9, 0.9, 0.9, 0.9])
    policy = DecisionPolicy(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.7)
    decisions = decide(table, policy)
    final = resolve_outcomes(decisions, table.set_index("key")["caption"], empty_lineage(), policy)
    reason = final.set_index("key").loc["good", "reason"]
    assert "original 0.66 < drop_threshold 0.7" in reason, reason


def test_a_score_a_hair_under_its_threshold_is_shown_under_it():
    """The float just below the threshold: 15 significant digits would round it onto the threshold."""
    from curation_pipeline.decisions.policy import shown_below

    shown = shown_below(pd.Series([np.nextafter(95.0, 0.0), np.nextafter(0.8, 0.0)]), 95.0).tolist()
    assert float(shown[0]) < 95.0 and shown[1] == "0.8"  # 0.8 is below 95: one decimal
    assert float(shown_below(pd.Series([np.nextafter(0.8, 0.0)]), 0.8).iloc[0]) < 0.8
