"""The cleaner removes noise, never words of the description: a noise word used as prose stays, and markup
that only shows up once entities are decoded goes."""

import pytest

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.base import RewriteCandidate
from curation_pipeline.rewriting.cleaner import CaptionCleaner
from curation_pipeline.scoring.text_quality import caption_rules


def clean_one(caption) -> RewriteCandidate:
    return CaptionCleaner().rewrite(PairBatch(["k"], [caption]))[0]


# Ordinary captions whose words the noise rules once took for boilerplate, credits or ads.
PROSE = [
    "A man downloads a file on his laptop.",
    "A close-up of a painted thumbnail.",
    "A woman holds a sign that says Free Downloads.",
    "A photo 2019 of the family.",
    "Via Appia, an ancient Roman road.",
    "Copyright law books on a shelf.",
    "An old poster: Buy now, pay later!",
    "A man taking a stock photo of a dog",
    "A family photo 2019",
    "The website offers a free download.",
    # ad phrases a description uses too: an ad only with no description in their clause
    "New arrivals at the zoo: two baby pandas rest in their enclosure",
    "Students learn more about robots at the science fair",
    "Container ships wait in an international shipping lane off Singapore",
    "Two ships within sight of the coast at dawn",
    "Empty shelves with low stock of toilet paper during the pandemic",
    "Visitors browse the collection at the Louvre museum",
    "Developers use code editors on their laptops at a hackathon",
    "Young woman shop online with a credit card on her sofa",
    "Blondie performing Call Me at Madison Square Garden, 1979",
    "Farmers sell vegetables at wholesale prices at the market",
    "The ticket booth where tickets cost only $5 in 1950",
    "Book now button on a website",
    "A woman checks her phone, Hurry, the bus is leaving",
    "Limited edition prints hang in a gallery in Soho",
    "A new arrival: a baby giraffe at the zoo",
    # a site's name used as a name is no link
    "A sign for Hotels.com in Times Square",
    "A screenshot of Reddit.com's front page",
    "Booking.com headquarters in Amsterdam",
    # a stock label as the object of its clause
    "Photographer uploading stock photos",
    "A dog that is not a stock photo",
    "A designer browsing royalty free images",
    # words of wallpaper, vector, video and photo-site boilerplate, and lists, in descriptions
    "A man hanging wallpaper in a kitchen",
    "A laptop showing an HD wallpaper",
    "A 4K TV and a 1920x1080 monitor on a desk",
    "A designer drawing a vector illustration",
    "A physics teacher draws a vector on the board",
    "A boy watching YouTube on a tablet",
    "Logos of Facebook, Twitter and YouTube",
    "Trees in the rainforest | Amazon",
    "A nice photo by the lake",
    "Paris photo by night",
    "A table with apples, pears, and bananas",
    "A man wearing a hat, sunglasses, scarf, gloves, boots, jacket, tie",
    "A girl in a red coat, blue jeans, white shoes, black hat, green scarf, and gloves",
    "A sign that says image not found",
    "Mark Rothko, Untitled, 1969",
    # an offer as the object of what the picture shows: described, not advertised
    "Shop window displaying 50% off signs on Black Friday",
    "Shoppers wait outside a store offering free shipping on all orders",
    # a graphic that does something, or is somewhere, with the sale's words it shows
    "A huge 50% off banner hangs over the entrance of a mall",
    "A 50% off sign in a shop window",
    "Free shipping sticker on a cardboard box",
    "Buy one get one free sign at a supermarket",
    # a media noun in the plural inside a clause: what is shown, not a credit's label
    "A gallery wall of framed pictures by Vivian Maier",
    "A museum showing artwork by Banksy",
    "A background image of a phone",
    "Freepik headquarters in Malaga",
]


@pytest.mark.parametrize("caption", PROSE)
def test_prose_is_left_alone(caption):
    assert clean_one(caption) == RewriteCandidate(caption=None, error="no change")


@pytest.mark.parametrize("caption", [c for c in PROSE if "stock photo" not in c and "Free Downloads" not in c])
def test_prose_is_not_penalised(caption):
    # the scorer reads the same patterns: it must not send a good caption to a rewriter that leaves it alone
    assert caption_rules(caption) == []


