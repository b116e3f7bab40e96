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


def test_a_model_rewrite_judged_blind_keeps_the_facts():
    """text_quality scores "Built in 1950" and "A man who is smiling" as well as the captions they misstate: with
    the bounds the warning asks for, a canned VLM's such rewrites were accepted. Judged blind, the rules keep the
    facts (a number added, a negation dropped); judged by a score that sees the image, a count corrected to it
    passes there."""
    import functools

    from PIL import Image

    from curation_pipeline.pairs import PairBatch
    from curation_pipeline.rewriting.attempts import rewrite_batches
    from curation_pipeline.rewriting.targets import judged_blind
    from curation_pipeline.rewriting.verify import AcceptanceRules
    from curation_pipeline.rewriting.vlm import DEFAULT_PROMPT, GeneratingRewriter, VlmRewriter
    from curation_pipeline.scoring.signals.embedding import caption_similarity
    from curation_pipeline.scoring.text_quality import CaptionTextQuality

    text = needed_columns("text_quality")
    assert judged_blind("vlm", text, "text") and judged_blind("aitqe", text, "offline")
    assert not judged_blind("cleaner", text, "text") and not judged_blind("vlm", needed_columns("clip_score"), "clip")
    replies = {"A man who is not smiling | Getty Images": "A man who is smiling.",
               "Built in 1850, the old mill. Source: Wikipedia": "Built in 1950, the old mill.",
               "Two dogs play in the park. Photo: Jane Doe": "Two dogs play in the park."}

    class Canned:
        image_token = None

        def without_image_token(self, text):
            return text

        def generate(self, images, instructions):
            return [next(reply for caption, reply in replies.items() if caption in instruction)
                    for instruction in instructions]

    rewriter = object.__new__(VlmRewriter)
    GeneratingRewriter.__init__(rewriter, DEFAULT_PROMPT, 8, "x")
    rewriter.version, rewriter.generator = "canned", Canned()
    keys = [str(i) for i in range(len(replies))]
    batch = PairBatch(keys, list(replies), [Image.new("RGB", (32, 32))] * len(keys))
    scorer = CaptionTextQuality()
    before = dict(zip(keys, scorer.score(batch)["text_quality"]))

    def judged(keep_facts):
        rules = AcceptanceRules(max_edit_ratio=0.3, min_similarity=0.5, min_quality=65, keep_facts=keep_facts)
        lineage = rewrite_batches([batch], shard="s", rewriter=rewriter, rescore=scorer.score,
                                  quality_column="text_quality", scores_before=before, rules=rules, run_id="r",
                                  similarity=functools.partial(caption_similarity), prefetch_depth=0)
        return dict(zip(lineage["original_caption"], zip(lineage["accepted"], lineage["reason"])))

    assert all(accepted for accepted, _ in judged(False).values())  # the bounds alone let both misstatements by
    kept = judged(True)
    assert kept["A man who is not smiling | Getty Images"] == (
        False, "changes what a text-only judge cannot check: a negation dropped ('not' before 'smiling')")
    assert kept["Built in 1850, the old mill. Source: Wikipedia"] == (
        False, "changes what a text-only judge cannot check: a number the original does not have (1950)")
    assert kept["Two dogs play in the park. Photo: Jane Doe"][0]  # the credit removed, nothing else
