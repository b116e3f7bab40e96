import math

import pytest

from curation_pipeline.rewriting.verify import AcceptanceRules, edit_ratio, judge, length_ratio
from curation_pipeline.scoring.signals.embedding import caption_similarity


# (original, candidate) -> (edit ratio, length ratio); edit = 1 - 2 * matched words / total words.
PAIRS = [
    ("A dog on the beach", "A dog on the beach", 0.0, 1.0),
    ("A dog", "A dog on the beach", 1 - 4 / 7, 2.5),  # 2 words kept, 3 added
    ("A dog on the beach", "A dog", 1 - 4 / 7, 0.4),
    ("A dog runs", "A cat runs", 1 - 4 / 6, 1.0),  # one word swapped
    ("IMG_2041.JPG A dog on the beach", "A dog on the beach", 1 - 10 / 11, 5 / 6),  # file name removed
    ("red car", "blue sky", 1.0, 1.0),
    ("A  dog\non grass", "A dog on grass", 0.0, 1.0),  # whitespace is not an edit
    # case and punctuation at a word's edges are no edit either: fixing them is minimal
    ("a dog", "A dog", 0.0, 1.0),
    ("GREYSCALE PHOTO OF TWO DOZEN OLD COINS.", "Greyscale photo of two dozen old coins.", 0.0, 1.0),
    ('"Two dogs"', "Two dogs", 0.0, 1.0),
    ("A dog on the beach .", "A dog on the beach.", 1 - 10 / 11, 5 / 6),  # a lone mark is a word removed
    ("A BIG DOG ON THE BEACH - Photo: Jane Doe", "A big dog on the beach", 1 - 12 / 16, 6 / 10),
    ("A dog's ball", "A dogs ball", 1 - 4 / 6, 1.0),  # punctuation inside a word still counts
    ("A dog runs on the beach", "Two cats sleep on a sofa", 1 - 2 / 12, 1.0),  # a rewording is still one
    ("", "", 0.0, math.nan),
    (None, "A dog", 1.0, math.nan),
    ("A dog", None, 1.0, 0.0),
    # words as the drift check counts them: each character of a script written without spaces
    ("一只狗在草地上", "一只棕色的狗在绿色的草地上奔跑", 1 - 14 / 22, 15 / 7),
]


def test_the_length_ratio_counts_words_as_the_drift_check_does():
    """A max_length_ratio bound must mean what the blocking check measures, in every script."""
    import pandas as pd

    from curation_pipeline.validation.lengths import caption_lengths

    for original, candidate in [("一只狗在草地上", "一只棕色的狗在绿色的草地上奔跑"), ("A dog,  on grass", "A dog on grass!")]:
        before, after = caption_lengths(pd.Series([original, candidate]))
        assert length_ratio(original, candidate) == after / before


@pytest.mark.parametrize("original, candidate, edit, length", PAIRS)
def test_minimality_measures(original, candidate, edit, length):
    assert edit_ratio(original, candidate) == pytest.approx(edit)
    assert length_ratio(original, candidate) == pytest.approx(length, nan_ok=True)


def test_the_readme_bound_allows_case_and_quote_fixes():
    """policy.acceptance.max_edit_ratio=0.5 (the README's example) refused every case or quote fix as "not
    minimal" when case and edge punctuation made each word "changed"."""
    rules = AcceptanceRules(max_edit_ratio=0.5)
    for original, candidate in [("GREYSCALE PHOTO OF TWO DOZEN OLD COINS ARRANGED IN ROWS ON A DARK BACKGROUND.",
                                 "Greyscale photo of two dozen old coins arranged in rows on a dark background."),
                                ('"Two dogs"', "Two dogs")]:
        edit = edit_ratio(original, candidate)
        assert 0.0 <= edit <= 0.5
        assert judge(60, 90, edit, length_ratio(original, candidate), math.nan, rules, original=original,
                     candidate=candidate) == (True, "score improved 60 -> 90")
    rewording = edit_ratio("A dog runs on the beach", "Two cats sleep on a sofa")
    assert rewording > 0.5 and not judge(60, 90, rewording, 1.0, math.nan, rules)[0]