# Real noise next to the same words: still removed. input -> (expected caption, expected operations)
NOISE = {
    "A dog on the beach - free download": ("A dog on the beach", "remove_boilerplate"),
    # the same ad phrases, links and labels where they are noise
    "A red dress - Learn more": ("A red dress", "remove_ads"),
    "A red dress | Only $19.99 | New arrivals!": ("A red dress", "remove_ads"),
    "Lowest prices online - A red dress": ("A red dress", "remove_ads"),
    "A red dress Shop the look": ("A red dress", "remove_ads"),
    "A red dress, call us": ("A red dress", "remove_ads"),
    "A dog on the beach - hotels.com": ("A dog on the beach", "remove_urls"),
    "A dog on the beach | Example.com": ("A dog on the beach", "remove_urls"),
    "A dog on the beach - stock photos": ("A dog on the beach", "remove_boilerplate"),
    # a media label before a copyright goes with it
    "A dog on the beach - photo © 2019": ("A dog on the beach", "remove_credits"),
    "A dog on the beach, image © 2019 Jane Doe": ("A dog on the beach", "remove_credits"),
    "A dog on the beach&nbsp;&ndash;&nbsp;photo &copy; 2019": (
        "A dog on the beach", "unescape_html,fix_whitespace,remove_credits"),
    # a credit after the caption's own noun: the agency alone goes, never the noun ("A man holding a red")
    "A man holding a red Frisbee | Shutterstock": ("A man holding a red Frisbee", "remove_credits"),
    "Two dogs chase a Frisbee | AP Photo": ("Two dogs chase a Frisbee", "remove_credits"),
    "A dog catching two Frisbees / AP": ("A dog catching two Frisbees", "remove_credits"),  # AP, no state here
    # a byline: two words of a name, or tied to its agency
    "Kids playing in the park Jane Doe | Reuters": ("Kids playing in the park", "remove_credits"),
    "Crowds gather in the square Smith/AP": ("Crowds gather in the square", "remove_credits"),
    "A dog on the beach Bild: dpa": ("A dog on the beach", "remove_credits"),  # any media label before a colon
    "A dog catching two Frisbees / AFP": ("A dog catching two Frisbees", "remove_credits"),
    "A dog on the beach. Jane Doe | AFP": ("A dog on the beach.", "remove_credits"),  # a byline starting its clause
    "A wall covered with old photos © 2019 Jane Doe": ("A wall covered with old photos", "remove_credits"),
    "A person taking a shower, using a watering can as the water source - Alamy": (
        "A person taking a shower, using a watering can as the water source", "remove_boilerplate"),
    "A red dress, 50% off sale tags on all jeans": ("A red dress", "remove_ads"),  # no graphic shown: an ad
    "A pair of red leather shoes - 50% off tags at the register": ("A pair of red leather shoes", "remove_ads"),
    # stock and wallpaper sites' page titles, whole
    "Beautiful Woman Portrait Stock Photo - Download Image Now - iStock": ("Beautiful Woman Portrait",
                                                                          "remove_boilerplate"),
    "Dog running on beach Stock Photos and Images - Alamy": ("Dog running on beach", "remove_boilerplate"),
    "A sunset over a quiet beach Free Photo | Freepik": ("A sunset over a quiet beach", "remove_boilerplate"),
    "A sunset over a quiet beach HD Wallpaper | Background Image | 1920x1080": ("A sunset over a quiet beach",
                                                                                "remove_boilerplate"),
    # a verb's capitalised tag is its object: the word stays
    "A poster supporting #BlackLivesMatter": ("A poster supporting BlackLivesMatter", "remove_hashtags"),
    "Crowds in London celebrate #Eid": ("Crowds in London celebrate Eid", "remove_hashtags"),
    "Families celebrating #Diwali": ("Families celebrating Diwali", "remove_hashtags"),
    # after any other verb a capitalised tag is a topic tag: dropped
    "A puppy sleeping #Cute": ("A puppy sleeping", "remove_hashtags"),
    "A man hiking #Nature": ("A man hiking", "remove_hashtags"),
    "A woman meditating #Yoga": ("A woman meditating", "remove_hashtags"),
    "My dog loves swimming #Dogs": ("My dog loves swimming", "remove_hashtags"),
    "Kids at the beach just relaxing #Summer": ("Kids at the beach just relaxing", "remove_hashtags"),
    # a capital letter or abbreviation is a name, no article or preposition that the tag would complete
    "Passengers waiting at Gate A #airport": ("Passengers waiting at Gate A", "remove_hashtags"),
    "Downtown skyline of Portland, OR #pnw": ("Downtown skyline of Portland, OR", "remove_hashtags"),
    "Dinner with friends. At #Nobu": ("Dinner with friends. At Nobu", "remove_hashtags"),  # opening its sentence
    "Beautiful flower wallpaper free download": ("Beautiful flower wallpaper", "remove_boilerplate"),
    "Pink roses in a vase - Download free HD wallpaper": ("Pink roses in a vase", "remove_boilerplate"),
    "A dog on the beach - thumbnail": ("A dog on the beach", "remove_boilerplate"),
    "Thumbnail of a red car": ("A red car", "remove_boilerplate"),
    "A dog on the beach (thumbnail)": ("A dog on the beach", "remove_boilerplate"),
    "A dog on the beach | Downloads": ("A dog on the beach", "remove_boilerplate"),
    "Photo 2019-05-03 12:30 a dog on the beach": ("A dog on the beach", "remove_boilerplate"),
    "A dog on the beach - Photo 2019-05-03 12:30": ("A dog on the beach", "remove_boilerplate"),
    "A dog on the beach | Image 12345": ("A dog on the beach", "remove_boilerplate"),
    "A dog on the beach image no. 12345": ("A dog on the beach", "remove_boilerplate"),
    "A dog on the beach | photo_12345": ("A dog on the beach", "remove_boilerplate"),
    "A dog on the beach - via Flickr": ("A dog on the beach", "remove_credits"),
    "A dog on the beach. Via Reuters": ("A dog on the beach.", "remove_credits"),
    "Via Reuters, a dog on the beach": ("a dog on the beach", "remove_credits"),
    "A dog on the beach - Copyright 2019 John Smith": ("A dog on the beach", "remove_credits"),
    "Copyright 2019 John Smith, a dog on the beach": ("a dog on the beach", "remove_credits"),
    "A dog on the beach. Copyright John Smith": ("A dog on the beach.", "remove_credits"),
    "A dog on the beach | Copyright": ("A dog on the beach", "remove_credits"),
    "A red dress Buy now!": ("A red dress", "remove_ads"),
    "Vintage travel poster: Buy now": ("Vintage travel poster", "remove_ads"),  # a listing, not a poster's text
    # the same words where they are page boilerplate
    "A red barn at sunset | Pinterest": ("A red barn at sunset", "remove_boilerplate"),
    "Funny cats playing with yarn - YouTube": ("Funny cats playing with yarn", "remove_boilerplate"),
    "A mountain lake HD wallpaper 4k": ("A mountain lake", "remove_boilerplate"),
    "Abstract blue background. Vector EPS 10": ("Abstract blue background.", "remove_boilerplate"),
    "A red barn at sunset. photo by jsmith": ("A red barn at sunset.", "remove_credits"),
    # a name-first credit after a side's or partner's word: only the agency goes, never the name
    "Women's World Cup final 2019 - USA vs Netherlands | AP Photo": (
        "Women's World Cup final 2019 - USA vs Netherlands", "remove_credits"),
    # a word English makes by doubling is no repeat
    "Mahi mahi fillet on a plate. Credit: John Smith": ("Mahi mahi fillet on a plate.", "remove_credits"),
    # an offer verb starting its clause is the ad's own first word, not a description left dangling
    "Handmade luxury watch in gold. Offering free shipping worldwide.": ("Handmade luxury watch in gold.",
                                                                        "remove_ads"),
    # nouns the offer verbs' -s forms also spell leave a label as it was
    "Close-up of her facial features stock photo": ("Close-up of her facial features", "remove_boilerplate"),
}


