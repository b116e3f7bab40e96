"""What judging a rewrite re-scores: the quality column only. A keep expression picks which captions are
rewritten; re-scoring its columns (four MLM prompts a candidate, images decoded for the cleaner) for a
result nobody reads was waste."""

from curation_pipeline.rewriting.targets import needed_columns, rewrite_needs_images


def test_a_keep_expression_does_not_make_the_cleaner_decode_images():
    needed = needed_columns("text_quality")
    assert needed == {"text_quality"}
    assert not rewrite_needs_images("cleaner", needed, "full")  # mlm_itm in a keep expression changes nothing
    assert rewrite_needs_images("cleaner", needed_columns("clip_score"), "clip")  # CLIPScore reads the image
