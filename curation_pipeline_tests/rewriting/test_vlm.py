import pytest
from PIL import Image

from curation_pipeline.models.loading import ModelUnavailableError
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.base import CODE_VERSIONS
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.rewriting.vlm import (DEFAULT_PROMPT, NO_CAPTION_PROMPT, GeneratingRewriter, VlmRewriter,
                                             clean_output)
from curation_pipeline.scoring.text_quality import CaptionTextQuality
from curation_pipeline_tests import tiny_models


@pytest.mark.parametrize("reply, expected", [
    ("A dog on the beach.", "A dog on the beach."),
    ('Caption: "A dog on the beach."', "A dog on the beach."),
    ("**Edited caption:** A cat on a mat", "A cat on a mat"),
    ("Here is the corrected caption: Two kids play.", "Two kids play."),
    ("Here is the edited caption:\n\nA dog   runs\tfast.\nIt is brown.", "A dog runs fast."),
    ("“Two kids on the sand”", "Two kids on the sand"),
    ('"A dog on the', "A dog on the"),  # cut off before the closing quote
    ('A sign reads "Open" today', 'A sign reads "Open" today'),
    ("a\x00b\x10c\ufffd", "abc"),
    # quotes that open and close two quoted words are no pair around the whole reply
    ('"Jaws" poster next to a poster of "Alien"', '"Jaws" poster next to a poster of "Alien"'),
    ("'Jaws' poster next to 'Alien'", "'Jaws' poster next to 'Alien'"),
    ('Caption: "Open" sign that says "Welcome"', '"Open" sign that says "Welcome"'),
    ("'A dog's ball on the grass'", "A dog's ball on the grass"),  # an apostrophe is no quote
    ("", ""), ("  \n\n ", ""), (None, ""), ('""', ""),
    # chat lead-ins: a courtesy word, then "(the) edited/revised/new/... caption (is)" and ":" or a dash
    ("The edited caption is: A dog runs on the grass.", "A dog runs on the grass."),
    ("Revised caption - A cat on a mat.", "A cat on a mat."),
    ("Sure, here is the edited caption: A red barn.", "A red barn."),
    ("Certainly! The new caption is: \"A dog.\"", "A dog."),
    ("Okay. Caption – Two kids play.", "Two kids play."),
    # ... but only a lead-in: the caption's own words stay
    ("Okay sign painted on a wall", "Okay sign painted on a wall"), ("Sure thing, a dog", "Sure thing, a dog"),
    ("Caption-worthy sunset over the sea", "Caption-worthy sunset over the sea"),
    # markdown: header and quote marks, emphasis around the line, a line that only announces (a courtesy word,
    # a label with or without its colon or dash)
    ("### Caption\nA dog runs on the grass.", "A dog runs on the grass."),
    ("> A dog runs on the grass.", "A dog runs on the grass."),
    ("**Edited caption:**\nA dog runs.", "A dog runs."), ("Edited caption -\nA dog runs.", "A dog runs."),
    ("Sure.\nA dog runs.", "A dog runs."), ("Here you go!\n**Caption:** A dog.", "A dog."),
    ("**A dog runs.**", "A dog runs."), ("Edited caption (minimal):\nA red barn.", "A red barn."),
    ("A file_name_here.jpg", "A file_name_here.jpg"), ("Done", "Done"),  # a one-line reply is the caption
    ("> 50 people protest outside city hall", "> 50 people protest outside city hall"),  # more than 50, no quote
    # a generic label ("Answer:", "Output:"), and emphasis whose opening mark went with the label
    ("Answer: A dog on the beach.", "A dog on the beach."), ("Output: **A dog.**", "A dog."),
    ("Caption: **A dog on the beach.**", "A dog on the beach."), ("A dog __init__ file", "A dog __init__ file"),
    ("Result: 2-1 win at home", "Result: 2-1 win at home"),  # a scoreboard's own words
])
def test_clean_output(reply, expected):
    assert clean_output(reply) == expected


class _CannedGenerator:
    image_token = None

    def __init__(self, replies):
        self.replies = replies

    def without_image_token(self, text):
        return text

    def generate(self, images, instructions):
        return [next(r for c, r in self.replies.items() if c in t) for t in instructions]


