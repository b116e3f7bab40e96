"""A labelled-noise generator: real human captions, web noise injected as it appears in alt text.

Labels: ``clean`` (a human caption as written: keep it), ``noisy`` (one to three ``NOISE_KINDS``
injected; ``clean`` holds the caption before: rewrite it back to exactly that), ``junk`` (alt text
that describes nothing: drop it) and ``mismatched`` (a clean caption of ANOTHER image: only an
image-text model can drop it).

Noise kinds: ``advertising`` (an ad or call to action: "Buy now", "Up to 40% off"), ``credit`` ("Photo:
Jane Doe.", "© 2019 Jane Doe. All rights reserved."), ``whitespace`` (tabs, line breaks, runs of spaces),
``control`` (NUL, ANSI colour codes, zero-width and bidi characters), ``bracketed_source`` ("(source:
https://...)", "[Photo: Jane Doe]"), ``entity_quotes`` (the caption wrapped in ``&quot;...&quot;``),
``url``, ``hashtags``, ``stock`` ("Stock Photo - ...") and ``filename`` ("IMG_2041.JPG - ...").

Noise is added next to the caption with a separator, never with a separator that would change the caption's
own ending; ``whitespace`` and ``control`` put characters between or inside words without changing one. Either way
the clean source is recoverable, so "exactly clean" is a well-defined target.
Samples go to ``dev`` or ``heldout`` by a hash of their image: the cleaner's rules are written from
``dev`` and measured on ``heldout``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

LABELS = ("clean", "noisy", "junk", "mismatched")
SPLITS = ("dev", "heldout")

_FIRST = ["Jane", "John", "Maria", "Li", "Ahmed", "Anna", "Tom", "Sarah", "Kenji", "Olga", "Pedro", "Emma",
          "David", "Fatima", "Lucas", "Grace", "Ravi", "Chloe", "Mateo", "Nina"]
_LAST = ["Doe", "Smith", "Garcia", "Wei", "Khan", "Mueller", "O'Brien", "McAllister", "Sato", "Ivanova",
         "Alvarez", "Johnson", "Brown", "Haddad", "Rossi", "Kim", "Patel", "Dubois", "Lopez", "Novak"]
_AGENCIES = ["AP", "AFP", "Reuters", "Getty Images", "EPA", "Shutterstock", "Alamy", "Xinhua", "Bloomberg"]
_OUTLETS = ["The Guardian", "The New York Times", "BBC News", "National Geographic", "The Times"]
_DOMAINS = ["example.com", "photos.example.org", "shop-example.net", "cdn.example.io", "myblog.example.com"]


def _name(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return f"{rng.choice(_FIRST)[0]}. {rng.choice(_LAST)}"
    if roll < 0.15:
        return "@" + rng.choice(_FIRST).lower() + "_" + rng.choice(["photo", "shots", "pics"])
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _url(rng: random.Random) -> str:
    path = "/".join(rng.choice(["p", "img", "gallery", "2019", "photos", "item"]) for _ in range(rng.randint(1, 3)))
    tail = rng.choice(["", f"/{rng.randint(100, 99999)}", f"/{rng.randint(10, 999)}.jpg", f"?id={rng.randint(1, 9999)}"])
    scheme = rng.choice(["https://", "http://", "https://www.", "www."])
    return f"{scheme}{rng.choice(_DOMAINS)}/{path}{tail}"


def _suffix_joiner(caption: str, rng: random.Random, tight_ok: bool = True) -> str:
    """How noise is glued after a caption without changing the caption's own ending."""
    if caption.rstrip().endswith((".", "!", "?")):
        return rng.choice([" ", " - ", " | "])
    return rng.choice([" - ", " | ", " – ", " • "] + ([", "] if tight_ok else []))


def _attach(caption: str, noise: str, rng: random.Random, prefix_share: float = 0.3) -> str:
    if rng.random() < prefix_share:
        return noise + (" " if noise.endswith(("!", ".")) else rng.choice([": ", " - ", " | "])) + caption
    return caption + _suffix_joiner(caption, rng) + noise


# --- the noise kinds --------------------------------------------------------------------
_CTA = ["Buy now", "Shop now", "Order now", "Order today", "Shop the look", "Click here to buy",
        "Click here for more info", "Click the link to shop", "Add to cart", "Get yours today", "Call now",
        "Book now", "Visit our store", "Check out our shop", "Sign up today", "Subscribe now", "Learn more",
        "Tap here to see more", "Download now", "Buy it online", "Shop our collection"]
