"""The independent check on what a half-removed credit label leaves, in English and in the other languages
captions come in, and on quotation marks as each language writes them."""

import math

import pytest

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.cleaner import CaptionCleaner
from curation_pipeline.rewriting.verify import AcceptanceRules, judge, wellformedness_problems
from curation_pipeline.scoring.text_quality import CaptionTextQuality

RULES = AcceptanceRules(min_improvement=1.0, min_quality=65)

# (original, candidate, problem): the label's name removed, its word left as a short last sentence. The original
# has a sentence starting with that word, but as a label (a colon follows, or it is a media or credit word).
LABEL_LEFT = [
    ("A dog runs . Image: Jane Doe", "A dog runs . Image", "dangling fragment 'Image'"),
    ("A dog runs on the beach. Photo by Jane Doe", "A dog runs on the beach. Photo by", "dangling 'Photo by'"),
    ("A dog runs on the beach. Photo by Jane Doe", "A dog runs on the beach. Photo by",
     "dangling fragment 'Photo by'"),
    ("A red car. Vintage photo: Jane Doe", "A red car. Vintage photo", "dangling fragment 'Vintage photo'"),
    ("A dog runs. Photo credit Jane Doe", "A dog runs. Photo credit", "dangling 'Photo credit'"),
    ("Un chien court sur la plage. Crédit photo : Jean Dupont", "Un chien court sur la plage. Crédit",
     "dangling 'Crédit'"),
    ("Un chien court sur la plage. Crédit photo : Jean Dupont", "Un chien court sur la plage. Crédit",
     "dangling fragment 'Crédit'"),
    ("Ein Hund läuft am Strand. Bild: Getty Images", "Ein Hund läuft am Strand. Bild", "dangling fragment 'Bild'"),
    ("Ein Hund läuft am Strand. Foto: dpa", "Ein Hund läuft am Strand. Foto", "dangling fragment 'Foto'"),
    ("El perro corre en la playa. Fuente: EFE", "El perro corre en la playa. Fuente", "dangling 'Fuente'"),
    ("Ein Hund läuft am Strand. Quelle: dpa", "Ein Hund läuft am Strand. Quelle", "dangling 'Quelle'"),
    ("Ένας σκύλος στην παραλία. Φωτογραφία: Γιάννης", "Ένας σκύλος στην παραλία. Φωτογραφία",
     "dangling fragment 'Φωτογραφία'"),
    # the label with its colon, the name gone: in any language
    ("Ein Hund läuft am Strand. Quelle: dpa", "Ein Hund läuft am Strand. Quelle: Reuters", "dangling 'Quelle:'"),
    ("El perro corre. Fotografía: Juan Pérez", "Fotografía: Juan. El perro corre.", "dangling 'Fotografía:'"),
    ("Un chien (crédit photo : Jean Dupont)", "Un chien (crédit", "dangling '(crédit'"),
    ("Ein Hund am Strand Foto von Hans Müller", "Ein Hund am Strand Foto von", "dangling 'Foto von'"),
]


@pytest.mark.parametrize("original, candidate, problem", LABEL_LEFT)
def test_a_label_left_without_its_name_is_caught(original, candidate, problem):
    assert problem in wellformedness_problems(candidate, original)
    accepted, reason = judge(60, 100, 0.1, 0.8, math.nan, RULES, original=original, candidate=candidate)
    assert not accepted and reason.startswith("malformed rewrite: ")


# (original, candidate): a short last sentence that was no label in the original is still excused, as are the
# same words used as words ("una fuente" is a fountain, "end credits" a film's).
NOT_A_LABEL = [
    ("A red car. Vintage photo - Stock Photo", "A red car. Vintage photo"),
    ("A dog runs on the beach. Sunset view #beach #sunset", "A dog runs on the beach. Sunset view"),
    ("Portrait of Dr. Smith. Studio shot | Photo: Getty Images", "Portrait of Dr. Smith. Studio shot"),
    ("Una plaza con una fuente #madrid", "Una plaza con una fuente"),
    ("tv screen", "A television screen showing the film's end credits"),
    ("Ein Hund am Strand #hund #strand", "Ein Hund am Strand"),
    ("Un chien court sur la plage. Crédit photo : Jean Dupont", "Un chien court sur la plage."),
]