def test_a_reply_with_a_chat_lead_in_is_accepted_without_it():
    """The lead-in used to be published ("The edited caption is: A dog ...") or to sink a good rewrite
    ("Sure, here is the edited caption:" read as a dangling label)."""
    rewriter = object.__new__(VlmRewriter)  # its own prompt and reply parsing; canned replies instead of a model
    GeneratingRewriter.__init__(rewriter, DEFAULT_PROMPT, 8, "x")
    replies = {"A dog runs on the grass. Photo: Jane Doe": "The edited caption is: A dog runs on the grass.",
               "A cat on a mat. Credit: Jane Doe/Reuters": "Revised caption - A cat on a mat.",
               "A red barn. Image: Getty Images": "Sure, here is the edited caption: A red barn."}
    rewriter.version, rewriter.generator = "test", _CannedGenerator(replies)
    keys = ["a", "b", "c"]
    batch = PairBatch(keys, list(replies), [Image.new("RGB", (32, 32))] * 3)
    scorer = CaptionTextQuality()
    before = dict(zip(keys, scorer.score(batch)["text_quality"]))
    lineage = rewrite_batches([batch], shard="s", rewriter=rewriter, rescore=scorer.score,
                              quality_column="text_quality", scores_before=before,
                              rules=AcceptanceRules(min_quality=65), run_id="r")
    assert lineage["candidate_caption"].tolist() == ["A dog runs on the grass.", "A cat on a mat.", "A red barn."]
    assert lineage["accepted"].all(), lineage["reason"].tolist()


def test_prompt_needs_caption_placeholder():
    with pytest.raises(ValueError, match=r"\{caption\}"):
        VlmRewriter("/nonexistent/model", prompt="Rewrite the caption.")
    with pytest.raises(ModelUnavailableError, match="no directory"):
        VlmRewriter("/nonexistent/model")