def test_minilm_similarity_on_caption_pairs():
    originals = ["A dog runs on the beach.", "A dog runs on the beach.", "A dog runs on the beach.",
                 "Two children play football in a park."]
    candidates = ["A dog runs on the beach.", "A dog is running along the sand by the sea.",
                  "Quarterly earnings rose by five percent.", "Kids kick a ball around on the grass."]
    identical, paraphrase, unrelated, paraphrase2 = caption_similarity(originals, candidates)
    assert identical == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > 0.6 and paraphrase2 > 0.5
    assert unrelated < 0.2 and paraphrase > unrelated + 0.4


RULES = AcceptanceRules(min_improvement=5, max_edit_ratio=0.5, min_length_ratio=0.5, max_length_ratio=2.0,
                        min_similarity=0.7)


@pytest.mark.parametrize("before, after, edit, length, sim, accepted, reason", [
    (60, 90, 0.2, 1.0, 0.9, True, "score improved 60 -> 90"),
    (math.nan, 10, 0.2, 1.0, 0.9, True, "score improved unknown -> 10"),  # unscored: the margin over 0
    (60, math.nan, 0.2, 1.0, 0.9, False, "rewrite could not be scored"),
    (60, 64, 0.2, 1.0, 0.9, False, "score did not improve enough (60 -> 64, need +5)"),
    (60, 90, 0.6, 1.0, 0.9, False, "edit ratio 0.60 > 0.5 (not minimal)"),
    (60, 90, 0.2, 0.4, 0.9, False, "length ratio 0.40 < 0.5"),
    (60, 90, 0.2, 2.5, 0.9, False, "length ratio 2.50 > 2"),
    (60, 90, 0.2, 1.0, 0.5, False, "semantic similarity 0.50 < 0.7 (meaning changed)"),
    (60, 90, 0.2, math.nan, math.nan, True, "score improved 60 -> 90"),  # unknown bounds do not reject
])
def test_judge(before, after, edit, length, sim, accepted, reason):
    assert judge(before, after, edit, length, sim, RULES) == (accepted, reason)


def test_a_gain_equal_to_the_margin_passes_and_a_tie_never_does():
    # 0.3 - 0.2 is 0.09999999999999998 in binary: still the margin of 0.1
    assert judge(0.2, 0.3, 0, 1, 1, AcceptanceRules(min_improvement=0.1)) == (True, "score improved 0.2 -> 0.3")
    assert judge(50, 50, 0, 1, 1, AcceptanceRules(min_improvement=0)) == (
        False, "score did not improve enough (50 -> 50, need +0)")  # "accepted only if it scores better"
    assert judge(50, 50.5, 0, 1, 1, AcceptanceRules(min_improvement=0))[0]
    # numbers that differ are never printed alike
    assert judge(50, 59.99, 0, 1, 1, AcceptanceRules(min_improvement=1, min_quality=60)) == (
        False, "still weak after rewriting (59.99 < 60)")


def test_a_rewrite_under_what_its_filter_needs_is_rejected():
    """A pair outside the keep_fraction cut or failing keep_expression is published only at its ``rewrite_needs``:
    a rewrite under it is rejected saying so (a need just above the cut score is a tie-break place not drawn)."""
    import math

    rules = AcceptanceRules(min_improvement=1, min_quality=65)
    assert judge(70, 85, 0, 1, 1, rules, needs=90.0) == (False, "short of what its filter needs (85 < 90)")
    assert judge(70, 100, 0, 1, 1, rules, needs=math.nextafter(100.0, math.inf)) == (
        False, "short of what its filter needs (100, not above 100)")
    assert judge(70, 90, 0, 1, 1, rules, needs=90.0)[0] and judge(70, 90, 0, 1, 1, rules, needs=math.nan)[0]
    assert judge(50, 60, 0, 1, 1, rules, needs=90.0) == (False, "still weak after rewriting (60 < 65)")