_OFFER = ["{n}% off", "Up to {n}% off", "Save {n}%", "Save ${p}", "Free shipping", "Free shipping on all orders",
          "Free delivery on orders over ${p}", "Limited time offer", "Today only", "Only ${p}.99", "Now ${p}.99",
          "Use code {code} at checkout", "Best prices guaranteed", "While supplies last", "Summer sale",
          "Flash sale ends tonight", "Deal of the day", "Ships worldwide", "New arrivals", "Lowest prices online",
          "Don't miss out", "Money-back guarantee", "Get {n}% off your first order", "Free returns"]


def _fill(template: str, rng: random.Random) -> str:
    code = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 6))) + str(rng.randint(5, 50))
    return template.format(n=rng.choice([10, 15, 20, 25, 30, 40, 50, 60, 70]), p=rng.randint(5, 199), code=code)


def ad_text(rng: random.Random) -> str:
    parts = [_fill(rng.choice(_CTA if rng.random() < 0.5 else _OFFER), rng) for _ in range(rng.randint(1, 2))]
    text = parts[0]
    for part in parts[1:]:
        text += rng.choice([", ", "! ", " - ", " | ", ". "]) + part
    return text + rng.choice(["", "", "!", "."])


def advertising(caption: str, rng: random.Random) -> str:
    ad = ad_text(rng)
    if rng.random() < 0.15 and ad.split()[0] in {"Buy", "Shop", "Order", "Click", "Get", "Call", "Book"}:
        return caption + " " + ad  # no separator at all: "A red dress Buy now!"
    return _attach(caption, ad, rng)


def credit_text(rng: random.Random) -> str:
    name, agency, year = _name(rng), rng.choice(_AGENCIES), rng.randint(1998, 2024)
    return rng.choice([
        f"Photo: {name}.", f"Photo: {name}", f"Credit: {name}/{agency}", f"Credit: {name} / {agency}",
        f"Photo credit: {name}", f"Image: {name}/{agency}", f"© {year} {name}", f"© {name}",
        f"Copyright {year} {name}. All rights reserved.", f"Photograph: {name} for {rng.choice(_OUTLETS)}",
        f"Picture by {name}", f"Photo by {name}", f"Courtesy of {name}", f"(Photo: {name}/{agency})",
        f"{name}/{agency}", f"Photo: {agency}", f"Source: {agency}", f"(c) {name} {year}",
    ])


def credit(caption: str, rng: random.Random) -> str:
    return _attach(caption, credit_text(rng), rng, prefix_share=0.25)


def whitespace(caption: str, rng: random.Random) -> str:
    words = caption.split(" ")
    for _ in range(rng.randint(1, 3)):
        if len(words) < 2:
            break
        i = rng.randrange(1, len(words))
        words[i] = rng.choice(["\t", "\n", "  ", "   ", "\u00a0", " \n", "\r\n", "\t "]) + words[i]
    text = " ".join(words)
    if rng.random() < 0.4:
        text = rng.choice([" ", "  ", "\t", "\n"]) + text
    if rng.random() < 0.4:
        text += rng.choice([" ", "  ", "\n", "\t", " \n"])
    return text


_INVISIBLE = ["\x00", "\x7f", "\x01", "\x1f", "\u200b", "\u200b", "\u2060", "\u202e", "\u202d", "\u2066", "\x08"]


_MARKUP_RE = re.compile(r"&(?:amp;)*#?\w+;|\x1b\[[0-9;]*m")


def _free_spots(text: str) -> list[int]:
    """Insertion points outside entities and escape sequences (inserting into one would break it)."""
    taken = {i for m in _MARKUP_RE.finditer(text) for i in range(m.start() + 1, m.end())}
    return [i for i in range(len(text) + 1) if i not in taken]


def control(caption: str, rng: random.Random) -> str:
    chars = list(caption)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.25:  # ANSI colour around a word
            words = "".join(chars).split(" ")
            i = rng.randrange(len(words))
            if "&" in words[i] or "\x1b" in words[i]:
                continue
            words[i] = f"\x1b[{rng.choice(['1', '31', '1;32', '0;33', '4'])}m{words[i]}\x1b[0m"
            chars = list(" ".join(words))
        elif kind < 0.35:  # a soft hyphen inside a word
            free = set(_free_spots("".join(chars)))
            spots = [i for i in range(1, len(chars)) if chars[i - 1].isalpha() and chars[i].isalpha() and i in free]
            if spots:
                chars.insert(rng.choice(spots), "\u00ad")
        elif kind < 0.45:
            chars.insert(0, "\ufeff")
        else:
            chars.insert(rng.choice(_free_spots("".join(chars))), rng.choice(_INVISIBLE))
    return "".join(chars)