@pytest.fixture(scope="module", params=["llava", "idefics3"])
def model_dir(request, tmp_path_factory):
    make = {"llava": tiny_models.make_tiny_llava, "idefics3": tiny_models.make_tiny_idefics3}[request.param]
    return make(tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def batch(flickr_dir):
    images = [Image.open(p).convert("RGB") for p in sorted((flickr_dir / "images").glob("*.jpg"))[:3]]
    return PairBatch(["a", "b", "c"], ["A dog runs.", None, "Two kids <image> play {outside}"], images)


def test_generates_cleaned_candidates(model_dir, batch):
    rewriter = VlmRewriter(model_dir, max_new_tokens=8, batch_size=2)
    assert rewriter.ident.startswith(f"vlm@{CODE_VERSIONS['vlm']}:") and model_dir in rewriter.version
    assert rewriter.prompt == DEFAULT_PROMPT and len(rewriter.prompt_hash) == 16
    calls, generate = [], rewriter.generator.generate

    def spy(images, texts):
        replies = generate(images, texts)
        for reply in replies:  # as finished replies (a random model uses its whole budget): the cleaning is tested
            reply.cut_off = False
        calls.append((images, texts, replies))
        return replies

    rewriter.generator.generate = spy
    candidates = rewriter.rewrite(batch)
    # the model saw each image with its own caption's instruction, in order, two at a time
    assert [len(images) for images, _, _ in calls] == [2, 1]
    assert [im for images, _, _ in calls for im in images] == batch.images
    assert [t for _, texts, _ in calls for t in texts] == [rewriter.instruction(c) for c in batch.captions]
    assert "A dog runs." in calls[0][1][0] and calls[0][1][1] == NO_CAPTION_PROMPT
    assert "<image>" not in calls[1][1][0] and "{outside}" in calls[1][1][0]
    # each candidate is its own reply, cleaned
    replies = [r for _, _, batch_replies in calls for r in batch_replies]
    assert [c.raw for c in candidates] == replies and all(isinstance(r, str) for r in replies)
    for cand in candidates:
        assert cand.caption == (clean_output(cand.raw) or None)
        assert (cand.caption is None) == (cand.error == "empty output")
    # Left padding: a batch of three gives what batches of two and one give.
    assert [c.raw for c in VlmRewriter(model_dir, max_new_tokens=8, batch_size=3).rewrite(batch)] == \
        [c.raw for c in candidates]


def test_a_reply_cut_off_at_max_new_tokens_is_no_candidate(model_dir, batch):
    """A random tiny model never ends its reply: cut at 3 tokens, mid-phrase, it must not be judged as a
    finished caption (verify cannot tell "a dog on the" from a finished caption in every language)."""
    candidates = VlmRewriter(model_dir, max_new_tokens=3, batch_size=3).rewrite(batch)
    assert [(c.caption, c.error) for c in candidates] == [
        (None, "reply cut off at max_new_tokens (raise rewriter.max_new_tokens)")] * len(batch)
    assert all(isinstance(c.raw, str) and type(c.raw) is str for c in candidates)


def test_a_reply_cut_off_after_its_caption_line_keeps_that_line():
    """A chatty model that goes on to explain its edit runs out of tokens after a finished caption line."""
    from curation_pipeline.rewriting.vlm import Reply

    def reply(text: str) -> Reply:
        r = Reply(text)
        r.cut_off = True
        return r

    kept = VlmRewriter._candidate(reply("A dog runs on the grass.\n\nI removed the photographer credit and"))
    assert (kept.caption, kept.error) == ("A dog runs on the grass.", None)
    cut = VlmRewriter._candidate(reply("Edited caption:\nA dog runs on the"))  # the caption line itself was cut
    assert (cut.caption, cut.error) == (None, "reply cut off at max_new_tokens (raise rewriter.max_new_tokens)")


def test_cut_off_is_a_full_budget_without_an_end_token():
    import torch

    from curation_pipeline.rewriting.vlm import cut_off

    generated = torch.tensor([[5, 6, 7], [5, 2, 0], [5, 6, 2]])  # 2 = eos, 0 = pad after an earlier eos
    assert cut_off(generated, 3, {2, 0}) == [True, False, False]
    assert cut_off(generated[:, :2], 3, {2, 0}) == [False, False, False]  # all ended before the budget


def test_instructions(model_dir):
    rewriter = VlmRewriter(model_dir, prompt="Fix: {caption} (keep {braces})", max_new_tokens=2)
    assert rewriter.instruction(" A dog ") == "Fix: A dog (keep {braces})"
    assert rewriter.instruction(None) == NO_CAPTION_PROMPT == rewriter.instruction("  ")
    assert "<image>" not in rewriter.instruction("A <image> dog")
    assert rewriter.prompt_hash != VlmRewriter(model_dir, max_new_tokens=2).prompt_hash


def test_beam_search_is_deterministic(model_dir, batch, monkeypatch):
    rewriter = VlmRewriter(model_dir, max_new_tokens=4, num_beams=2)
    seen, generate = [], rewriter.generator.model.generate

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("num_beams", "do_sample", "max_new_tokens")})
        return generate(*args, **kwargs)

    monkeypatch.setattr(rewriter.generator.model, "generate", spy)
    first = [c.raw for c in rewriter.rewrite(batch)]
    assert first == [c.raw for c in rewriter.rewrite(batch)]
    # beam search really ran (2 beams, no sampling, the token budget), and it is what the version records
    assert seen and all(s == {"num_beams": 2, "do_sample": False, "max_new_tokens": 4} for s in seen)
    assert "beams=2" in rewriter.version and "beams=1" in VlmRewriter(model_dir, max_new_tokens=4).version


def test_empty_output_and_missing_image(model_dir, batch, monkeypatch):
    rewriter = VlmRewriter(model_dir, max_new_tokens=2)
    monkeypatch.setattr(rewriter.generator, "generate", lambda images, texts: ["  \n", '"Caption:"'][:len(images)])
    candidates = rewriter.rewrite(PairBatch(["a", "b", "c"], ["x", "y", "z"], [batch.images[0], None, batch.images[1]]))
    assert [(c.caption, c.error, c.raw) for c in candidates] == [
        (None, "empty output", "  \n"), (None, "no image", None), (None, "empty output", '"Caption:"')]


def test_bad_generation_settings(model_dir):
    with pytest.raises(ValueError, match="num_beams"):
        VlmRewriter(model_dir, num_beams=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        VlmRewriter(model_dir, max_new_tokens=0)