def test_the_original_again_is_no_rewrite():
    """Accepted, an echo would publish unchanged a pair its decision filtered out (keep_fraction, keep_expression)."""
    rules = AcceptanceRules(min_improvement=0)
    assert judge(90, 100, 0.0, 1.0, 1.0, rules, original="A dog on a lawn", candidate="A dog on a lawn") == (
        False, "no change: the candidate is the original")
    # a fix of whitespace or case alone is a change (the cleaner's whitespace repairs)
    assert judge(90, 100, 0.0, 1.0, 1.0, rules, original="A dog \u00a0on a lawn", candidate="A dog on a lawn")[0]
    assert judge(90, 100, 0.0, 1.0, 1.0, rules, original="A DOG ON A LAWN", candidate="A dog on a lawn")[0]


@pytest.mark.parametrize("original, candidate, problem", [
    ("Zwei Kinder am Strand", "I'm sorry, but I can't help with identifying people in this image.",
     'model refusal "I\'m sorry, but"'),
    ("kids beach", "As an AI, I cannot see the image.", "model refusal 'As an AI'"),
    ("A cat on a mat. Photo: Jane", "A cat on a mat. (I removed the credit line.)", "model commentary 'I removed'"),
    ("A cat on a mat IMG_1.jpg", "A cat on a mat. Note: the file name was dropped.", "model commentary 'Note:'"),
    ("red barn dusk IMG_1.jpg", "Edited caption (minimal): A red barn at dusk.",
     "model lead-in 'Edited caption (minimal):'"),
    # a model that saw no image or judged the caption instead of editing it: with a judge blind to the image
    # (text_quality) each scored 100 and was published
    ("Stock Photo - dog on beach - 123456", "I don't see an image attached.", "model refusal \"I don't see\""),
    ("Stock Photo - dog on beach - 123456", "There is no image provided.",
     "model refusal 'There is no image provided'"),
    ("Stock Photo - dog on beach - 123456", "There is no image.", "model refusal 'There is no image'"),
    ("Stock Photo - dog on beach - 123456", "The caption is accurate.", "model refusal 'The caption is accurate'"),
    ("Stock Photo - dog on beach - 123456", "No edits are necessary.", "model refusal 'No edits are necessary'"),
    ("Stock Photo - dog on beach - 123456", "The caption does not match the image.",
     "model refusal 'The caption does not match'"),
    ("Stock Photo - dog on beach - 123456", "A dog on the beach. (Removed the stock photo credit and ID.)",
     "model commentary 'Removed'"),
    ("dog beach IMG_2.jpg", "Answer: A dog on the beach.", "model lead-in 'Answer:'"),
])
def test_a_reply_about_the_task_is_no_caption(original, candidate, problem):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == [problem]
    assert judge(10, 100, 0.5, 1.0, 0.9, AcceptanceRules(), original=original, candidate=candidate) == (
        False, f"malformed rewrite: {problem}")


@pytest.mark.parametrize("original, candidate, problem", [
    ("A store window with a '50% off' sign", "A store window with a '", "dangling quote \"'\""),
    ("A shop window with a ‘Free shipping’ sticker", "A shop window with a", "ends on 'a'"),
    ("A shop with a «50% off» poster", "A shop with a", "ends on 'a'"),
    # a possessive before it ("kids'") is no quote that the last mark would close
    ("The kids' toys in a store window with a '50% off' sign", "The kids' toys in a store window with a '",
     "dangling quote \"'\""),
    # an elision opens no quote that the last mark would close; nor does a closed guillemet pair
    ("A '90s diner with a 'Free refills' sign", "A '90s diner with a '", "dangling quote \"'\""),
])
def test_a_cut_before_a_quote_is_no_finished_caption(original, candidate, problem):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == [problem]


