import json
import time

import pandas as pd
import pytest

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.text_quality import (
    MINOR_RULES,
    PENALTIES,
    CaptionTextQuality,
    caption_rules,
    caption_score,
)

CLEAN = "A brown dog runs across the green grass"

# rule -> (captions that fire it, captions that do not)
RULE_CASES = {
    "no_alpha": (["12345 678", "!!! ???"], ["2 dogs", CLEAN]),
    "filename": (
        ["IMG_2041.JPG", "A dog on the beach DSC00123", "2041.jpg", "Screenshot_2020-05-01-12-30-00.png",
         "my-holiday.png of the sea", "P1010123 red car", "Screen Shot 2020-05-01 at 12.30.00 PM a chart"],
        [CLEAN, "A man in a jpg shirt", "Uncle Sam 1776 parade float", "A 2041 model tractor"],
    ),
    "url": (
        ["Visit https://example.com/x?y=1 today", "see www.shop.net for mugs", "Buy mugs at mugshop.com now"],
        [CLEAN, "A man holds a sign reading www", "The dog. It runs."],
    ),
    "boilerplate": (
        ["Beach sunset - Stock Photo", "Royalty free image of a dog", "Image may contain: 2 people",
         "Click to enlarge", "A beach at sunset. Photo by John Smith", "Red car free download",
         "Shutterstock dog portrait", "Sunset via Alamy", "Getty Images red car", "Free image of a dog",
         "Thumbnail of a red car", "© 2019 John Smith", "Dog on grass, all rights reserved"],
        [CLEAN, "A nice photo by the lake", "A man downloading files", "A stock market chart",
         "Free kick in a soccer game"],
    ),
    "hashtag_spam": (
        ["Sunset at the pier #sunset #beach #love", "Sunset #beach", "#sunset"],
        [CLEAN, "A walk on the #beach in the summer sun", "My #1 fan at the game", "Tom &#39; s dog runs far"],
    ),
    "too_short": (["Brown dog", "Dog", "#sunset #beach #love", "黑狗"], ["A brown dog", CLEAN, "一只黑色的狗在草地上奔跑"]),
    "very_short": (["Dog", "Dog #sunset", "IMG_2041.JPG"], ["Brown dog", CLEAN]),
    "repetition": (
        ["A cat cat cat on a mat", "the the dog runs", "A dog a dog runs far", "dog dog dog dog cat cat cat cat"],
        [CLEAN, "She had had enough of it", "Bora Bora lagoon at dusk", "A man in a red shirt and a man in a blue shirt"],
    ),
    "low_letter_share": (["2 dogs 12345 67890", "A -- ** -- ** dog"], [CLEAN, "2 dogs run"]),
    "html_entity": (
        ["Tom &amp; Jerry on the couch", "A dog &#39;s ball", "&quot;Hello&quot; sign on a wall"],
        [CLEAN, "Tom & Jerry on the couch", "Terms &notice apply here"],
    ),
    "all_caps": (["A DOG RUNNING ON THE BEACH", "RED SPORTS CAR"], [CLEAN, "A dog in NYC at night", "USA flag"]),
    "too_long": ([" ".join(["word"] * 20 + [f"w{i}x" for i in range(60)])], [" ".join(f"w{i}x" for i in range(77))]),
}


@pytest.mark.parametrize("rule", list(RULE_CASES))
def test_rule_positive_and_negative_examples(rule):
    fires, silent = RULE_CASES[rule]
    for caption in fires:
        assert rule in caption_rules(caption), caption
    for caption in silent:
        assert rule not in caption_rules(caption), caption


def test_every_rule_has_cases():
    assert set(RULE_CASES) | {"empty"} == set(PENALTIES)


@pytest.mark.parametrize("caption", [None, "", "   \n\t"])
def test_empty_caption_scores_zero(caption):
    assert caption_rules(caption) == ["empty"]
    assert caption_score(["empty"]) == 0.0


@pytest.mark.parametrize(
    "caption, score, rules",
    [
        (CLEAN, 100.0, ""),
        ("Tom &amp; Jerry on the couch", 90.0, "html_entity"),
        ("Beach sunset - Stock Photo", 70.0, "boilerplate"),
        ("Brown dog", 75.0, "too_short"),
        ("Dog", 60.0, "too_short,very_short"),
        ("A cat cat cat on a mat", 80.0, "repetition"),
        ("A DOG RUNNING ON THE BEACH", 90.0, "all_caps"),
        ("Visit https://example.com for more dogs", 70.0, "url"),
        ("#sunset #beach #love", 35.0, "hashtag_spam,too_short,very_short"),
        ("IMG_2041.JPG", 0.0, "filename,too_short,very_short,low_letter_share,all_caps"),
        ("12345", 0.0, "no_alpha,too_short,very_short,low_letter_share"),
    ],
)
def test_exact_scores_and_rule_order(caption, score, rules):
    df = CaptionTextQuality().score(PairBatch(["k"], [caption]))
    assert df.loc[0, "text_quality"] == score
    assert df.loc[0, "text_quality_rules"] == rules


def test_rules_come_in_penalty_table_order():
    fired = caption_rules("IMG_2041.JPG")
    assert fired == [r for r in PENALTIES if r in fired]


def test_scorer_columns_and_missing_captions():
    scorer = CaptionTextQuality()
    df = scorer.score(PairBatch(["a", "b", "c"], [CLEAN, None, ""]))
    assert tuple(df.columns) == scorer.columns == ("text_quality", "text_quality_rules")
    assert isinstance(df.index, pd.RangeIndex)
    assert df["text_quality"].dtype == "float64"
    assert df["text_quality"].tolist() == [100.0, 0.0, 0.0]
    assert df["text_quality_rules"].tolist() == ["", "empty", "empty"]
    assert scorer.needs_images is False and scorer.ident == "text_quality@1"


def test_score_is_clamped():
    assert caption_score(list(PENALTIES)) == 0.0
    assert caption_score([]) == 100.0


def read_flickr_captions(flickr_dir, lines=20):
    with open(flickr_dir / "captions.jsonl") as fh:
        rows = [json.loads(next(fh)) for _ in range(lines)]
    return [c for row in rows for c in row["captions"]]


def test_good_flickr_captions_score_high(flickr_dir):
    captions = read_flickr_captions(flickr_dir)
    assert len(captions) == 100
    df = CaptionTextQuality().score(PairBatch([str(i) for i in range(len(captions))], captions))
    assert (df["text_quality"] >= 80).all(), df[df["text_quality"] < 80]
    for rules in df["text_quality_rules"]:
        assert set(filter(None, rules.split(","))) <= MINOR_RULES


def test_non_english_is_not_penalised():
    assert caption_rules("Ein schwarzer Hund läuft über die grüne Wiese") == []
    assert caption_rules("一只黑色的狗在草地上奔跑") == []


def test_no_catastrophic_backtracking():
    """A ReDoS guard, not a speed target: backtracking regexes take minutes on these strings."""
    start = time.perf_counter()
    for nasty in ("x." * 5000 + "jpg", "ab-" * 5000, "www." + "a." * 3000, "a " * 5000, "#a" * 3000):
        caption_rules(nasty)
    assert time.perf_counter() - start < 1.0