@pytest.mark.parametrize("caption", list(NOISE))
def test_noise_is_still_removed(caption):
    expected, ops = NOISE[caption]
    candidate = clean_one(caption)
    assert (candidate.caption, candidate.raw) == (expected, ops)
    assert caption_rules(candidate.caption) == []
    assert clean_one(expected).error == "no change"


# Markup: escaped ("&lt;br&gt;", a tag once decoded) or not.
MARKUP = {
    "A dog on the beach&lt;br&gt;": ("A dog on the beach", "unescape_html,remove_html_tags"),
    "&lt;br /&gt;A dog on the beach": ("A dog on the beach", "unescape_html,remove_html_tags"),
    "&lt;b&gt;A dog on the beach&lt;/b&gt;": ("A dog on the beach", "unescape_html,remove_html_tags"),
    "&amp;lt;p&amp;gt;A dog&amp;lt;/p&amp;gt; on the beach": ("A dog on the beach", "unescape_html,remove_html_tags"),
    "A dog<br>on the beach": ("A dog on the beach", "remove_html_tags"),
    'A <a href="https://x.org/a">dog</a> on the <i>beach</i>.': ("A dog on the beach.", "remove_html_tags"),
    "Water, H<sub>2</sub>O, in a glass": ("Water, H2O, in a glass", "remove_html_tags"),
}


