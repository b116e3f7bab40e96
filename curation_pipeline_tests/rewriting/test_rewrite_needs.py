"""What judging a rewrite re-scores: the quality column only. A keep expression picks which captions are
rewritten; re-scoring its columns (four MLM prompts a candidate, images decoded for the cleaner) for a
result nobody reads was waste."""

from curation_pipeline.rewriting.targets import needed_columns, rewrite_needs_images


def test_a_keep_expression_does_not_make_the_cleaner_decode_images():
    needed = needed_columns("text_quality")
    assert needed == {"text_quality"}
    assert not rewrite_needs_images("cleaner", needed, "full")  # mlm_itm in a keep expression changes nothing
    assert rewrite_needs_images("cleaner", needed_columns("clip_score"), "clip")  # CLIPScore reads the image


def test_a_model_rewrite_judged_blind_and_unbounded_is_warned_of():
    """A VLM's fluent caption of another image, or a translation, scores better on text_quality: with no
    minimality bound nothing stops it, so the step says so (the reviewer's German caption became English)."""
    from curation_pipeline.rewriting.targets import blind_judge_warning
    from curation_pipeline.rewriting.verify import AcceptanceRules

    said = blind_judge_warning("vlm", needed_columns("text_quality"), "text", AcceptanceRules())
    assert "judged by text_quality, which does not see the image" in said and "min_similarity" in said
    assert blind_judge_warning("aitqe", needed_columns("text_quality"), "offline", AcceptanceRules()) is not None
    # a bound that keeps it near the original, a score that sees the image, or the cleaner (it only removes): no word
    text = needed_columns("text_quality")
    assert blind_judge_warning("vlm", text, "text", AcceptanceRules(min_similarity=0.5)) is None
    assert blind_judge_warning("vlm", text, "text", AcceptanceRules(max_edit_ratio=0.5)) is None
    assert blind_judge_warning("vlm", needed_columns("clip_score"), "clip", AcceptanceRules()) is None
    assert blind_judge_warning("cleaner", needed_columns("text_quality"), "text", AcceptanceRules()) is None
