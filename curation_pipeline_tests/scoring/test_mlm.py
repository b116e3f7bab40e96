import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.mlm import MlmFilterScorer
from curation_pipeline.scoring.mlm.score import (digit_split_expectation, parse_reference_score, parse_score,
                                                 whole_number_expectation)
from curation_pipeline.scoring.mlm.tree import TokenTree
from curation_pipeline_tests import tiny_models


def _digits(**probs):
    table = np.zeros(10)
    for digit, p in probs.items():
        table[int(digit[1:])] = p
    return table


# --- the expectation math on hand-made tables ---

def test_digit_chain_reads_100_not_10():
    second = np.zeros((10, 10))
    second[1] = _digits(d0=1.0)
    assert digit_split_expectation(_digits(d1=1.0), second, _digits(d0=1.0)) == (100.0, 1.0)
    assert digit_split_expectation(_digits(d1=1.0), second, _digits()) == (10.0, 1.0)


def test_digit_chain_mixture_hand_computed():
    # P1: "8" 0.5, "1" 0.3, "0" 0.2; after "8": "5" 0.5 (else end); after "1": "0" 1.0;
    # after "10": "0" 0.5 (else end).  P(0)=.2 P(8)=.25 P(85)=.25 P(10)=.15 P(100)=.15
    second = np.zeros((10, 10))
    second[8] = _digits(d5=0.5)
    second[1] = _digits(d0=1.0)
    value, mass = digit_split_expectation(_digits(d8=0.5, d1=0.3, d0=0.2), second, _digits(d0=0.5))
    assert mass == pytest.approx(1.0)
    assert value == pytest.approx(0.25 * 8 + 0.25 * 85 + 0.15 * 10 + 0.15 * 100)


def test_invalid_continuations_and_non_digits_reduce_mass():
    second = np.zeros((10, 10))
    second[1] = _digits(d0=1.0)
    # "1","0","7" is not a valid score: that mass is dropped, and 40% of P1 is not a digit.
    value, mass = digit_split_expectation(_digits(d1=0.6), second, _digits(d7=0.5))
    assert mass == pytest.approx(0.3) and value == pytest.approx(10.0)


def test_whole_number_expectation():
    probs = np.zeros(101)
    probs[[100, 50]] = [0.3, 0.1]
    value, mass = whole_number_expectation(probs)
    assert mass == pytest.approx(0.4) and value == pytest.approx((30 + 5) / 0.4)
    assert math.isnan(whole_number_expectation(np.zeros(101))[0])


@pytest.mark.parametrize("reply, expected", [
    ("85", 85.0), ("Score: 85", 85.0), ("85/100", 85.0), ("85.", 85.0), (" 100\nbecause", 100.0),
    ("7,5;", 75.0), ("0", 0.0), ("score=42", 42.0),
    # a chat model's markdown and percent forms were "unparseable"
    ("**85**", 85.0), ("**Score:** 85", 85.0), ("85%", 85.0), ("Score: 85 out of 100", 85.0), ("`70`.", 70.0),
])
def test_parser_accepts(reply, expected):
    assert parse_score(reply) == (expected, None)


@pytest.mark.parametrize("reply, reason", [
    ("", "empty"), (None, "empty"), ("101", "out of range"), ("850", "out of range"),
    ("good", "unparseable"), ("about 85", "unparseable"), ("85 points", "unparseable"),
    ("85 out of 10", "unparseable"), ("**", "unparseable"),
])
def test_parser_rejects_with_reason(reply, reason):
    value, why = parse_score(reply)
    assert math.isnan(value) and reason in why