@pytest.mark.parametrize("caption", list(MARKUP))
def test_markup_is_removed(caption):
    expected, ops = MARKUP[caption]
    candidate = clean_one(caption)
    assert (candidate.caption, candidate.raw) == (expected, ops)
    assert caption_rules(caption) != []  # the scorer sends it to the cleaner
    assert caption_rules(candidate.caption) == []
    assert clean_one(expected).error == "no change"


@pytest.mark.parametrize("caption", ["a &lt; b and c &gt; d on a blackboard", "I &lt;3 my dog",
                                     "if x<i and j>y on a blackboard"])
def test_angle_brackets_that_open_no_tag_stay(caption):
    candidate = clean_one(caption)
    assert "<" in (candidate.caption or caption)
    assert "remove_html_tags" not in (candidate.raw or "")


# A link or a file name inside a sentence is what the sentence says: cut out, it left a hole ("A is shown on a
# laptop screen") that the checks took for a clean caption. Standing as a label, at a clause's edge, it goes.
IN_SENTENCE = [
    "A website https://example.com is shown on a laptop screen",
    "The homepage of example.com on a phone",
    "A sign reading www.joes-pizza.com above the door",
    "A man visits https://example.com/about on his laptop in a cafe .",
    "A still from IMG_1234.JPG showing a dog",
    "A website https://example.com/logo.png is shown on a laptop",  # its file name is part of the link: no cut
    "A laptop showing www.site.com/photos/IMG_1234.JPG in a browser",
]


@pytest.mark.parametrize("caption", IN_SENTENCE)
def test_a_link_or_file_name_inside_a_sentence_stays(caption):
    candidate = clean_one(caption)
    assert candidate.caption in (None, caption), candidate  # nothing to do, or the caption whole


@pytest.mark.parametrize("caption, cleaned", [
    ("A dog on the beach. Source: http://x.com/123", "A dog on the beach."),
    ("A dog on the beach http://x.com/123", "A dog on the beach"),
    ("http://x.com/123 A dog on the beach", "A dog on the beach"),
    ("A dog on the beach - www.site.com", "A dog on the beach"),
    ("A dog on the beach IMG_1234.JPG", "A dog on the beach"),
    ("A dog | IMG_1234.JPG", "A dog"),
    # more noise after it in the clause: still a label (the links go with their hashtags, credits, labels)
    ("A dog on the beach http://x.com/123 #dog #beach", "A dog on the beach"),
    ("A sunset https://t.co/abc https://t.co/def #sun", "A sunset"),
    ("A dog on the beach http://x.com/123 © John Smith", "A dog on the beach"),
    ("A dog on the beach http://x.com/123 stock photo", "A dog on the beach"),
    ("A dog on the beach IMG_1234.JPG #dog", "A dog on the beach"),
    ("A dog on the beach http://x.com/123 (2019)", "A dog on the beach (2019)"),
    ("A dog on the beach IMG_1234.JPG 1920x1080", "A dog on the beach 1920x1080"),
    # a comma the link's pattern took in is punctuation: the clause ends there
    ("A dog on grass https://x.com/a, with a ball", "A dog on grass with a ball"),
])
def test_a_link_or_file_name_standing_as_a_label_goes(caption, cleaned):
    assert clean_one(caption).caption == cleaned