def bracketed_source(caption: str, rng: random.Random) -> str:
    agency, name = rng.choice(_AGENCIES), _name(rng)
    note = rng.choice([f"(source: {_url(rng)})", f"(Source: {_url(rng)})", f"[via {_url(rng)}]", f"({_url(rng)})",
                       f"(Source: {agency})", f"[Photo: {name}]", f"(via {agency})", f"[source: {_url(rng)}]",
                       f"(more at {_url(rng)})"])
    return note + " " + caption if rng.random() < 0.2 else caption + " " + note


def entity_quotes(caption: str, rng: random.Random) -> str:
    opening, closing = rng.choice([("&quot;", "&quot;"), ("&#34;", "&#34;"), ("&ldquo;", "&rdquo;"),
                                   ("&amp;quot;", "&amp;quot;"), ("&#8220;", "&#8221;")])
    return opening + caption + closing


def url(caption: str, rng: random.Random) -> str:
    link = _url(rng)
    labelled = rng.choice(["", "", "more at ", "via ", "Source: ", "see "])
    return caption + _suffix_joiner(caption, rng, tight_ok=False) + labelled + link


def hashtags(caption: str, rng: random.Random) -> str:
    pool = ["#love", "#instagood", "#photooftheday", "#nofilter", "#travel", "#nature", "#happy", "#weekend",
            "#summer", "#dogsofinstagram", "#family", "#fun", "#picoftheday", "#streetphotography"]
    return caption + " " + " ".join(rng.sample(pool, rng.randint(2, 4)))


def stock(caption: str, rng: random.Random) -> str:
    return rng.choice([
        f"Stock Photo - {caption}", f"{caption}{_suffix_joiner(caption, rng, tight_ok=False)}stock photo",
        f"{caption} | Shutterstock", f"{caption}{_suffix_joiner(caption, rng, tight_ok=False)}Royalty Free Stock Image",
        f"Stock image: {caption}", f"{caption} - Alamy",
    ])


def filename(caption: str, rng: random.Random) -> str:
    name = rng.choice([f"IMG_{rng.randint(1000, 9999)}.JPG", f"DSC{rng.randint(10000, 99999)}.jpg",
                       f"PXL_2021{rng.randint(1000, 9999)}_{rng.randint(100000, 999999)}.jpg",
                       f"IMG_{rng.randint(1000, 9999)}"])
    if rng.random() < 0.5:
        return f"{name}{rng.choice([' - ', ': ', ' | '])}{caption}"
    return f"{caption} ({name})"


NOISE_KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "advertising": advertising, "credit": credit, "whitespace": whitespace, "control": control,
    "bracketed_source": bracketed_source, "entity_quotes": entity_quotes, "url": url, "hashtags": hashtags,
    "stock": stock, "filename": filename,
}
# Kinds that wrap the whole caption go first, kinds that edit characters anywhere go last.
_ORDER = ["entity_quotes", "stock", "filename", "bracketed_source", "credit", "url", "advertising", "hashtags",
          "whitespace", "control"]


def inject(caption: str, kinds: Iterable[str], rng: random.Random) -> str:
    """``caption`` with each noise kind applied once, in a fixed order (wrapping first)."""
    kinds = set(kinds)
    unknown = kinds - set(NOISE_KINDS)
    if unknown:
        raise ValueError(f"unknown noise kinds {sorted(unknown)}; known: {', '.join(NOISE_KINDS)}")
    for kind in _ORDER:
        if kind in kinds:
            caption = NOISE_KINDS[kind](caption, rng)
    return caption