def test_prompt_sets_are_the_references_and_hash_apart():
    from curation_pipeline.scoring.mlm.prompts import PROMPT_SETS

    v1, llama3, qwen = PROMPT_SETS["llava_v1"], PROMPT_SETS["llama_3"], PROMPT_SETS["qwen_instruct"]
    prompt = v1.prompt("A dog.", "itm")
    assert prompt.startswith("A chat between a curious human and an artificial intelligence assistant. "
                             "The assistant gives helpful, detailed, and polite answers to the human's questions. "
                             "USER: <image>\nText Caption: A dog.\n\nPlease evaluate if the provided text caption")
    assert prompt.endswith("avoiding any potential bias. ASSISTANT:") and "multiples of 10.  Please" in prompt
    assert "multiples of 5 or 10. Please" in llama3.prompt("x", "su") and "semantic understanding" in llama3.prompt("x", "su")
    assert qwen.prompt("x", "ctq").startswith("<|im_start|>system\nYou are a helpful assistant<|im_end|>"
                                              "<|im_start|>user\n<image>\nText Caption: x")
    assert qwen.prompt("x", "ctq").endswith("<|im_end|><|im_start|>assistant\n")
    assert (v1.max_new_tokens, llama3.max_new_tokens, qwen.max_new_tokens) == (2, 1, 2)
    assert len({s.hash for s in PROMPT_SETS.values()}) == len(PROMPT_SETS)


# Goldens from the authors' own code, not from this project's parser: each reply run through Open-Qwen2VL @
# 0d76f9f data_filtering/baselines/apply_filter.py ``above_threshold_decision`` (with ``int`` wrapped to record
# what it returned; None: its int() raised, the pair is never kept), after the string MLM_Filter @ 7c4cd80 stores:
# the v2 script (llama_3, qwen_instruct) the decoded reply as is, the v1 script (llava_v1,
# mlm_filter_scoring_datacomp_batch_inference.py:326) ``output.strip().strip("</s>")``.
# Columns: reply, prompt set, the int their reader took, their decision at threshold 50, at 85.
AUTHORS_GOLDENS = [
    ("57", "llama_3", 57, True, False),
    ("57\n", "llama_3", 57, True, False),
    ("57\nbecause", "qwen_instruct", 57, True, False),
    ("\n57", "qwen_instruct", None, False, False),
    (" \n57", "llama_3", None, False, False),
    ("\r\n57", "llama_3", None, False, False),
    ("57\r\n", "llama_3", 57, True, False),
    (" 85", "qwen_instruct", 85, True, True),
    ("85 ", "llama_3", 85, True, True),
    ("5,7", "llama_3", None, False, False),
    ("85,", "llama_3", 85, True, True),
    (",85;", "llama_3", 85, True, True),
    ("85;,", "llama_3", 85, True, True),
    ("85,;", "llama_3", None, False, False),
    ("150", "llama_3", 150, True, True),
    ("999", "llama_3", 999, True, True),
    ("100", "llama_3", 100, True, True),
    ("0", "qwen_instruct", 0, False, False),
    ("007", "llama_3", 7, False, False),
    ("-5", "qwen_instruct", -5, False, False),
    ("+7", "qwen_instruct", 7, False, False),
    ("5_7", "llama_3", 57, True, False),
    ("\uff18\uff15", "llama_3", 85, True, True),
    ("85.", "llama_3", None, False, False),
    ("1e2", "llama_3", None, False, False),
    ("", "llama_3", None, False, False),
    ("  ", "qwen_instruct", None, False, False),
    ("s57", "llama_3", None, False, False),
    ("\n57", "llava_v1", 57, True, False),
    (" \n57", "llava_v1", 57, True, False),
    ("57s", "llava_v1", 57, True, False),
    ("</s>57", "llava_v1", 57, True, False),
    ("5,7", "llava_v1", None, False, False),
    ("150", "llava_v1", 150, True, True),
    ("85\n", "llava_v1", 85, True, True),
    ("s", "llava_v1", None, False, False),
    ("  ", "llava_v1", None, False, False),
    ("\n\n", "llava_v1", None, False, False),
    ("-5", "llava_v1", -5, False, False),
]