@pytest.mark.parametrize("original, candidate, problem", [
    # a credit cut out of a stock label it shared a word with ("Photo") left the label's first words
    ("Mountain lake at sunrise - Free Stock Photo by Pixabay", "Mountain lake at sunrise - Free Stock",
     "dangling label '- Free Stock'"),
    ("Cute kitten in a basket - Free Photo by Pexels", "Cute kitten in a basket - Free", "dangling label '- Free'"),
    ("Tibet - Free #travel", "Tibet - Free", None),  # the original's own whole segment
    ("Red dress - Size M Shop Now", "Red dress - Size M", None),  # no label words
])
def test_a_label_cut_in_its_middle_is_no_finished_caption(original, candidate, problem):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == ([problem] if problem else [])


def test_a_guillemet_that_opens_is_dangling_though_another_pair_closed():
    from curation_pipeline.rewriting.verify import _dangling_quote

    assert _dangling_quote("A shop with a «50% off» poster and a «")
    assert not _dangling_quote("Ein dänisches »Salg« Schild und »Tilbud «")  # closes the Danish »…«


@pytest.mark.parametrize("original, candidate", [
    ("Sorry Seems to Be the Hardest Word, live IMG_2.jpg", "Sorry Seems to Be the Hardest Word, live"),
    ("The flowers I kept from the wedding #love", "The flowers I kept from the wedding"),
    ("Note: the museum is closed on Mondays. www.example.com", "Note: the museum is closed on Mondays."),
])
def test_a_caption_with_such_words_of_its_own_passes(original, candidate):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == []


@pytest.mark.parametrize("original, candidate", [
    # a closing quote spaced as tokenised captions write it (Flickr, COCO): finished, not dangling
    ('behind her is a sign that says " active . " www.x.com', 'behind her is a sign that says " active . "'),
    ('A shop with a „Sale“ sign IMG_1.jpg', 'A shop with a „Sale“ sign'),
    # the cleaner repaired "Iâ€™m" to "I’m": still the original's words
    ("Iâ€™m sorry card with a teddy bear #card #sorry #teddy", "I’m sorry card with a teddy bear"),
    # tokenised single quotes, spaced on both sides
    ("a shop sign that says ' open ' | Free shipping on all orders", "a shop sign that says ' open '"),
    # fresh captions (no original) that only look like model talk
    (None, "Sorry, we're closed sign on a door"), (None, "I can't believe it's not butter tub on a shelf"),
    (None, "A 'Note:' label on a jar"),
])
def test_ordinary_captions_are_no_model_talk_or_dangling_quote(original, candidate):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == []


def test_disabled_bounds_accept_any_improvement():
    assert judge(10, 11, 1.0, 9.0, -1.0, AcceptanceRules())[0]


@pytest.mark.parametrize("original", [None, "", "   "])
def test_a_fresh_caption_is_not_bound_by_edit_or_similarity(original):
    """A pair without a caption gets a new one, not an edit: edit ratio 1.0 and a low similarity to ""
    would reject it whatever its score."""
    candidate = "A brown dog runs across a green lawn."
    rules = AcceptanceRules(max_edit_ratio=0.6, min_similarity=0.5, min_length_ratio=0.5)
    assert judge(0, 90, edit_ratio(original, candidate), length_ratio(original, candidate), 0.04, rules,
                 original=original, candidate=candidate) == (True, "score improved 0 -> 90")
    # with words in the original, the same numbers reject
    assert judge(0, 90, 1.0, 1.0, 0.04, rules, original="dog", candidate=candidate)[1].startswith("edit ratio 1.00")


