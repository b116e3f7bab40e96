"""Demo alt-text of every caption kind, built around what the image actually shows."""

from __future__ import annotations

import html
import random

from curation_pipeline.demo.subjects import Subject


def _lower_first(caption: str) -> str:
    return caption[0].lower() + caption[1:].rstrip(".")


def caption_for(kind: str, subject: Subject, rng: random.Random, lang: str | None = None) -> str:
    """Alt-text of one kind, built around what the image actually shows."""
    n = rng.randint(1000, 99999)
    if kind == "good":
        return subject.caption
    if kind == "mixed_boilerplate":
        return rng.choice([f"Stock photo of {_lower_first(subject.caption)} - royalty free image {n}",
                           f"{subject.caption} Click to enlarge.", f"Stock Photo - {subject.caption}",
                           f"{subject.caption} | Image {n} | All rights reserved"])
    if kind == "boilerplate":
        return rng.choice(["Click to enlarge", "Royalty free stock image", f"Stock Photo - Image {n}",
                           f"image may contain: {subject.word}, indoor", "Image may contain: outdoor",
                           "No description available.", "Untitled"])
    if kind == "filename":
        return rng.choice([f"IMG_{n % 10000:04d}.JPG", f"DSC{n:05d}.jpg", f"DSCN{n % 10000:04d}.JPG",
                           f"2019{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}_{rng.randint(0, 235959):06d}.jpg",
                           f"P{n:07d}.JPG", f"image ({rng.randint(1, 9)}).png"])
    if kind == "url":
        month = f"{rng.randint(1, 12):02d}"
        return rng.choice([f"https://example.com/img/{n}.jpg",
                           f"http://cdn.example.org/photos/2019/{month}/{subject.word}-{n % 100:02d}.jpg",
                           f"{subject.caption} https://example.net/p/{n}",
                           f"Source: https://www.example.com/gallery/{subject.word}/{n}.html"])
    if kind == "html_entities":
        escaped = html.escape(subject.caption).replace("'", "&#39;").replace(" and ", " &amp; ")
        return rng.choice([f"&quot;{escaped}&quot;", f"{escaped}&nbsp;&ndash;&nbsp;photo &copy; 2019"])
    if kind == "hashtags":
        generic = ["#love", "#instagood", "#photooftheday", "#beautiful", "#picoftheday", "#nofilter"]
        return " ".join([f"#{subject.word}", *rng.sample(generic, 4)])
    if kind == "non_english":
        return subject.translations[lang]
    if kind == "empty":
        return ""
    if kind == "one_word":
        return subject.word
    if kind == "all_caps":
        return subject.caption.upper()
    if kind == "repeated_words":
        return " ".join([subject.word] * rng.randint(4, 7))
    raise ValueError(f"no caption recipe for kind {kind!r}")