@pytest.mark.parametrize("reply, prompt_set, authors_int, keep_at_50, keep_at_85", AUTHORS_GOLDENS)
def test_reference_parser_reads_as_the_authors(reply, prompt_set, authors_int, keep_at_50, keep_at_85):
    from curation_pipeline.scoring.selection import select

    value, why = parse_reference_score(reply, prompt_set)
    if authors_int is None:
        assert math.isnan(value) and why  # unknown with a reason, never 0
    else:
        assert (value, why) == (float(authors_int), None)
    frame = pd.DataFrame({"mlm_su": [value]})
    assert bool(select(frame, "mlm_su >= 50").iloc[0]) is keep_at_50
    assert bool(select(frame, "mlm_su >= 85").iloc[0]) is keep_at_85


def test_reference_parser_reasons_and_huge_ints():
    assert parse_reference_score(None, "llama_3")[1] == "empty reply"
    assert parse_reference_score(" ", "llama_3")[1] == "empty reply"
    assert parse_reference_score("\n57", "qwen_instruct")[1] == "empty first line: '\\n57'"
    assert parse_reference_score("8.", "llama_3")[1] == "unparseable reply: '8.'"
    assert parse_reference_score("9" * 400, "llama_3") == (math.inf, None)  # their int() >= any threshold
    assert parse_reference_score("-" + "9" * 400, "llama_3") == (-math.inf, None)
    assert math.isnan(parse_reference_score("9" * 5000, "llama_3")[0])  # int()'s digit limit: their ValueError


def test_kept_out_of_range_scores_pass_the_range_check():
    """The authors keep "150"; the greedy column declares no range, so a shard holding it is not failed."""
    from curation_pipeline.scoring.registry import score_ranges
    from curation_pipeline.validation.tables import check_table

    ranges = score_ranges()
    assert "mlm_su" not in ranges and ranges["mlm_su_expected"] == (0, 100)
    df = pd.DataFrame({"key": ["a", "b"], "mlm_su": [150.0, -5.0], "mlm_su_expected": [88.0, 3.0]})
    result = check_table(df, required_columns=["key"], ranges={c: r for c, r in ranges.items() if c in df.columns})
    assert result.passed, result.failures


def test_token_tree_branches_see_only_their_ancestors():
    digits = type("T", (), {"kind": "digits", "ids": list(range(100, 110))})()
    tree = TokenTree.build([[5, 6], [7]], digits)
    assert tree.ids == [5, 6, *range(101, 110), 100, 7, *range(101, 110), 100]
    (last_a, branches_a, zero_a), (last_b, branches_b, zero_b) = tree.reads
    assert (last_a, zero_a, last_b) == (1, 11, 12)
    assert tree.depth[[0, 1, *branches_a, zero_a]].tolist() == [0, 1] + [2] * 9 + [3]
    assert tree.depth[[last_b, *branches_b, zero_b]].tolist() == [0] + [1] * 9 + [2]
    # "0" sees both suffix tokens, the branch "1" and itself; not "2".."9" nor the other metric.
    assert tree.ancestors[zero_a].nonzero().flatten().tolist() == [0, 1, branches_a[0], zero_a]
    assert not tree.ancestors[branches_a[1], branches_a[0]]
    assert not tree.ancestors[last_b, :last_b].any() and not tree.ancestors[zero_b, :last_b].any()
    assert tree.keep == [1, *branches_a, zero_a, last_b, *branches_b, zero_b]
    whole = type("T", (), {"kind": "whole", "ids": list(range(101))})()
    assert TokenTree.build([[]], whole).ids == []


# --- real tiny models ---