def test_a_caption_of_only_the_image_placeholder_is_fresh_when_the_rewriter_says_so():
    """A VLM asks NO_CAPTION_PROMPT for "<image>" (its placeholder removed, nothing is left): the judge told
    so treats the reply as a fresh caption, bounds off, as for None."""
    candidate = "A brown dog runs across a green lawn."
    rules = AcceptanceRules(max_edit_ratio=0.6, max_length_ratio=2.0, min_similarity=0.5)
    assert judge(0, 90, 1.0, 8.0, 0.04, rules, original="<image>", candidate=candidate, fresh=True) == (
        True, "score improved 0 -> 90")
    assert not judge(0, 90, 1.0, 8.0, 0.04, rules, original="<image>", candidate=candidate, fresh=False)[0]


@pytest.mark.parametrize("before, after, min_quality, accepted, reason", [
    (40, 60, 65, False, "still weak after rewriting (60 < 65)"),
    (40, 65, 65, True, "score improved 40 -> 65"),
    (40, 60, None, True, "score improved 40 -> 60"),  # off by default: the old behaviour
    (60, 60.5, 65, False, "score did not improve enough (60 -> 60.5, need +1)"),  # improvement is checked first
])
def test_min_quality(before, after, min_quality, accepted, reason):
    rules = AcceptanceRules(min_quality=min_quality)
    assert AcceptanceRules().min_quality is None
    assert judge(before, after, 0.2, 1.0, 0.9, rules, original="dog beach pic",
                 candidate="A dog on a beach.") == (accepted, reason)


# A cut in mid-clause leaves a word no caption ends on; a subdivision flag's tag characters are no control characters.
@pytest.mark.parametrize("original, candidate, problem", [
    ("Container ships wait in an international shipping lane off Singapore", "Container ships wait in an",
     "ends on 'an'"),
    ("The ticket booth where tickets cost only $5 in 1950", "The ticket booth where tickets cost", "ends on 'cost'"),
    ("A dog that is not a stock photo", "A dog that is not a", "ends on 'a'"),
    ("CONTAINER SHIPS WAIT IN AN INTERNATIONAL SHIPPING LANE", "container ships wait in an", "ends on 'an'"),
    ("Ships wait in an&nbsp;international lane", "Ships wait in an", "ends on 'an'"),
    # a verb whose object was cut, a side without its other
    ("Shop window displaying 50% off signs on Black Friday", "Shop window displaying", "ends on 'displaying'"),
    ("Shoppers wait outside a store offering free shipping", "Shoppers wait outside a store offering",
     "ends on 'offering'"),
    ("World Cup final 2019 - USA vs Netherlands | AP Photo", "World Cup final 2019 - USA vs", "ends on 'vs'"),
])
def test_a_rewrite_may_not_stop_mid_clause(original, candidate, problem):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert problem in wellformedness_problems(candidate, original)


@pytest.mark.parametrize("original, candidate", [
    # a noun the offer verbs' -s forms spell ends a caption
    ("A beautiful girl with striking facial features stock photo", "A beautiful girl with striking facial features"),
    ("Kids watching their favorite TV shows Getty Images", "Kids watching their favorite TV shows"),
    ("A man looks on - Photo: Jane Doe", "A man looks on"),  # a particle, not a preposition
    ("What the dog is waiting for", "What the dog is waiting for"),  # the original ends so itself
    # a name, not an article or conjunction: the rule reads lower-case words only
    ("gate a passengers waiting", "Passengers waiting at Gate A"),
    ("downtown portland oregon skyline photo", "Downtown skyline of Portland, OR"),
    # a function word in English, a whole clause elsewhere; the original went on after a separator or a tag
    ("Un joueur marque un but #football #sport", "Un joueur marque un but"),
    ("Een vrouw hangt de was #zomer #thuis", "Een vrouw hangt de was"),
    ("Der Zug kommt am Bahnhof an - Foto: Jane Doe", "Der Zug kommt am Bahnhof an"),
    ("Ein Mann schaut sich Bilder", "Ein Mann schaut sich die Bilder im Museum an"),  # a rewrite, no cut
    (None, "Der Zug kommt am Bahnhof an"),  # a fresh caption cut nothing
    ("England fans celebrate \U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F #football #worldcup",
     "England fans celebrate \U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F"),
])
def test_finished_captions_pass(original, candidate):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == []


def test_a_stray_tag_character_is_still_invisible():
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert "invisible or control characters" in wellformedness_problems("A dog\U000E0067 on the beach", "A dog")


# The cleaner's own repairs end on a name or a particle, no cut in mid-clause: verify accepts them.
@pytest.mark.parametrize("original, expected", [
    ("Vitamin A - Shutterstock ID 123456", "Vitamin A"),
    ("Der Zug kommt am Bahnhof an - Foto: Jane Doe", "Der Zug kommt am Bahnhof an"),
    ("Passengers waiting at Gate A #airport", "Passengers waiting at Gate A"),
])
def test_the_cleaners_repairs_pass(original, expected):
    from curation_pipeline.rewriting.cleaner import clean_caption
    from curation_pipeline.rewriting.verify import wellformedness_problems

    candidate, _ = clean_caption(original)
    assert candidate == expected
    assert wellformedness_problems(candidate, original) == []


@pytest.mark.parametrize("original,candidate,said", [
    ("Built in 1850, the old mill. Source: Wikipedia", "Built in 1950, the old mill.",
     "a number the original does not have (1950)"),
    ("Two dogs play | Getty", "Three dogs play", "a number the original does not have (three)"),
    ("smiling man | Getty", "not smiling man", "a negation added ('not' before 'smiling')"),
    # the same figure written otherwise, and "no" as a number's sign, are no change
    ("A crowd of 1,000 | Getty", "A crowd of 1000", None),
    ("three dogs in a park | Getty", "3 dogs in a park", None),
    ("Meeting at 10.30 | Getty", "Meeting at 10:30", None),
    ("Platform no. 9 | Getty", "Platform number 9", None),
    ("No. 10 Downing Street | Getty", "10 Downing Street", None),
    ("This shirt is not 100% cotton | Getty", "This shirt is 100% cotton", "a negation dropped ('not' before '100')"),
    ("A dog | Getty", "One dog", None),  # "one" is as often "a": not read as a figure
    ("A man who is not smiling | Getty Images", "A man who is smiling.", "a negation dropped ('not' before 'smiling')"),
    ("There is no dog", "There is a dog", "a negation dropped ('no' before 'dog')"),
    ("A man without a hat", "A man with a hat", "a negation dropped ('without' before 'hat')"),
    ("A dog that isn't barking", "A dog that is not barking", None),
    ("A dog, not a cat, sits | Getty", "A dog sits on a mat", None),  # the negated word is gone with its negation
    ("Two dogs play. Photo: Jane Doe 2019", "Two dogs play.", None),  # numbers removed with the noise
    ("Crowd at 10:30 in Paris #news", "Crowd at 10:30 in Paris.", None),
    # figures of several words, or of a scale word, are one figure each: as new, and as the same one in digits
    ("Three dogs on the beach #dogs", "Twenty-three dogs on the beach.", "a number the original does not have "
     "(twenty-three)"),
    ("coins", "A hundred old coins", "a number the original does not have (a hundred)"),
    ("eggs in a box", "A dozen eggs in a box", "a number the original does not have (a dozen)"),
    ("a crowd | Getty", "a crowd of two hundred thousand",
     "a number the original does not have (two hundred thousand)"),
    ("twenty three dogs | Getty", "23 dogs", None),
    ("a dozen eggs | Getty", "12 eggs", None),
    ("two hundred and five birds | Getty", "205 birds", None),
    ("a seven-year-old boy | Getty", "a 7-year-old boy", None),
    ("A thousand and one nights | Getty", "1001 nights", None),
    ("three cats and two dogs | Getty", "3 cats and 2 dogs", None),  # two figures, not 5 or 32
    # a hyphenated modifier's number is its own: "forty five-star hotels" are 40, not 45
    ("forty five-star hotels in Paris | Getty", "40 five-star hotels in Paris.", None),
    ("forty five-star hotels in Paris | Getty", "45 hotels in Paris.", "a number the original does not have (45)"),
    ("a dozen three-year-olds at a party | Getty", "15 kids at a party.",
     "a number the original does not have (15)"),
    # the same figures on other words: counts swapped, or a measure's unit changed
    ("Three dogs and two cats | Getty", "Two dogs and three cats", "a number on another word (2 dogs (the original: "
     "3 dogs))"),
    ("A 5 kg bag of rice | Getty", "A 5 lb bag of rice", "a number on another word (5 lb (the original: 5 kg))"),
    ("A man with 2 kids | Getty", "A man with his 2 children", None),  # a word for the same count
    ("two cats and two dogs | Getty", "two dogs and two cats", None),
    # digits of other scripts state the same figure; Chinese and Japanese numerals are figures
    ("٣ قطط | Getty", "3 قطط", None),
    ("三只猫在沙发上 | Getty", "四只猫在沙发上", "a number the original does not have (四)"),
    ("三只猫在沙发上 | Getty", "3只猫在沙发上", None),
    # the same facts: a unit spelled out, a list reordered, a figure of words, 一 as "a" or in a word
    ("A 5 lb bag | Getty", "A 5 pounds bag", None),
    ("A 6 ft tall man | Getty", "A 6 feet tall man", None),
    ("Players 10 and 7 celebrate | Getty", "Players 7 and 10 celebrate", None),
    ("twenty three dogs and three cats | Getty", "23 dogs and 3 cats", None),
    ("猫在沙发上 | Getty", "一只猫在沙发上", None),
    ("千葉の海 | Getty", "千葉の海辺", None),
])
def test_changed_facts_are_a_number_added_or_a_negation_dropped(original, candidate, said):
    from curation_pipeline.rewriting.verify import changed_facts

    assert changed_facts(original, candidate) == said
    rules = AcceptanceRules(keep_facts=True)
    accepted, reason = judge(40.0, 100.0, 0.1, 1.0, 0.9, rules, original=original, candidate=candidate)
    assert (accepted, reason) == ((True, "score improved 40 -> 100") if said is None else
                                  (False, f"changes what a text-only judge cannot check: {said}"))
    assert judge(40.0, 100.0, 0.1, 1.0, 0.9, AcceptanceRules(), original=original, candidate=candidate)[0]