@pytest.mark.parametrize("original, candidate", NOT_A_LABEL)
def test_a_short_sentence_that_was_no_label_passes(original, candidate):
    assert wellformedness_problems(candidate, original) == []


def test_the_cleaners_french_credit_stub_is_not_published():
    """The cleaner cuts "Crédit photo : Jean Dupont" to "Crédit" (issue: its credit pattern); the re-score does not
    see the stub, so only the independent check keeps it from being accepted."""
    originals = ["Un chien court sur la plage. Crédit photo : Jean Dupont",
                 "Une tour Eiffel illuminée la nuit. Crédit photo : Marie Curie"]
    batch = PairBatch(["a", "b"], originals)
    scorer = CaptionTextQuality()
    before = dict(zip(batch.keys, scorer.score(batch)["text_quality"]))
    lineage = rewrite_batches([batch], shard="s", rewriter=CaptionCleaner(), rescore=scorer.score,
                              quality_column="text_quality", scores_before=before, rules=RULES, run_id="r")
    assert len(lineage) == 2
    stubs = lineage[lineage["candidate_caption"].fillna("").str.endswith("Crédit")]
    assert not stubs["accepted"].any() and stubs["reason"].str.startswith("malformed rewrite: dangling").all()


# Quotation marks as German, Polish, Swedish, French and Danish write them are balanced.
BALANCED_QUOTES = [
    'Ein Schild mit der Aufschrift „Ausfahrt freihalten“.',
    "Ein Schild mit der Aufschrift ‚Ausfahrt‘ an der Wand.",
    "Napis „Wyjście” na drzwiach.",
    "En skylt med texten ”Utgång” på dörren.",
    "Un panneau « Sortie » sur la porte.",
    "Ein Schild mit der Aufschrift »Ausfahrt freihalten«.",
    "A sign reading “EXIT” above a door.",
    "Er sagte: „Auf dem Schild steht ‚Ausfahrt‘“.",
    "A sign reading “EXIT «SORTIE»” above a door.",
    "「出口」の看板",  # a caption may start with its opening quote
    "»Ausfahrt freihalten« steht auf dem Schild.",
    "”Utgång” står det på skylten.",
    "Deux panneaux «Sortie» «Entrée» sur le mur.",  # two quotes side by side are no empty pair
    "Zwei Schilder „Ausfahrt“ „Einfahrt“ an der Wand.",
]


@pytest.mark.parametrize("candidate", BALANCED_QUOTES)
def test_quotes_as_each_language_writes_them_balance(candidate):
    assert wellformedness_problems(candidate) == []  # as a fresh caption: nothing the original had excuses it


@pytest.mark.parametrize("candidate", [
    "Ein Schild mit der Aufschrift „Ausfahrt freihalten.",
    "Ein Schild mit der Aufschrift Ausfahrt freihalten“.",
    "A sign reading “EXIT above a door.",
    "A sign reading EXIT” above a door.",
    "Un panneau « Sortie sur la porte.",
    "「出口の看板",
    "出口」の看板",
])
def test_a_quote_left_open_or_closing_none_is_caught(candidate):
    assert "unbalanced quotes" in wellformedness_problems(candidate)


def test_german_quotes_the_rewrite_made_from_straight_ones_are_accepted():
    original = 'Ein Schild mit der Aufschrift "Ausfahrt freihalten". Foto: dpa'
    candidate = "Ein Schild mit der Aufschrift „Ausfahrt freihalten“."
    assert wellformedness_problems(candidate, original) == []
    assert judge(60, 100, 0.1, 0.8, math.nan, RULES, original=original, candidate=candidate)[0]