FAMILIES = {
    "llava": tiny_models.make_tiny_llava,
    "idefics3": tiny_models.make_tiny_idefics3,
    "qwen2vl": tiny_models.make_tiny_qwen2vl,
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def vlm_dir(request, tmp_path_factory):
    return FAMILIES[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def batch(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))[:3]
    images = [Image.open(p).convert("RGB") for p in paths]
    captions = ["A black dog runs through the grass.", "Two children play on the beach near the water.",
                "A man climbs a rock wall."]
    return PairBatch(["a", "b", "c"], captions, images)


def _peaked(scorer, scale=40.0):
    """Random heads give near-uniform next-token distributions; sharpen them so that any
    error in cache reuse, positions or masks shows in the scores."""
    with torch.no_grad():
        scorer.model.get_output_embeddings().weight.mul_(scale)
    return scorer


def test_shared_prefix_equals_separate_calls(vlm_dir, batch):
    scorer = _peaked(MlmFilterScorer(vlm_dir, min_mass=0.0, batch_size=2))
    shared, separate = scorer.score(batch), scorer.score_separate(batch)
    cols = [f"mlm_{m}_expected" for m in scorer.metrics]
    assert list(shared.columns) == list(scorer.columns)
    greedy = [f"mlm_{m}" for m in scorer.metrics]
    pd.testing.assert_frame_equal(shared[greedy], separate[greedy])
    values = shared[cols].to_numpy()
    assert np.isfinite(values).all() and values.std() > 0.1
    np.testing.assert_allclose(values, separate[cols].to_numpy(), atol=1e-3)
    single = MlmFilterScorer(vlm_dir, min_mass=0.0, batch_size=1)
    single.model = scorer.model
    np.testing.assert_allclose(single.score(batch)[cols].to_numpy(), values, atol=1e-3)


def test_the_cached_prompt_goes_by_the_name_the_model_takes(vlm_dir, batch):
    """transformers 5 renamed ``past_key_values`` to ``cache``; the old name is an alias only until 5.40, then it
    would vanish into ``forward``'s ``**kwargs`` and the tree's tokens be read without their prompt. No deprecation
    may be raised, and the scores stay those of separate full prompts."""
    import warnings

    scorer = _peaked(MlmFilterScorer(vlm_dir, metrics=("itm",), min_mass=0.0, batch_size=2))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)
        shared = scorer.score(batch)
    np.testing.assert_allclose(shared["mlm_itm_expected"].to_numpy(),
                               scorer.score_separate(batch)["mlm_itm_expected"].to_numpy(), atol=1e-3)


def test_models_before_the_rename_take_past_key_values():
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from curation_pipeline.models.loading import cache_argument, output_cache

    class Before(torch.nn.Module):  # a forward as transformers 4.x wrote it
        def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs):
            return None

    class After(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs):
            return None

    assert (cache_argument(Before()), cache_argument(After())) == ("past_key_values", "cache")
    kept = object()
    assert output_cache(CausalLMOutputWithPast(logits=torch.zeros(1), cache=kept)) is kept
    assert output_cache({"logits": torch.zeros(1), "past_key_values": kept}) is kept