@pytest.mark.parametrize("candidate", [
    "There is no image on the screen of a phone in a hand.", "No image editing software on a laptop screen",
    "The caption contest winner holds a trophy", "A poster that says I don't see colour",
])
def test_a_caption_about_images_or_captions_is_no_model_talk(candidate):
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, "IMG_1.jpg phone") == []


@pytest.mark.parametrize("original, candidate", [
    ("Chanel No. 5 bottle IMG_1.jpg", "A bottle of Chanel No. 5"),
    ("Time magazine Vol. 12 | Getty Images", "The cover of Time magazine, Vol. 12"),
    ("Results slide Fig. 2 IMG_3.jpg", "A slide titled Results, Fig. 2"),
    # a link the original held whole, kept as it was (a sign reading it), is the caption's own text
    ("Visit www.shop.com for deals IMG_2.jpg", "Visit www.shop.com for deals"),
])
def test_text_an_image_shows_is_no_fragment_or_debris(original, candidate):
    """AITQE describes text shown in the image: a period after No., Vol. or Fig. read as a sentence end left a
    'dangling fragment', and a link kept whole was 'link debris'."""
    from curation_pipeline.rewriting.verify import wellformedness_problems

    assert wellformedness_problems(candidate, original) == []
    assert wellformedness_problems("A dog http://x.co", "A dog http://x.co/a") == ["link debris"]  # a link cut short