def junk_caption(rng: random.Random) -> tuple[str, str]:
    """(alt text that describes nothing, its kind)."""
    name, agency = _name(rng), rng.choice(_AGENCIES)
    choices = [
        ("advertising", lambda: ad_text(rng)),
        ("credit", lambda: rng.choice([f"Photo: {name}/{agency}", f"© {rng.randint(1998, 2024)} {name}. All rights "
                                       "reserved.", f"Credit: {name}", f"Photo by {name}"])),
        ("filename", lambda: rng.choice([f"IMG_{rng.randint(1000, 9999)}.JPG", f"DSC{rng.randint(10000, 99999)}.jpg",
                                         f"Screenshot_2020-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}-12-30-00.png"])),
        ("url", lambda: _url(rng)),
        ("hashtags", lambda: " ".join(rng.sample(["#love", "#instagood", "#photooftheday", "#tbt", "#fun",
                                                  "#nofilter"], 3))),
        ("placeholder", lambda: rng.choice(["untitled", "image", "photo", "No description available.", "IMAGE",
                                            "Untitled-1"])),
        ("stock", lambda: rng.choice([f"Stock Photo - Image {rng.randint(1000, 99999)}", "Royalty free stock image",
                                      "Click to enlarge"])),
    ]
    kind, make = rng.choice(choices)
    return make(), kind


@dataclass
class LabelledSample:
    """One row of the truth file."""

    key: str
    split: str
    label: str
    caption: str
    clean: str | None = None  # the caption before noise (noisy) or as is (clean); None for junk / mismatched
    kinds: list[str] = field(default_factory=list)  # noise kinds injected (noisy) or the junk's kind
    image: str | None = None  # the photo the caption is paired with
    caption_of: str | None = None  # mismatched: the photo the caption really describes


def split_of(image_id: str, heldout_share: float = 0.5) -> str:
    """``dev`` or ``heldout``, by a stable hash of the image id (the same on every machine)."""
    digest = int(hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:8], 16)
    return "heldout" if digest / 0xFFFFFFFF < heldout_share else "dev"


def make_labelled(items: list[tuple[str, list[str]]], *, seed: int = 0, captions_per_image: int = 1,
                  shares: dict[str, float] | None = None, max_kinds: int = 3) -> list[LabelledSample]:
    """Labelled samples from (image id, its human captions) items, in ``shares`` (default clean 0.3,
    noisy 0.5, junk 0.1, mismatched 0.1); a noisy one gets 1 to ``max_kinds`` kinds (half get one). A
    mismatched caption comes from another image of the same split."""
    shares = shares or {"clean": 0.3, "noisy": 0.5, "junk": 0.1, "mismatched": 0.1}
    labels, weights = zip(*shares.items())
    by_split: dict[str, list[tuple[str, list[str]]]] = {s: [] for s in SPLITS}
    for image, captions in items:
        by_split[split_of(image)].append((image, captions))
    samples: list[LabelledSample] = []
    kinds = list(NOISE_KINDS)
    for split in SPLITS:
        rng = random.Random(f"{seed}:{split}")
        pool = by_split[split]
        for n, (image, captions) in enumerate(pool):
            picked = rng.sample(range(len(captions)), min(captions_per_image, len(captions)))
            for j in picked:
                source = captions[j]
                label = rng.choices(labels, weights)[0]
                key = f"{split[0]}{n:05d}{j}"
                if label == "clean":
                    samples.append(LabelledSample(key, split, label, source, clean=source, image=image))
                elif label == "noisy":
                    count = 1 if rng.random() < 0.5 else rng.randint(2, max_kinds)
                    chosen = sorted(rng.sample(kinds, count))
                    samples.append(LabelledSample(key, split, label, inject(source, chosen, rng), clean=source,
                                                  kinds=chosen, image=image))
                elif label == "junk":
                    text, kind = junk_caption(rng)
                    samples.append(LabelledSample(key, split, label, text, kinds=[kind], image=image))
                else:
                    other_image, other_captions = pool[(n + rng.randrange(1, max(len(pool), 2))) % len(pool)]
                    if other_image == image:
                        samples.append(LabelledSample(key, split, "clean", source, clean=source, image=image))
                        continue
                    samples.append(LabelledSample(key, split, label, rng.choice(other_captions), image=image,
                                                  caption_of=other_image))
    return samples


def shipped_items() -> list[tuple[str, list[str]]]:
    """The repository's own captions (``evaluation.shipped_captions``), one imaginary photo each."""
    from curation_pipeline.evaluation.shipped_captions import CAPTIONS

    return [(f"shipped-{i:03d}", [caption]) for i, caption in enumerate(CAPTIONS)]