def _next_digit_probs(model, inputs, appended, digit_ids):
    """Plain forward pass over the full sequence, no cache: the digit probabilities."""
    ids = torch.cat([inputs["input_ids"], torch.tensor([appended], dtype=torch.long)], dim=1)
    full = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids))
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros((1, len(appended)), dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = model(**full).logits[0, -1].float()
    return logits.softmax(-1)[digit_ids].numpy()


def test_logits_reading_matches_hand_computed_expectation(vlm_dir, batch):
    scorer = _peaked(MlmFilterScorer(vlm_dir, metrics=("itm",), min_mass=0.0))
    assert scorer.score_tokens.kind == "digits"
    digits = scorer.score_tokens.ids
    assert scorer.tokenizer.encode("100", add_special_tokens=False) == [digits[1], digits[0], digits[0]]
    text = scorer.prefix_text(batch.captions[0]) + scorer.suffix_text("itm")
    inputs = dict(scorer.processor(text=[text], images=[batch.images[0]], return_tensors="pt"))
    first = _next_digit_probs(scorer.model, inputs, [], digits)
    second = np.zeros((10, 10))
    for d in range(1, 10):
        second[d] = _next_digit_probs(scorer.model, inputs, [digits[d]], digits)
    after_ten = _next_digit_probs(scorer.model, inputs, [digits[1], digits[0]], digits)
    expected, _ = digit_split_expectation(first, second, after_ten)
    got = scorer.score(PairBatch(["a"], batch.captions[:1], batch.images[:1]))["mlm_itm_expected"][0]
    assert got == pytest.approx(expected, abs=1e-3)


def test_whole_number_tokenizer(tmp_path, batch):
    path = tiny_models.make_tiny_llava(tmp_path / "whole", digit_split=False)
    scorer = _peaked(MlmFilterScorer(path, metrics=("itm", "su"), min_mass=0.0))
    assert scorer.score_tokens.kind == "whole" and len(scorer.score_tokens.ids) == 101
    shared, separate = scorer.score(batch), scorer.score_separate(batch)
    cols = ["mlm_itm_expected", "mlm_su_expected"]
    np.testing.assert_allclose(shared[cols], separate[cols], atol=1e-3)
    assert shared["mlm_itm_expected"].between(0, 100).all()


def test_nan_paths(vlm_dir, batch):
    scorer = MlmFilterScorer(vlm_dir, metrics=("itm", "odf"), name="q")
    frame = scorer.score(PairBatch(["a", "b", "c"], [batch.captions[0], None, "  "],
                                   [None, batch.images[1], batch.images[2]]))
    assert frame[["q_itm", "q_odf", "q_itm_expected"]].isna().all().all()
    assert frame["q_itm_error"].tolist() == ["no image", "no caption", "no caption"]
    # A random model spreads its mass over the whole vocabulary: too little on digits to read.
    low = scorer.score(PairBatch(["a"], batch.captions[:1], batch.images[:1]))
    assert math.isnan(low["q_itm_expected"][0]) and "low score-token mass" in low["q_itm_error"][0]


def test_low_mass_keeps_its_reason_beside_a_parsed_greedy_score(tmp_path, batch):
    scorer = _peaked(MlmFilterScorer(tiny_models.make_tiny_llava(tmp_path / "vlm"), metrics=("itm",), min_mass=0.5))
    scorer._parse = lambda reply: (42.0, None)  # whatever the greedy reply, it parses
    frame = scorer.score(batch)
    assert frame["mlm_itm"].eq(42.0).all() and frame["mlm_itm_expected"].isna().all()
    errors = frame["mlm_itm_error"]
    assert errors.notna().all() and errors.str.fullmatch(r"low score-token mass \(0\.\d+\)").all()


def test_generate_mode_returns_scores_or_reasons(vlm_dir, batch, monkeypatch):
    scorer = _peaked(MlmFilterScorer(vlm_dir, mode="generate", metrics=("ctq",), min_mass=0.0))
    assert scorer.version.startswith("6:") and scorer.prompt_hash in scorer.version
    assert not scorer.version.endswith("float16")  # float32 on CPU: no precision in the version
    assert scorer.version.endswith(":parse2")  # a chat VLM's replies as parse_score reads them (the released: below)
    # generation decodes what logits mode reads greedily from its tree: the same integer (or none) per pair
    logits = MlmFilterScorer(vlm_dir, metrics=("ctq",), min_mass=0.0)
    logits.model = scorer.model
    frame, read = scorer.score(batch), logits.score(batch)
    np.testing.assert_array_equal(frame["mlm_ctq"].to_numpy(), read["mlm_ctq"].to_numpy())
    assert frame["mlm_ctq_error"].isna().tolist() == read["mlm_ctq"].notna().tolist()
    assert frame["mlm_ctq_expected"].isna().all()  # generation has no distribution to average
    # each reply becomes a score in 0-100 or NaN with the reason, never a guess
    replies = iter([["85", "none of these", "100"]])
    monkeypatch.setattr(scorer, "_greedy_replies", lambda images, captions, metric: next(replies))
    frame = scorer.score(batch)
    assert frame["mlm_ctq"].tolist()[0::2] == [85.0, 100.0] and math.isnan(frame["mlm_ctq"][1])
    assert frame["mlm_ctq_error"][0] is None and frame["mlm_ctq_error"][2] is None
    assert isinstance(frame["mlm_ctq_error"][1], str) and frame["mlm_ctq_error"][1]


def test_bad_arguments(vlm_dir):
    with pytest.raises(ValueError, match="metrics"):
        MlmFilterScorer(vlm_dir, metrics=("itm", "xyz"))
    with pytest.raises(ValueError, match="mode"):
        MlmFilterScorer(vlm_dir, mode="sample")


def test_mlm_dtype_setting_reaches_the_released_model():
    from curation_pipeline.scoring.profiles import ScoringProfile

    released = tiny_models.RELEASED
    profile = dict(name="mlm", mlm_model=str(released / "mlm-filter-llama-3-8b-tiny"), device="cpu",
                   mlm_vision_tower=str(released / "clip-vit-tiny-patch8-32"))
    assert ScoringProfile(**profile).mlm_dtype == "auto"
    assert MlmFilterScorer.from_profile(ScoringProfile(**profile)).dtype == torch.float32  # auto on CPU
    scorer = MlmFilterScorer.from_profile(ScoringProfile(**profile, mlm_dtype="bfloat16"))
    assert scorer.dtype == torch.bfloat16 and {p.dtype for p in scorer.model.parameters()} == {torch.bfloat16}
    assert scorer.version.endswith(":bfloat16")  # scores of another precision are other scores (no parse_score)
    # where its integers may not be the authors' (their one pass per pair and metric, in float32), it says so
    assert len(scorer.caveats) == 1
    assert "mlm.dtype: float32, or mlm.mode: generate with batch_size: 1" in scorer.caveats[0]
    assert not MlmFilterScorer.from_profile(ScoringProfile(**profile)).caveats  # float32
    one = MlmFilterScorer.from_profile(ScoringProfile(**profile, mlm_dtype="bfloat16", mlm_mode="generate",
                                                      batch_size=1))
    assert not one.caveats
    with pytest.raises(ValueError, match="mlm_dtype"):
        ScoringProfile(**profile, mlm_dtype="int8")
    from curation_pipeline.resources import ScoringResource  # the Dagster setting scoring.mlm.dtype

    assert ScoringResource(profile="mlm", mlm={"model": profile["mlm_model"], "dtype": "float16"}).as_profile().mlm_dtype == "float16"


def test_released_caption_with_the_image_token_is_nan_with_its_reason_up_front():
    """The reference fails on such a caption (its prompt gets two image slots); here the pair is NaN with
    a reason at once, the model never sees it and the rest of the batch scores."""
    released = tiny_models.RELEASED
    scorer = MlmFilterScorer(str(released / "mlm-filter-llama-3-8b-tiny"), metrics=("itm", "su"), min_mass=0.0,
                             vision_tower=str(released / "clip-vit-tiny-patch8-32"), batch_size=4)
    image = Image.open(released / "images" / "wide_48x32.png").convert("RGB")
    seen = []
    logits = scorer._logits
    scorer._logits = lambda images, captions, shared: seen.extend(captions) or logits(images, captions, shared)
    frame = scorer.score(PairBatch(["a", "b", "c"], ["a dog", "a photo <image> of a dog", "a cat"], [image] * 3))
    assert seen == ["a dog", "a cat"]
    assert frame["mlm_itm_error"][1] == frame["mlm_su_error"][1] == "caption holds the image token <image>"
    assert frame.loc[1, ["mlm_itm", "mlm_itm_expected", "mlm_su"]].isna().all()
    assert frame.loc[[0, 2], "mlm_itm"].notna().all()


def test_thresholds_on_the_greedy_score_are_still_checked_on_its_0_100_scale():
    """Kept values may fall outside 0-100; a policy's thresholds are still set on the scale the model is asked."""
    from curation_pipeline.decisions.policy import DecisionPolicy

    DecisionPolicy(quality_column="mlm_su", keep_threshold=85, drop_threshold=50)
    DecisionPolicy(keep_expression="mlm_su >= 85")
    with pytest.raises(ValueError, match="keep_threshold=150 is outside mlm_su's declared range 0..100"):
        DecisionPolicy(quality_column="mlm_su", keep_threshold=150, drop_threshold=50)
    with pytest.raises(ValueError, match="keep_expression compares mlm_su with 150, outside its declared range"):
        DecisionPolicy(keep_expression="mlm_su >= 150")
