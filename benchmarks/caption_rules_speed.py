"""The caption rules and the rule-based cleaner on hostile captions: no caption may cost super-linear time.

The shard reader caps a caption at 10,000 characters, and the rules (``captions.patterns``, read by the
``text_quality`` scorer's ``caption_rules`` and by the cleaner's ``clean_caption``) must take about as long per
character on any caption of that size as on a real one: a shard of captions that cost seconds each would stall
a run for hours (a denial of service by data). Each hostile shape is a phrase or separator the rules react to,
repeated to ``--chars`` characters (long runs of spaces, keywords, labels that are not labels, dotted names,
triggers the cleaner cuts one a round, ...), plus random mixes of those phrases.

Target: every shape under 0.15 s in ``caption_rules`` and in ``clean_caption`` (CPU seconds, the best of
``--repeat`` runs) at 10,000 characters. ``--smoke``: 1,000 characters, one run each. The per-caption caches
(``patterns.CAPTION_CACHES``) are cleared before every timed call, so a repeat, and ``clean_caption`` after
``caption_rules`` on the same caption, pays what a new caption pays.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import add_smoke_flag, met, parse_args, result_line, target, verdict

TARGET_S = 0.15

# Phrases and separators the rules react to; each shape repeats one to --chars characters.
SHAPES = [
    "| Stock photo ", "Stock photo | ", "| stock photo, ", "hd ", "1920x1080 ", "1920 x 1080 ", "full hd ",
    "wallpaper 4k ", "4k hd wallpaper ", "eps, ai, ", "vector eps ", "EPS 10 ", "lorem ipsum dolor ", "[caption a=b ",
    "[/a]", "image may contain a ", "Image may contain: ", "may be an image of ", "Tags: a, ", "a, ", "a a a, ",
    "photo by jsmith ", "Photo: Jane Doe ", "Credit: ", "Jane Doe/AP ", "Jane Doe | ", "AP.", "Jane-Doe-",
    "X.Y.Z ", "© ", "(c) 2019 ", "copyright ", "via AP ", "photo courtesy of ", "(Photo: Jane Doe/AP) ",
    "| Pinterest ", "- YouTube ", "free download ", "thumbnail of ", "click to enlarge ", "view larger ",
    "image 12345 | ", "image#1234 ", "-pic-1234", "royalty free stock image ", "Shutterstock ID 123456 ",
    "image not found ", "This image is ", "Buy now | ", "Sale!", "50% off ", "only $5 ", "price: $5 ", "call us ",
    "new arrivals ", "learn more, ", "Learn more ", "Shop the look ", "a sign saying ", '"50% off" ',
    "x.", "ab-", "www.a.", "#a", "#a #b ", "&amp;", "<br>", "a ", "A B C D ", ". ", "a. b. ", "a (b) ",
    "[a](b){c} ", "a - b - ", "a\n", "stock photo\t", "IMG_1234 ", "(source: http://x.com/a) ",
    # labels and bylines beyond English, credits after an ad
    "Bild: ", "Quelle: dpa ", "Foto de Juan Pérez/EFE ", "Photo par Jean Dupont ", "(Fonte ", "New arrivals Photo: ",
    # wire credits and stock sites: an agency ending a title, a place before a bar, a site as a title's start
    "| AFP ", "Paris | AFP ", "in Paris / Reuters ", "REUTERS/Jane Doe ", "Jane Doe/dpa/", "Shutterstock dog ",
    # a sale's words before a graphic's noun
    "Summer sale banner ", "50% off sale sale ", "free shipping offer ",
    # quotes that close nothing after an ad trigger (the quoted text of a sign is no ad)
    "'a ", "Sale! 'a ", "Sale! «a ", "Sale! „a ",
]
# A phrase, a run of one separator, then a tail: the rules' patterns must not read a long run once per start.
RUNS = [("Tags:", " ", " x"), ("image may contain:", " ", " x"), ("stock photo", " ", " x"),
        ("a sign saying", " ", " x | stock photo"), ("says", " ", ", stock photo"), ("copyright", " ", " x"),
        ("only", " ", " x"), ("Photo:", " ", "Jane"), ("photo", " ", " courtesy"), ("via", " ", " x #a #b"),
        ("by", ", ", " x"), ("by", " - ", " x"), ("a", ",", " x"), ("a", "-", " x"), ("x", " ", " x"),
        ("a", "  ", " x"), ("eps", " ", " x"), ("a", " ", "<b>")]
PHRASES = ["stock photo", "royalty free", "image", "photo", "by", "Jane Doe", "hd", "4k", "wallpaper", "1920x1080",
           "eps", "ai", "vector", "tags", "keywords", "credit", "via", "AP", "copyright", "©", "lorem ipsum",
           "image may contain", "pinterest", "youtube", "download", "free", "thumbnail", "buy now", "sale",
           "click here", "learn more", "a sign reading", "not found", "may be an image of", "[caption", "]",
           "www.x.com", "IMG_2041.jpg", "#tag", "a", "the", "dog", "10", "123456", "source"]
SEPARATORS = [" ", " | ", ", ", " - ", ": ", ". ", "; ", " / ", " • ", "\n", "(", ")", " "]


def hostile_captions(chars: int, mixes: int) -> dict[str, str]:
    shapes = {f"{phrase!r}*": (phrase * (chars // len(phrase) + 1))[:chars] for phrase in SHAPES}
    shapes.update({f"{phrase!r}+{run!r}*+{tail!r}": (phrase + run * chars)[:chars - len(tail)] + tail
                   for phrase, run, tail in RUNS})
    rng = random.Random(7)
    for k in range(mixes):
        parts, n = [], 0
        while n < chars:
            part = rng.choice(PHRASES) + rng.choice(SEPARATORS)
            parts.append(part)
            n += len(part)
        shapes[f"mix{k}"] = "".join(parts)[:chars]
    return shapes


def best_time(fn, text: str, repeat: int) -> float:
    """The best of ``repeat`` cold calls: with the caches warm, a repeat would skip the work a new caption does."""
    from curation_pipeline.captions.patterns import clear_caption_caches

    best = float("inf")
    for _ in range(repeat):
        clear_caption_caches()
        start = time.process_time()
        fn(text)
        best = min(best, time.process_time() - start)
    return best


def main(argv=None) -> None:
    from curation_pipeline.captions.patterns import has_bad_encoding
    from curation_pipeline.rewriting.cleaner import clean_caption
    from curation_pipeline.scoring.text_quality import caption_rules

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=10_000, help="length of each hostile caption")
    parser.add_argument("--mixes", type=int, default=12, help="random mixes of phrases and separators")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each caption (the best counts)")
    add_smoke_flag(parser, chars=1_000, mixes=2, repeat=1)
    args = parse_args(parser, argv)

    has_bad_encoding("café")  # ftfy's first import, outside every timing
    shapes = hostile_captions(args.chars, args.mixes)
    rules_s, clean_s = {}, {}
    for name, text in shapes.items():
        rules_s[name] = best_time(caption_rules, text, args.repeat)
        clean_s[name] = best_time(clean_caption, text, args.repeat)
    worst_rules, worst_clean = max(rules_s, key=rules_s.get), max(clean_s, key=clean_s.get)
    for name in sorted(shapes, key=lambda k: -max(rules_s[k], clean_s[k]))[:10]:
        print(f"{name:40} caption_rules {rules_s[name]:.3f} s  clean_caption {clean_s[name]:.3f} s")
    ok = max(rules_s.values()) < TARGET_S and max(clean_s.values()) < TARGET_S
    print(f"{len(shapes)} captions of {args.chars:,} characters; slowest caption_rules {rules_s[worst_rules]:.3f} s "
          f"({worst_rules}), clean_caption {clean_s[worst_clean]:.3f} s ({worst_clean}); "
          f"{target(f'each < {TARGET_S} s')} {met(ok)}")
    result_line({"shapes": len(shapes), "chars": args.chars, "rules_max_s": rules_s[worst_rules],
                 "rules_worst": worst_rules, "clean_max_s": clean_s[worst_clean], "clean_worst": worst_clean,
                 "rules_total_s": sum(rules_s.values()), "clean_total_s": sum(clean_s.values()),
                 "targets_met": verdict(ok)})


if __name__ == "__main__":
    main()
