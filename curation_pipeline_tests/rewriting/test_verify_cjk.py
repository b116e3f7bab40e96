"""Captions in scripts without spaces: full-width brackets and separators are checked as their ASCII forms are,
and their punctuation, which the word count splits off every character, is edge punctuation to the edit ratio
("跑。" is "跑" as "dog." is "dog"). And an edit ratio that is exactly the bound passes it."""

import math

import pandas as pd
import pytest

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.rewriting.verify import AcceptanceRules, edit_ratio, judge, wellformedness_problems

BROKEN = {
    "东京塔的夜景（摄影": "unbalanced brackets",
    "东京塔的夜景【摄影": "unbalanced brackets",
    "东京塔的夜景《红楼梦": "unbalanced brackets",
    "东京塔的夜景〔摄影": "unbalanced brackets",
    "东京塔的夜景（摄影：张三": "unbalanced brackets",
    "东京塔的夜景：": "trailing separator '：'",
    "东京塔的夜景，": "trailing separator '，'",
    "东京塔的夜景、": "trailing separator '、'",
    "东京塔的夜景；": "trailing separator '；'",
    "东京塔的夜景（）": "empty brackets or quotes",
}


@pytest.mark.parametrize("candidate", list(BROKEN))
def test_full_width_brackets_and_separators_are_checked(candidate):
    assert BROKEN[candidate] in wellformedness_problems(candidate, "x y z")


@pytest.mark.parametrize("candidate", ["东京塔的夜景（摄影）", "《红楼梦》插图", "（东京）塔的夜景。", "东京塔的夜景（摄影)"])
def test_closed_full_width_brackets_are_well_formed(candidate):
    assert wellformedness_problems(candidate, "x y z") == []


def test_a_rewrite_with_an_open_full_width_bracket_is_rejected():
    class Fixed(Rewriter):
        name, version = "fixed", "1"

        def rewrite(self, batch):
            return [RewriteCandidate("东京塔的夜景（摄影：张三") for _ in batch.keys]

    def rescore(batch):
        return pd.DataFrame({"key": batch.keys, "text_quality": [90.0] * len(batch)})

    lineage = rewrite_batches([PairBatch(["k"], ["东京塔的夜景 摄影：张三 图片来源"])], shard="s", rewriter=Fixed(),
                              rescore=rescore, quality_column="text_quality", scores_before={"k": 40.0},
                              rules=AcceptanceRules(), run_id="r", prefetch_depth=0)
    assert not lineage["accepted"].iloc[0]
    assert lineage["reason"].iloc[0] == "malformed rewrite: unbalanced brackets"


def test_an_edit_ratio_at_the_bound_passes():
    original = "a brown dog runs across the green grass near water"
    candidate = "a black cat walks across the green grass near water"
    ratio = edit_ratio(original, candidate)
    assert ratio == 6 / 20 == 0.3
    assert judge(40, 90, ratio, 1.0, math.nan, AcceptanceRules(max_edit_ratio=0.3))[0]
    assert not judge(40, 90, ratio, 1.0, math.nan, AcceptanceRules(max_edit_ratio=0.29))[0]


@pytest.mark.parametrize("original, candidate, expected", [
    ("一只狗在草地上跑。", "一只狗在草地上跑", 0.0),
    ("「東京タワー」の夜景", "東京タワーの夜景", 0.0),
    ("一只狗，在草地上跑", "一只狗在草地上跑", 0.0),
    ("dog", "DOG.", 0.0),
    ("一只狗在草地上跑 。", "一只狗在草地上跑", 1 / 17),  # a mark set apart by a space is a word, as " - " is
    ("一只狗在草地上跑。", "一只猫在草地上跑。", 2 / 16),  # punctuation is no word on either side
])
def test_punctuation_glued_in_a_script_without_spaces_is_no_edit(original, candidate, expected):
    assert edit_ratio(original, candidate) == pytest.approx(expected)