def flickr_items(folder: str | Path) -> list[tuple[str, list[str]]]:
    """(image file, its five captions) from a ``captions.jsonl`` folder such as flickr8k_1k_small."""
    items = []
    with open(Path(folder) / "captions.jsonl", encoding="utf-8-sig") as handle:
        for line in handle:
            row = json.loads(line)
            items.append((row["image"], list(row["captions"])))
    return items


def write_truth(samples: Iterable[LabelledSample | dict], path: str | Path) -> Path:
    """The truth file: one JSON object per line (``LabelledSample``'s fields)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for sample in samples:
            row = sample if isinstance(sample, dict) else asdict(sample)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _warn_of_shared_photos(samples: list[LabelledSample]) -> None:
    """Several captions of one photo (``captions_per_image`` > 1) write its bytes once each: exact duplicates,
    of which `curate run`'s dedup keeps one, so the labels of the others would never be scored."""
    copies = Counter(sample.image for sample in samples)
    shared = {image: n for image, n in copies.items() if n > 1}
    if shared:
        warnings.warn(f"{len(shared)} photos are written with several captions ({sum(shared.values())} samples): "
                      "the copies are exact duplicates, so `curate run` keeps one of each (duplicate:exact_image) and "
                      "the labels of the others are never scored; run it with --set policy.drop_duplicates=false, "
                      "or write one caption per photo", stacklevel=3)


def write_labelled_shards(samples: list[LabelledSample], images_dir: str | Path, out_dir: str | Path,
                          truth_path: str | Path, per_shard: int = 500, prefix: str = "labelled") -> list[Path]:
    """Webdataset shards of the labelled samples (the photo's bytes, the caption as given, a json naming
    the photo) and the truth file with each sample's ``shard``, so that `curate run` on the shards and
    then `curate evaluate --labels` score the whole pipeline, images included. Warns where a photo carries
    several captions (``_warn_of_shared_photos``)."""
    from curation_pipeline.shards.writer import write_tar

    _warn_of_shared_photos(samples)

    def members(sample: LabelledSample) -> list[tuple[str, bytes]]:
        image = Path(images_dir) / str(sample.image)
        return [(f"{sample.key}{image.suffix.lower() or '.jpg'}", image.read_bytes()),
                (f"{sample.key}.txt", sample.caption.encode("utf-8")),
                (f"{sample.key}.json", json.dumps({"image": sample.image}).encode("utf-8"))]

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for start in range(0, len(samples), per_shard):
        shard, part = f"{prefix}-{start // per_shard:06d}", samples[start:start + per_shard]
        paths.append(write_tar(Path(out_dir) / f"{shard}.tar", (m for sample in part for m in members(sample))))
        rows += [{**asdict(sample), "shard": shard} for sample in part]
    write_truth(rows, truth_path)
    return paths


def main(argv=None) -> None:
    """``python -m curation_pipeline.evaluation.noise --flickr DIR --raw OUT --truth truth.jsonl``"""
    import argparse

    parser = argparse.ArgumentParser(description="Write labelled noisy shards and their truth file from a "
                                     "captions.jsonl folder (e.g. ../shared/evaldata/flickr8k_1k_small).")
    parser.add_argument("--flickr", required=True, help="folder with captions.jsonl and images/")
    parser.add_argument("--raw", required=True, help="where the shards go")
    parser.add_argument("--truth", required=True, help="the truth file to write")
    parser.add_argument("--split", choices=["dev", "heldout", "both"], default="heldout")
    parser.add_argument("--images", type=int, default=0, help="photos to use (0 = all)")
    parser.add_argument("--captions-per-image", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (Path(args.flickr) / "captions.jsonl").is_file():
        parser.error(f"--flickr {args.flickr}: no captions.jsonl there; it takes a folder of photos (images/) with "
                     "their captions (captions.jsonl: one {\"image\": ..., \"captions\": [...]} a line), such as "
                     "the Flickr8k research copy beside a checkout (../shared/evaldata/flickr8k_1k_small), which "
                     "the repository does not hold")
    items = flickr_items(args.flickr)
    items = items[: args.images] if args.images else items
    samples = [s for s in make_labelled(items, seed=args.seed, captions_per_image=args.captions_per_image)
               if args.split == "both" or s.split == args.split]
    for path in write_labelled_shards(samples, args.flickr, args.raw, args.truth):
        print(path)
    print(f"{len(samples)} labelled samples -> {args.truth}")


if __name__ == "__main__":
    main()
