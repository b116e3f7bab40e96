"""Caption defects as regexes and small functions: the one source of truth for caption noise.

``scoring.text_quality`` flags a caption with them and ``rewriting.cleaner`` repairs it with the very
same ones, so a caption the cleaner fixed can no longer fire the rule that flagged it (which is why
``rewriting.verify`` must not use them: it would be blind to exactly what they miss). Noise classes:
links and their labels, camera and screenshot file names, stock-site, wallpaper-site and page UI boilerplate
(placeholders, shortcodes, a site's name ending the title), keyword lists, credits and copyright lines,
advertising clauses, bracketed source notes, control and invisible characters, text a wrong decode garbled,
irregular whitespace, quotes around the whole caption, HTML entities, hashtags, repeats and shouting.
Everything is precompiled: the scorer handles tens of thousands of captions a second. And every rule reads a
caption a bounded number of times, whatever it holds: a caption of the reader's cap, 10,000 characters, takes
at most about a tenth of a second, however hostile (benchmarks/caption_rules_speed.py).
"""

from __future__ import annotations

import bisect
import functools
import html
import re
from typing import Iterable, Iterator, NamedTuple

from curation_pipeline.captions import compiled
from curation_pipeline.captions.classes import class_body, in_category

_IMAGE_EXT = r"(?:jpe?g|png|gif|bmp|tiff?|webp|heic|dng|cr2|nef|mp4|mov)"


# The combining marks (categories Mn, Mc, Me: Indic vowel signs, nukta and virama, Thai vowels, Arabic harakat, Hebrew
# niqqud) as a class body: ``\w`` holds no mark. Planes 0, 1 and 14 hold them all (2 and 3 are ideographs, 15 and 16
# private use): a sixth of the code points, read at import.
_MARKS = class_body(in_category("M", (*range(0x20000), *range(0xE0000, 0xF0000))))
# A word character or a mark, as a class body: names, tags and file names in Indic, Thai or vocalised Arabic
# hold marks ("#เที่ยวไทย", "ताजमहल.jpg"), and a ``\w`` run stopped at the first one and split the word.
_WORD_OR_MARK = rf"\w{_MARKS}"

# Dotted names (example.com, my.photo.jpg) only start at a token start: starting at
# every word boundary would make a long dotted or hyphenated token cost O(n^2).
_URL = (
    r"(?:\b(?:https?|ftp)://|\bwww\.)(?:[^\s()\[\]{}<>\"]|\([^\s()]*\))+"
    r"|(?<![\w.-])[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|info|biz|io|ly|co\.uk)\b(?:/(?:[^\s()\[\]{}<>\"]|\([^\s()]*\))*)?"
)
URL_RE = re.compile(_URL, re.IGNORECASE)
# A link with the words that introduce it: removing the link alone leaves "Source:" or "more at".
LABELLED_URL_RE = re.compile(
    r"(?:(?<!\w)(?:(?:image\s+|photo\s+)?source|via|from|link|url|website|more(?:\s+(?:info|photos?|details))?"
    r"(?:\s+(?:at|on|here))?|see|visit|available\s+(?:at|on)|read\s+more(?:\s+(?:at|on))?"
    r"|(?:shop|buy|order)(?:\s+(?:it|now|online))?\s+(?:at|on)|found\s+(?:at|on))\s*(?::\s*)?)?"
    rf"(?P<url>{_URL})",
    re.IGNORECASE,
)
_BARE_DOMAIN_RE = re.compile(r"[\w-]+(?:\.[\w-]+)*", re.IGNORECASE)  # no scheme, no "www.", no path


def _is_site_name(text: str, start: int, end: int) -> bool:
    """A capitalised bare domain inside a clause is a company's name, not a link: "A sign for Hotels.com in
    Times Square", "Reddit.com's front page", "Booking.com headquarters". Words of its clause must follow it
    (or a possessive), and none but words come before it; a link at a clause's edge is a label."""
    link = text[start:end]
    if not link[:1].isupper() or not _BARE_DOMAIN_RE.fullmatch(link):
        return False
    before = _char_before(text, start)
    after, second = text[end:end + 1], text[end + 1:end + 2]
    return (not before or before.isalnum()) and (after in ("'", "’") or after == " " and second.isalnum())


def _char_before(text: str, start: int) -> str:
    """``text[:start].rstrip()[-1:]``, read from ``start`` back rather than by copying the caption's head: called once
    per match, a copy would make a caption of many matches cost O(n^2)."""
    if 0 < start <= len(text) and not text[start - 1].isspace():
        return text[start - 1]
    i = min(start, len(text)) if start >= 0 else max(len(text) + start, 0)
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return text[i - 1] if i > 0 else ""


def _char_after(text: str, end: int) -> str:
    """``text[end:].lstrip()[:1]``, read from ``end`` on (see ``_char_before``)."""
    if 0 <= end < len(text) and not text[end].isspace():
        return text[end]
    i, n = (end if end >= 0 else max(len(text) + end, 0)), len(text)
    while i < n and text[i].isspace():
        i += 1
    return text[i] if i < n else ""


def url_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every link (``URL_RE``), less site names used as names (``_is_site_name``)."""
    return [m.span() for m in URL_RE.finditer(text) if not _is_site_name(text, *m.span())]


def labelled_url_spans(text: str) -> list[tuple[int, int]]:
    """``LABELLED_URL_RE`` spans (a link with the words that introduce it), less site names used as names."""
    return [m.span() for m in labelled_url_matches(text)]


def labelled_url_matches(text: str) -> list[re.Match]:
    """The ``LABELLED_URL_RE`` matches of ``labelled_url_spans``."""
    return [m for m in LABELLED_URL_RE.finditer(text) if not _is_site_name(text, *m.span("url"))]

FILENAME_RE = compiled.compile(
    # Phone / desktop screenshots and messenger exports, with their timestamps.
    r"\b(?:screen[\s_-]?shot|whatsapp[\s_-]image)[\s_-]*\d{4}-?\d{2}-?\d{2}"
    r"(?:[\s_-]*(?:at)?[\s_-]*\d{1,2}[.:_-]?\d{2}(?:[.:_-]?\d{2})?(?:\s?[ap]m)?)?"
    rf"(?:\.{_IMAGE_EXT})?\b"
    # Camera file names, with or without an extension (IMG_2041, DSC00123, P1010123).
    # Case-sensitive prefixes, so "Uncle Sam_1776" or "dji" in prose stay out.
    r"|\b(?-i:IMG|img|DSC[NF]?|dsc[nf]?|DCIM|PXL|MVIMG|GOPR|DJI|CIMG|PICT|SAM)[_-]?\d{3,}(?:[_-]\d+)*"
    rf"(?:\.{_IMAGE_EXT})?\b"
    rf"|\bP\d{{7}}(?:\.{_IMAGE_EXT})?\b"
    # Anything that ends in an image or video extension (2041.jpg, my-photo.PNG, ताजमहल.jpg with its marks).
    rf"|(?<![{_WORD_OR_MARK}.-])[{_WORD_OR_MARK}-]+(?:\.[{_WORD_OR_MARK}-]+)*\.{_IMAGE_EXT}\b",
    re.IGNORECASE, "filename",
)

# A person's or an agency's name: up to four capitalised words ("Jane Doe", "J. R. Smith",
# "Getty Images", "@jdoe"). A word that usually starts a caption ("A", "The", "Two", ...)
# never continues a name, so "Photo: Jane Doe A dog runs" keeps "A dog runs". A word's
# final period is not part of it ("Photo: Jane Doe. A dog").
_NAME_STOP = (
    r"(?:A|An|This|That|These|Those|There|Two|Three|Four|Five|Six|Several|Some|Many|One|Men|Woman|Women|Boy|Boys"
    r"|Girl|Girls|Dog|Dogs|Child|Children|Kids?|People|Person|Group|Close|View|Photo|Image|Picture|Stock|Click|Buy"
    r"|Shop|Order|Call|Get|Visit|Book|Save|Use|Only|Now|Free|Sale|Limited|Today|Up|Best|Deal|Learn|Sign|Add"
    r"|Tap|Download|Subscribe|Check|Don't)(?![\w.'’])"
)
# Capital and small letters beyond ASCII (Latin, Greek, Cyrillic), as character-class contents: a name may start
# with one ("Photo: Émile Zola", "Foto: Łukasz Nowak"), and a small one after a name makes it prose ("Foto: Hund über
# die Wiese"). ``re`` has no \p{Lu}: the letters are listed.
_LETTER_BLOCKS = ((0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x52F), (0x1E00, 0x1EFF))
_UPPER = "A-Z" + "".join(ch for lo, hi in _LETTER_BLOCKS for ch in map(chr, range(lo, hi + 1)) if ch.isupper())
_LOWER = "a-z" + "".join(ch for lo, hi in _LETTER_BLOCKS for ch in map(chr, range(lo, hi + 1)) if ch.islower())
_NAME_WORD = rf"(?:@\w+|[{_UPPER}]\.|[{_UPPER}][\w'’&-]*(?:\.[A-Za-z][\w'’&-]*)*)"
_NAME_PARTICLE = rf"(?:van|von|de|da|del|der|di|du|la|le|bin|al)(?=[ ]+[{_UPPER}])"
# A credit's label and its colon continue no name: "Source: Reuters Source: Reuters" is two credits, not one whose
# name is "Reuters Source". A plural media word is none: "Getty Images: A dog" is the agency's name.
_LABEL_COLON = (r"(?i:foto|fotograf(?:[ií]a|ie)|bild|imagen|immagine|(?:photo|image|foto|bild)?(?:source|quelle|fuente"
                r"|credit|cr[eé]dito|cr[eé]dit)s?|quellen|fonte|credito|crediti|(?:bild|foto)nachweis|via|copyright"
                r"|courtesy|photographer|author|artist)\s*:")
# Atomic: a name takes all the capitalised words it can, and is no name at all if a lower-case word
# follows ("Photo: Man stands on a cliff" is a caption, not a credit), unless that word links to
# more credit ("for The Guardian", "via AP").
# Not a stop word: every one is capitalised, so a lower-case letter or a sign is no stop word without reading the list.
_NOT_STOP = rf"(?!(?=[A-Z])(?:{_NAME_STOP}|The\b|{_LABEL_COLON}))"
_NAME_REST = rf"(?:[ ]+{_NOT_STOP}(?:{_NAME_PARTICLE}|{_NAME_WORD})){{0,3}}"
_NAME_END = rf"(?![ ]+(?!(?:for|via|at|of|from|on|and)[ ]+(?:The[ ]+)?[{_UPPER}@])[{_LOWER}])"
_NAME = rf"(?-i:(?>{_NOT_STOP}{_NAME_WORD}{_NAME_REST}){_NAME_END})"
# An organisation may start with "The" ("for The Guardian"); only after "for", "via", "at", "of".
_ORG = rf"(?-i:(?>(?:The[ ]+)?{_NOT_STOP}{_NAME_WORD}{_NAME_REST}){_NAME_END})"
_AGENCIES = (
    r"(?:AP|AFP|Reuters|REUTERS|Getty(?:\s+Images)?|EPA-EFE|EPA|PA(?:\s+Images)?|Xinhua|Bloomberg|Shutterstock|Alamy"
    r"|iStock(?:photo)?"
    r"|Corbis|Associated\s+Press|NurPhoto|Sipa|REX|Rex\s+Features|ZUMA(?:\s+Press)?|Anadolu|UPI|dpa|EFE|ANSA|Flickr"
    r"|Wikimedia(?:\s+Commons)?|Unsplash|Pexels|Pixabay|NASA|Magnum(?:\s+Photos)?)"
)
# The news agencies, whose name alone ending a title is a credit ("... | AFP"; the stock sites and site names there are
# boilerplate's); AP, PA and Anadolu only with their media word, as a state or a region ends a title too ("- PA").
_WIRE_AGENCIES = (
    r"(?:AP\s+Photo|AFP|Reuters|REUTERS|EPA-EFE|EPA|PA\s+(?:Images|Wire|Photo)|Xinhua|Bloomberg|Corbis"
    r"|Associated\s+Press|NurPhoto|Sipa(?:\s+USA)?|Rex\s+Features|ZUMA(?:\s+Press|\s+Wire)?|Anadolu\s+Agency|UPI|dpa"
    r"|EFE|ANSA|NASA|Magnum(?:\s+Photos)?)"
)
# "Jane Doe/Reuters", "Jane Doe | AFP", "Jane Doe for The Guardian", "Jane Doe, Getty Images".
# The one agency written in lower case, "dpa", is a credit's name too ("Quelle: dpa", "Source: dpa").
_CREDITED = (
    rf"(?:(?-i:Flickr|Instagram|Twitter|YouTube|Facebook)\s+user\s+@?[\w.-]+|(?-i:dpa(?:-\w+)*(?![\w@-]){_NAME_END})"
    rf"|{_NAME})"
    rf"(?:\s*[/|]\s*(?:{_NAME}|(?-i:dpa(?:-\w+)*)(?![\w@-]))|\s+(?:for|via|at|of|from|on|and|&)\s+{_ORG}"
    rf"|,\s*(?-i:{_AGENCIES})\b)*"
)
_MEDIA = r"(?:photos?|images?|pictures?|photography|footage|vectors?|illustrations?)"
# What follows a company's name when it is the subject: "Getty Images headquarters", "Shutterstock CEO Jon Oringer".
_COMPANY_WORD = (
    r"(?:headquarters|hq|offices?|buildings?|ceo|cfo|cto|founders?|co-?founders?|executives?|employees?|staff|team"
    r"|logos?|signs?|banners?|booths?|stores?|apps?|website|homepage|account|shares|stock\s+price|contributors?"
    r"|photographers?|event|conference|party|awards?|is|was|are|were|has|had|have|acquires?|acquired|announces?"
    r"|announced|launches?|launched|buys?|bought|sells?|sold|says|said|reports?|reported|agrees?|agreed|merges?|merged"
    r"|and|&|vs\.?|v\.)(?![\w&])"
)
_STOCK_SITES = (
    r"(?:shutterstock|alamy|getty\s*images|istock(?:photo)?|dreamstime|depositphotos"
    r"|123rf|adobe\s+stock|fotolia|bigstock(?:photo)?|pixabay|unsplash|pexels|freepik|vecteezy|rawpixel|stocksy)"
    r"(?:\.com)?"
)
# A word at a clause's edge: the caption's start or end, or next to a separator, a colon, a bracket or a
# sentence end. A noise word that could also be prose ("downloads", "thumbnail") counts only as a whole clause.
_CLAUSE_START = r"(?:^|(?<=[|•·:;,(\[])|(?<=[|•·:;,(\[]\s)|(?<=\s[-–—]\s)|(?<=[.!?]\s))"
_CLAUSE_END = r"(?=\s*(?:$|[|•·:;,)\]]|[-–—]\s|[.!?…](?:\s|$)))"
_NOT_AFTER_DETERMINER = "".join(
    rf"(?<!\b{d} )" for d in ("a", "an", "the", "his", "her", "my", "our", "your", "their", "its", "this", "that")
)
_IMAGE_WORD = r"(?:image|photo|picture|img|pic)"
# The ID a stock label carries goes with it ("royalty free image 16086", "stock photo ID: 123456",
# "Alamy stock photo ABC123"): labelled ("ID", "No.", "#"), or a bare code of capitals and digits (three
# characters, a digit) that ends the clause, so "stock photo of 3 dogs" keeps its words.
_STOCK_ID = (
    r"(?:\s*(?:id|no\.|nr\.|#)\s*(?:[:#]\s*)?(?=[\w-]*\d)[a-z\d]{3,}(?:[-_][a-z\d]+)*"
    rf"|\s+(?-i:(?=[A-Z\d-]*\d)[A-Z\d]{{3,}}(?:[-_][A-Z\d]+)*){_CLAUSE_END})"
)
# Where a label that takes the rest of its clause stops: the caption's end, a separator or a sentence end, never a
# comma ("coffee, indoor" is the rest of an "Image may contain:" list). Read by a lazy scan, which reaches a run of
# spaces at its first space: where a space follows a space, the answer would be the first space's, so it is not read
# again (else a long run costs O(n^2)).
_LIST_END = r"(?=(?!(?<=\s)\s)\s*(?:$|[|•·\n]|\s[-–—]\s|[.!?…](?:\s|$)))"
# Image size and quality words of wallpaper sites: "1920x1080", "HD", "4K", "1080p", "Full HD".
_RESOLUTION = r"\d{3,5}\s?[x×]\s?\d{3,5}(?:\s?(?:px|pixels))?"
_QUALITY = (r"(?:full[\s-]?hd|ultra[\s-]?hd|[ufq]hd|hd|hq|[2458]k|\d{3,4}p"
            r"|high[\s-](?:res(?:olution)?|quality|definition)|widescreen)")
_WALLPAPER = r"(?:(?:desktop|mobile|phone|iphone|android|pc)\s+)?(?:wallpapers?|backgrounds?)"
# Lorem ipsum and the words of its usual filler text, which go with it: lower-case, or capitalised only where no
# English word could be meant ("Ut enim", "Duis aute"), so "Lorem ipsum. A dog" keeps "A dog".
_LOREM = (
    r"lorem\s+ipsum(?-i:(?:[\s,.;:]+(?:(?:dolor|sit|amet|consectetu?e?r|adipisc(?:ing|i)|elit|sed|do|eiusmod|tempor"
    r"|incididunt|ut|labore|et|dolore|magna|aliqua|enim|ad|minim|veniam|quis|nostrud|exercitation|ullamco|laboris"
    r"|nisi|aliquip|ex|ea|commodo|consequat|duis|aute|irure|in|reprehenderit|voluptate|velit|esse|cillum|eu|fugiat"
    r"|nulla|pariatur|excepteur|sint|occaecat|cupidatat|non|proident|sunt|culpa|qui|officia|deserunt|mollit|anim"
    r"|id|est|laborum|aenean|ligula|eget|massa|cum|sociis|natoque|penatibus|magnis|dis|parturient|montes|nascetur"
    r"|ridiculus|mus|donec|quam|felis|ultricies|nec|pellentesque|pretium|sem|integer|vitae|nunc|nibh|vel|vivamus"
    r"|lacus|mauris|neque|turpis|tellus|metus|purus|risus|justo|orci|odio|ante|urna|augue|at|ac|a)"
    r"|Ut|Duis|Excepteur|Sed|Aenean|Donec|Nulla|Cum|Quisque|Vivamus|Nam|Pellentesque|Etiam|Maecenas|Fusce|Curabitur"
    r"|Phasellus|Nullam|Morbi|Vestibulum|Praesent|Mauris|Suspendisse|Cras|Proin|Lorem|Neque)\b)*)"
)
# Every label starts with a letter or a digit: the lookahead ends the try at every other position at once (most of a
# caption's positions, where the many branches would each be tried in turn; so too for the credit and ad triggers).
BOILERPLATE_RE = compiled.compile(
    r"(?<!\w)(?=\w)(?:"
    # a stock site's name with its ID, ending its clause, before a stock label, or starting a clause as a page
    # title's ("Shutterstock dog portrait"), unless the company is the subject ("Getty Images headquarters")
    rf"(?:(?:on|via|from|at)\s+|(?<!\bof\s)(?<!\bfor\s)){_STOCK_SITES}"  # not "the founder of Shutterstock"
    rf"(?:{_STOCK_ID}|{_CLAUSE_END}|(?=\s+(?:stock|royalty|free|{_MEDIA})\b))"
    rf"|(?=[sagid1fbpu]){_CLAUSE_START}{_STOCK_SITES}(?!['’]|\s+{_COMPANY_WORD})"
    rf"|royalty[\s-]free(?:\s+stock)?(?:\s+{_MEDIA})?{_STOCK_ID}?(?:\s+(?:of|for))?"
    rf"|stock\s+{_MEDIA}(?:\s+(?:and|&)\s+{_MEDIA})?{_STOCK_ID}?(?:\s+(?:of|for))?"  # Alamy's "Stock Photos and Images"
    rf"|free\s+(?:stock\s+)?(?:photos?|images?|pictures?){_STOCK_ID}?(?:\s+(?:of|for))?"
    # A generated list of guesses: "Image may contain: coffee, indoor" is no caption, its list goes too.
    rf"|image\s+may\s+contain(?:\s*:?\s*[^|•·\n]*?{_LIST_END})?"
    # Labels that stand as a clause of their own (one group: a branch that starts with a look-behind is tried at
    # every word, so there are few of them, and each first looks at the letter its words can start with).
    rf"|(?=[mtkipfvcndeawl\d]){_CLAUSE_START}(?:"
    # the same list, newer wording: "May be an image of 2 people and outdoors"
    r"may\s+be\s+(?:an?\s+)?(?:image|photo|picture|illustration|graphic|cartoon|meme)\s+of"
    rf"(?:\s*:?\s*[^|•·\n]*?{_LIST_END})?"
    # a keyword field: "Tags: wedding, bride", "Keywords: barn; sunset"
    rf"|(?:tags|tagged(?:\s+with)?|keywords|key\s+words)\s*:[^|•·\n]*?{_LIST_END}"
    # placeholders a page shows where an image or its description is missing; a bare image size ("A lake |
    # 1920x1080", never "a 1920x1080 screen")
    r"|(?:(?:(?:this|the)\s+)?(?:image|photo|picture|img|file|page|video|media|content)\s+"
    r"(?:(?:is|was)\s+)?(?:(?:currently|temporarily)\s+)?(?:not\s+(?:found|available)|unavailable|missing"
    r"|coming\s+soon|(?:could|can)\s*not\s+be\s+(?:loaded|displayed|found|shown)|failed\s+to\s+load"
    r"|(?:has\s+been|was)\s+(?:removed|deleted))"
    r"|no\s+(?:image|photo|picture|preview|thumbnail)s?(?:\s+(?:available|found|yet))?"
    r"|placeholder(?:\s+(?:image|photo|picture|text))?|dummy\s+(?:image|photo|picture|text)"
    r"|error\s+404|404\s+(?:error|(?:page\s+)?not\s+found)"
    r"|(?:enter|insert|add|type|write)\s+(?:(?:an?|your|the)\s+)?(?:image\s+)?(?:description|caption|alt(?:\s+text)?)"
    rf"(?:\s+here)?|{_RESOLUTION}){_CLAUSE_END}"
    rf"|{_LOREM})"
    # A site's name as the page title's suffix: "A red barn at sunset | Pinterest", "Funny cats - YouTube".
    r"|(?=[pyfitredwbvlhgza])(?:(?<=[|•·])|(?<=[|•·]\s)|(?<=\s[-–—]\s))"
    r"(?:pinterest|youtube|facebook|instagram|twitter|tumblr|reddit"
    r"|imgur|flickr(?:\s*[-–—:]\s*photo\s+sharing)?|etsy|ebay|wikipedia|wikimedia\s+commons|deviantart|behance"
    r"|dribbble|vimeo|tiktok|linkedin|houzz|weheartit|we\s+heart\s+it|giphy|redbubble|zazzle|aliexpress|imdb)!?"
    r"(?=\s*(?:$|[|•·]|\s[-–—]\s))"
    # Wallpaper-site size and quality labels: "1920x1080 HD wallpaper", "HD wallpaper 4k", "wallpapers 1080p" (a
    # bounded number of size words: a run of them is read from each of its words).
    rf"|(?=[fhuqw\d])(?:free\s+)?(?:(?:{_RESOLUTION}\s+)?(?:{_QUALITY}\s+){{1,3}}|{_RESOLUTION}\s+){_WALLPAPER}"
    rf"(?:\s+(?:{_QUALITY}|{_RESOLUTION})){{0,3}}(?:\s+of)?"
    rf"|(?=[dmpiawb]){_WALLPAPER}(?:\s+(?:{_QUALITY}|{_RESOLUTION})){{1,3}}"
    # Stock vector labels and file formats: "Vector illustration", "EPS 10", "AI, EPS", "vector EPS".
    r"|vector\s+(?:illustrations?|images?|graphics?|clip[\s-]?art|art(?:work)?|drawings?)(?:\s+(?:of|for))?"
    r"|(?=[vaspcje])(?:vector\s+)?(?:(?:ai|svg|pdf|psd|cdr|jpe?g|png)\s*(?:[,/+&]|\band\b)\s*){0,4}"
    r"eps(?:\s*(?:-\s*)?\d{1,2}(?!\d)|(?=\s*(?:[,/+&]|\band\b)\s*(?:ai|svg|pdf|psd|cdr|jpe?g|png)\b)|(?<=vector\seps))"
    r"(?:\s*(?:[,/+&]|\band\b)\s*(?:ai|svg|pdf|psd|cdr|jpe?g|png|eps(?:\s*\d{1,2})?)){0,4}(?:\s+(?:files?|format))?"
    r"|click\s+(?:(?:here|image|photo|picture)\s+)?(?:to|for)\s+(?:enlarge|zoom(?:\s+in)?"
    r"|view\s+(?:larger|full(?:\s+size)?)|(?:a\s+)?larger(?:\s+(?:image|view|version))?)"
    r"|(?:view|see)\s+(?:larger|full[\s-]size)(?:\s+(?:image|photo|picture|version))?"
    r"|no\s+(?:(?:photo|image|picture)\s+)?(?:description|caption|alt(?:\s+text)?)\s+(?:available|provided)"
    # Numbered like a file, not a "photo 2019 of the family": "Image no. 123", "photo_0042",
    # "Photo 2019-05-03 12:30"; "Image 12345" only as a whole clause.
    rf"|{_IMAGE_WORD}\s*(?:no\.?|#|id(?:\s*:)?)\s*\d{{3,}}"
    rf"|{_IMAGE_WORD}[\s_-]*\d{{4}}[-_.]\d{{2}}[-_.]\d{{2}}"
    r"(?:[\s_-]*(?:at[\s_-]*)?\d{1,2}[.:_-]\d{2}(?:[.:_-]\d{2})?(?:\s?[ap]m)?)?"
    rf"|(?:image|photo|picture|pic)[_-]?\d{{3,}}(?:[_-]\d+)*"
    # "Free download" ("a free download" is a thing), "Download free HD wallpaper" leading a clause;
    # "thumbnail of" leading one; bare "downloads", "thumbnail", "photo 2019" only as the whole clause.
    rf"|(?=f){_NOT_AFTER_DETERMINER}free\s+(?:hd\s+)?downloads?(?:\s+(?:free|now|here))?"
    rf"|(?=d){_CLAUSE_START}download\s+(?:for\s+)?free(?:\s+(?:hd|4k|full\s+hd|high[\s-](?:resolution|quality)))?"
    r"(?:\s+(?:wallpapers?|backgrounds?|images?|photos?|pictures?|pics|vectors?))?"
    rf"|(?=t){_CLAUSE_START}thumbnails?(?:\s+(?:image|photo|picture)s?)?\s+(?:of|for)"
    # iStock's "Download Image Now", a wallpaper page's "Background Image", as their own clauses
    rf"|(?=[dtipb]){_CLAUSE_START}(?:downloads?|thumbnails?(?:\s+(?:image|photo|picture)s?)?|{_IMAGE_WORD}\s+\d{{3,}}"
    r"|download\s+(?:this\s+)?(?:image|photo|picture|vector|video)\s+now|background\s+(?:image|photo|picture)s?)"
    rf"{_CLAUSE_END}"
    r")(?!\w)",
    re.IGNORECASE, "boilerplate",
)

# Media and credit labels beyond English too: "Foto: Maria Rossi", "Fotografía: Juan Pérez", "Bild: Hans Müller",
# "Crédit photo : Jean Dupont", "Quelle: dpa", "Fuente: EFE" (the French space before the colon is allowed everywhere).
_FOREIGN_MEDIA_LABEL = r"(?:fotograf(?:[ií]as?|ie)|bild(?:er)?|imag(?:en|em|ens)|immagine)"
_MEDIA_LABEL = (r"(?:(?:photo(?:graph)?|image|picture|pic|foto|video|footage|illustration|artwork|graphic)s?"
                rf"|{_FOREIGN_MEDIA_LABEL})")
# one image's label, as a credit says it
_PHOTO_LABEL = r"(?:photo(?:graph)?|image|picture|pic|foto|illustration)(?!s\b)"
_CREDIT_WORD = r"cr[eé]dit(?:s|os?|i)?"  # credit, crédit(s), crédito(s), credito, crediti
# "fuente" and "fonte" are a fountain as often as a source ("junto a la fuente - Plaza Mayor"): a credit only
# starting its clause ("A dog. Fuente: EFE"), never after an article or any other word.
_SOURCE_WORD = rf"(?:sources?|(?:bild|foto)?quellen?|(?=f){_CLAUSE_START}(?:fuentes?|fonte)|(?:bild|foto)nachweis)"
# A user name in lower case ("jsmith", "jane_doe", "@jdoe", "john smith"): one or two words, none a word that
# starts a phrase ("photo by the lake", "photo by night", "photo by my mum").
_HANDLE_STOP = (
    r"(?:a|an|the|my|your|his|her|our|their|its|this|that|these|those|me|him|us|them|you|one|two|three|some|several"
    r"|many|night|day|daylight|sunlight|moonlight|candlelight|starlight|flash|hand|phone|iphone|drone|camera|film"
    r"|satellite|mail|email|post|car|bus|train|boat|plane|air|sea|land|far|nature|design|chance|accident|request"
    r"|default|unknown|anonymous|and|or|of|in|on|at|with|from|to|for|via)(?![\w.-])"
)
_HANDLE = rf"(?-i:@[\w.-]*\w|(?!{_HANDLE_STOP})[a-z][\w.-]*[a-z\d_](?:[ ](?!{_HANDLE_STOP})[a-z][\w.-]*[a-z\d_])?)"
_YEARS = r"\d{4}(?:\s*[-–]\s*\d{4})?"
_RIGHTS = r"(?:[\s.,;-]*all\s+rights\s+reserved)"
# A credit that must end its clause: the end, a separator, a bracket or a sentence end, not a comma and prose.
_CREDIT_END = r"(?=\s*(?:$|[|•·:;)\]]|[-–—]\s|[.!?…](?:\s|$)))"
# The two credits that start with a name: "Jane Doe/AP Photo", and an agency credit with no label: "Jane Doe/Getty
# Images", "Jane Doe | AFP" (``_credit_matches`` looks for them its own way).
# Where the agency starts is a group of each: after a preposition the name is a place's ("Protesters march in Paris |
# AFP"), and only the agency is the credit (``credit_spans``).
# Its media word ends the credit: "Jane Doe | AFP Photo by John Roe" is two credits, not "Photo" taken by the first.
_PHOTO_ENDS = r"(?=\s*(?:$|[|•·;)\]]|[-–—]\s|[.!?…](?:\s|$)))"
_NAME_AGENCY_PHOTO = rf"{_NAME}\s*/\s*(?P<agency_photo>(?-i:{_AGENCIES})\s+(?:photos?|images?){_PHOTO_ENDS})"
_NAME_AGENCY = (rf"{_NAME}\s*[/|]\s*(?P<agency>(?-i:dpa(?:-\w+)+)(?![\w@-])"  # "Jane Doe/dpa-tmn" whole
                rf"|(?-i:{_AGENCIES})\b(?:\s+(?:photos?|images?){_PHOTO_ENDS})?)")
# A byline in another language: "Photo par Jean Dupont", "Foto por Juan Pérez", and with "von", "de" or "di", which say
# "of" as often as "by" ("Foto de Machu Picchu", "Foto de Real Madrid", "Bild von Weihnachtsmarkt Dresden"), only
# with an agency after a slash or a bar: "Foto von Hans Müller/dpa", "Foto de Juan Pérez | EFE". A credit only as a
# clause's start, with a name of two to four capitalised words, the first none that starts a place's name ("Photo par
# Saint ..."), ending its clause, and never all the caption (``credit_spans``): "Photo de famille", "Une photo de
# Jean Dupont" are descriptions.
_PLACE_START = (
    r"(?:New|San|Santa|Santo|São|Sankt|St|Saint|Sainte|Los|Las|La|Le|Les|El|Il|Lo|Der|Die|Das|Den|Notre|Buenos|Rio"
    r"|Río|Hong|Costa|Puerto|Porto|Port|Mont|Monte|Mount|Mt|Lake|Lago|Lac|Piazza|Plaza|Place|Platz|Rue|Via|Calle"
    r"|Avenida|Isla|Isola|Île|Cabo|Cap|Cape|Castello|Castillo|Château|Schloss|Palazzo|Palacio|Palais|Catedral"
    r"|Cathédrale|Basilica|Basílica|Torre|Tour|Bad|Villa|Playa|Parque|Parco|Parc|Park|Musée|Museo|Museum|Gare|Porta"
    r"|Porte|Puerta|Puente|Ponte|Pont|Nueva|Nuevo|Gran|Grand|Grande|Ciudad|Città|Cité|Mar|Golfo|Côte|Val|Valle"
    r"|Sierra|Cerro|Pic|Pico|Col|Baie|Bahía|Hotel|Hôtel|Iglesia|Église|Chiesa|Kirche|Dom|Burg|Nord|Süd|Sud|Norte"
    r"|Sur|Alta|Alto|Upper|Lower|North|South|East|West|Great|Little|Old|Vieux|Vieille|Alt|Fort|Forte|Bosque|Bois"
    r"|Forêt|Wald|Jardin|Jardín|Giardino|Garten|Campo|Champs|Quartier|Barrio)(?![\w'’-])"
)
_BYLINE_NAME = (rf"(?-i:(?>(?!{_PLACE_START}){_NOT_STOP}{_NAME_WORD}"
                rf"(?:[ ]+{_NOT_STOP}(?:{_NAME_PARTICLE}|{_NAME_WORD})){{1,3}}){_NAME_END})")
_FOREIGN_BYLINE = (rf"(?P<byline>(?:photo|foto|bild|image|imagen|immagine|fotograf(?:[ií]a|ie))s?\s+"
                   rf"(?:(?-i:par|por)\s+{_BYLINE_NAME}(?:\s*[/|]\s*{_NAME})?"
                   rf"|(?-i:von|de|di)\s+{_BYLINE_NAME}\s*[/|]\s*(?-i:{_AGENCIES})\b){_CREDIT_END})")
# © 2019 Jane Doe. All rights reserved / (c) Jane Doe 2019 / © / photo © 2019 (its media label goes too, inside a
# clause only a photo's in the singular: "old photos © 2019 Jane Doe" keeps the photos)
_COPYRIGHT_SIGN = (rf"(?:(?:{_CLAUSE_START}{_MEDIA_LABEL}|{_PHOTO_LABEL})\s*)?(?:©|\(c\))(?:\s*(?:©|\(c\)))?\s*"
                   rf"(?:{_YEARS}[\s,]*)?(?:by\s+)?"
                   rf"(?:{_CREDITED})?(?:[\s,]*\d{{4}})?{_RIGHTS}?")
# Where a credit may start: every credit starts with a letter, a digit or "@", but a sign, a "(c)" and a "via" after a
# bracket. At a sign or a bracket only the sign's credit can match, tried first: the others are not tried in vain
# (nor, at any other sign or space, is any). Its text is 250,000 characters, a third of a second of ``re``'s parser
# (its code is cached per machine: ``compiled``): it is compiled when first needed, as ``CREDIT_RE`` (``credit_re``)
# where a caption has an agency after a slash or a bar, else without its credits that start with a name
# (``_credit_others_re``, below), so a process that reads no caption (the UI's code server, a step that reads none,
# most `curate` commands) never compiles it.
_CREDIT_PATTERN = (
    rf"(?<![\w@])(?:(?=[©(])(?:{_COPYRIGHT_SIGN})|(?=[\w@]|(?<=[(\[])\s)(?:"
    # A lower-case user name: "photo by jsmith", "Credit: jane_doe" (first, so "Credit:" never goes without it).
    # Only as a whole clause, so "A photo by the lake" stays; at a clause's end if it can only be a handle
    # ("Sunset photo by jsmith88").
    rf"(?=[pifvagcb]){_CLAUSE_START}"
    rf"(?:{_MEDIA_LABEL}(?:\s+credits?)?\s+by|photographed\s+by"
    rf"|(?:{_MEDIA_LABEL}\s+)?{_CREDIT_WORD}(?:\s+{_MEDIA_LABEL})?\s*:)"
    rf"\s+{_HANDLE}{_CREDIT_END}"
    rf"|{_MEDIA_LABEL}\s+by\s+(?-i:@[\w.-]*\w|[a-z][a-z.-]*(?:\d|_)[\w.-]*[a-z\d]){_CREDIT_END}"
    # Photo: Jane Doe / Photo credit: Jane Doe/AP / Picture by Jane Doe / Image courtesy of NASA
    # (inside a clause, only a photo's label in the singular: "a book of photos by Ansel Adams", "framed pictures by
    # Vivian Maier", "old photos © 2019 Jane Doe" (the sign's credit alone) describe what is shown)
    rf"|{_MEDIA_LABEL}(?:\s+credits?)?\s*:\s*{_CREDITED}"
    rf"|{_MEDIA_LABEL}\s+credits?\s*(?:\bby\b|\bcourtesy(?:\s+of)?\b|©|\(c\))\s*{_CREDITED}"
    rf"|(?:{_CLAUSE_START}{_MEDIA_LABEL}|{_PHOTO_LABEL})\s*(?:\bby\b|\bcourtesy(?:\s+of)?\b|©|\(c\))\s*{_CREDITED}"
    rf"|(?=[pfbi]){_CLAUSE_START}{_FOREIGN_BYLINE}"
    # Credit: Jane Doe/Reuters / Credits - Jane Doe / Source: Reuters / Image source: Wikimedia Commons /
    # Crédit photo : Jean Dupont / Quelle: dpa
    # (a source word before " - " inside a clause is a noun of it: "using a watering can as the water source - Alamy"
    # keeps its source, and the agency after the dash is cut alone)
    rf"|(?:{_MEDIA_LABEL}\s+)?(?:{_CREDIT_WORD}(?:\s+{_MEDIA_LABEL})?|via)\s*(?::|\s-)\s*(?:{_CREDITED})?"
    rf"|(?:{_MEDIA_LABEL}\s+{_SOURCE_WORD}|(?=[sqbf]){_CLAUSE_START}{_SOURCE_WORD}|{_SOURCE_WORD}(?=\s*:))"
    rf"\s*(?::|\s-)\s*(?:{_CREDITED})?"
    rf"|(?:photographer|author|artist|photo\s+editor)\s*:\s*{_CREDITED}"
    # Photo: courtesy of the artist / Photo courtesy Jane Doe
    rf"|(?:{_MEDIA_LABEL}\s*(?::\s*)?)?courtesy(?:\s+of)?\s+(?:the\s+(?:artist|photographer|author|owner|family|estate"
    rf"|museum|gallery|archive)s?\b|{_CREDITED})"
    # AP Photo/Jane Doe / Reuters/Jane Doe / Jane Doe/AP Photo
    rf"|(?-i:{_AGENCIES})(?:\s+(?:photos?|images?))?\s*/\s*{_CREDITED}"
    # A news agency alone, the last of a title's parts: "Protesters march in Paris | AFP", "A rocket launch - NASA"
    # (or before what another rule cuts: "- AFP via Getty Images", "| NASA #space")
    rf"|(?:(?<=[|•·])|(?<=[|•·]\s)|(?<=\s[-–—/]\s))(?-i:{_WIRE_AGENCIES})(?:\s+(?:photos?|images?))?"
    rf"(?:\s*[-–—,/]\s*{_CREDITED})?(?=[.!?…]?\s*(?:$|[|•·]|\s+via\s|\s*#))"  # "| AFP Photo - Jane Doe" whole
    rf"|{_NAME_AGENCY_PHOTO}"
    # - via @jdoe / . via Reuters: at the start of a clause (never "goes via Main Street") and ending it
    # ("Via Appia, an ancient Roman road" is a road); an agency may be followed by a comma ("Via AP, a ...").
    rf"|(?=v)(?:^|(?<=[-–—|•·:]\s)|(?<=[.!?]\s))via\s+(?:{_CREDITED}{_CREDIT_END}|(?-i:{_AGENCIES})(?=\s*,))"
    rf"|{_COPYRIGHT_SIGN}"
    # The word needs a year or a name, then the end of its clause: "Copyright law books" are books.
    # Copyright (c) 2015-2019 Jane Doe / Copyright Jane Doe 2019 / Copyright 2019, a dog / Copyright
    rf"|copyright(?:\s*(?:©|\(c\)))?\s*(?::\s*)?(?:{_YEARS}(?:[\s,]*(?:by\s+)?{_CREDITED})?(?:[\s,]*\d{{4}})?{_RIGHTS}?"
    rf"(?=\s*,|{_CREDIT_END})|(?:by\s+)?{_CREDITED}(?:[\s,]*\d{{4}})?{_RIGHTS}?{_CREDIT_END})"
    rf"|copyright(?:\s*(?:©|\(c\)))?{_RIGHTS}"
    rf"|(?=c){_CLAUSE_START}copyright(?:\s*(?:©|\(c\)))?{_CREDIT_END}"
    r"|all\s+rights\s+reserved"
    rf"|courtesy\s+of\s+{_CREDITED}"
    rf"|(?:photographed|photography)\s+by\s+{_CREDITED}"
    rf"|(?<=[(\[])\s*via\s+{_CREDITED}"
    rf"|{_NAME_AGENCY}"
    r"))(?!\w)"
)


@functools.cache
def credit_re() -> re.Pattern:
    """``CREDIT_RE``, compiled once, when first needed (a warm run server compiles both parts before it forks)."""
    return compiled.compile(_CREDIT_PATTERN, re.IGNORECASE, "credit")


def __getattr__(name: str):
    if name == "CREDIT_RE":  # patterns.CREDIT_RE, as the module's other patterns are read
        return credit_re()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- advertising and calls to action --------------------------------------------------
# A trigger is a phrase a description of a photo does not contain. The ad is the whole
# clause around it (``ad_spans``), or the tail of a clause that starts with a description.
# What a sale's words name when a graphic shows them: "Summer Sale banner with palm trees", "50% off sale tag vector
# illustration" describe the picture of a banner or a tag (stock graphics), not an offer. The graphic's noun ends its
# clause or goes on as a graphic's description does ("... banner design", "... badge icon set"): "50% off sale tags on
# all jeans", "Free shipping stickers and decals", "40% off Sale Sign Up" and "Tags: summer" stay ads.
_GRAPHIC_NOUN = (r"(?:banners?|posters?|flyers?|fliers?|tags?|stickers?|labels?|badges?|signs?|billboards?|templates?"
                 r"|coupons?|vouchers?|icons?|backgrounds?|stamps?|ribbons?|logos?|illustrations?|vectors?|graphics?"
                 r"|mock-?ups?|lettering|typography)")
# Or the graphic does something, or is somewhere, in the sentence: "A huge 50% off banner hangs over the entrance",
# "Free shipping sticker on a cardboard box", "A 50% off sign in a shop window" ("... tags on all jeans" stays an ad)
_GRAPHIC_PLACED = (r"\s+(?:(?:hangs?|hanging|hung|reads?|reading|says?|saying|shows?|showing|displayed|sits?|sitting"
                   r"|stands?|standing|covers?|covering|taped|stuck|posted|pinned|attached|glued|placed|mounted|painted"
                   r"|printed|written)\b"
                   r"|(?:on|in|at|over|above|below|under|behind|beside|near|outside|inside|against|across|next\s+to)"
                   # somewhere shown, not where a shopper redeems it ("20% off coupons at the checkout")
                   r"\s+(?:a|an|the|this|that)\s+(?!(?:checkout|register|till|app|cart|basket|website|site|store"
                   r"|shop(?!\s+window)|online|counter)\b))")
_AD_GRAPHIC = (r"(?!\s+(?:(?:sale|offer|deals?|discount|price|promo|web|square|round|neon|text)\s+){0,2}"
               rf"{_GRAPHIC_NOUN}(?:\s*(?:$|[|•·;,)\]]|[-–—]\s|[.!?…](?:\s|$))|\s+(?:with|design|template|vector|set"
               rf"|isolated|concept|elements?|layout|collection|{_GRAPHIC_NOUN})\b|{_GRAPHIC_PLACED}))")
_AD_TRIGGERS = [
    r"click\s+(?:here|now|below|(?:on\s+)?(?:the|this)\s+link|(?:the\s+)?(?:image|photo|picture|button)\s+(?:to|for)"
    r"(?!\s+(?:enlarge|zoom|view|see\s+(?:larger|full)))"
    r"|to\s+(?:buy|shop|order|see|view|read|learn|download|get|subscribe|visit|watch|find|discover|claim|save|book|"
    r"check|try|join|sign|start|win))",
    r"tap\s+(?:here|now|the\s+link|to\s+(?:buy|shop|order|see|view))",
    rf"(?=[abcdegjoprs]){_NOT_AFTER_DETERMINER}"
    r"(?:buy|shop|order|book|call|subscribe|register|sign\s+up|download|bid|donate|act"
    r"|apply|join|enrol+|reserve|grab\s+(?:yours|one)|get\s+(?:yours|it|one|them)|claim\s+(?:yours|it)|save|"
    r"pre-?order)\s+(?:it\s+)?(?:now|today|here|instantly)"
    # a button or sign that reads it is described: "a Book now button on a website"
    r"(?!\s+(?:buttons?|links?|signs?|banners?|icons?|tabs?|logos?|stickers?|posters?))",
    r"(?:subscribe|register|sign\s+up|download|bid|donate|apply|join|enrol+|reserve|pre-?order)\s+online",
    # "Call us today for a quote", "Text me now": never "Blondie performing Call Me at the Garden"
    r"(?:call|text|contact|email|e-mail|whatsapp|dm|message)\s+(?:us|me)\s+(?:now|today|anytime|for\s+(?:an?\s+)?"
    r"(?:free\s+)?(?:quotes?|estimates?|details|info(?:rmation)?|more\s+(?:info(?:rmation)?|details)|prices?|pricing"
    r"|bookings?|appointments?|reservations?|enquiries|inquiries|orders?))",
    r"(?:buy|get)\s+(?:\d+|one|two)\s+(?:get\s+(?:\d+|one)(?:\s+(?:free|half\s+price))?+|for\s+(?:\d+|one|the\s+price))"
    rf"{_AD_GRAPHIC}",  # ("free" taken whole: "Buy one get one free sign at a supermarket" is the sign's)
    r"\bbogo\b",
    r"(?:order|get|grab|buy|book|reserve|claim)\s+(?:yours|your\s+\w+(?:\s+\w+)?)\s+(?:now|today|here|online)",
    r"\*+\s*sale\b|\bsale\s*(?:!+|\*+)",
    r"pin\s+(?:it|this)\s+for\s+later|pin\s+it\s*!|(?:save|pin)\s+(?:it\s+)?(?:to|on)\s+pinterest|tweet\s+this",
    r"share\s+(?:(?:it|this)\s+)?(?:on|to|via)\s+(?:facebook|twitter|pinterest|instagram|whatsapp|x)\b",
    r"visit\s+(?:(?:https?://|www\.)[^\s()\[\]{}<>\"]+|[\w-]+\.(?:com|net|org|shop|store)\b[^\s()\[\]{}<>\"]*)",
    r"add\s+to\s+(?:your\s+)?(?:cart|basket|bag|wish\s*list|favou?rites)",
    r"(?:(?:up\s+to|an?\s+extra|extra|flat|get|save)\s+)?\d{1,3}(?:[.,]\d+)?\s*%\s*(?:off|discount|sale|savings?"
    rf"|cash\s*back){_AD_GRAPHIC}",
    r"save\s+(?:up\s+to\s+)?(?:[$€£]\s?\d[\d.,]*|\d{1,3}\s*%)",
    rf"free\s+(?:shipping|delivery|returns?){_AD_GRAPHIC}",
    r"free\s+(?:gift|trial|quote|estimate)s?\b",
    rf"(?:limited|special|exclusive|introductory)\s+(?:time\s+)?(?:offer|deal|discount|promotion|price)s?{_AD_GRAPHIC}",
    rf"limited\s+time(?:\s+only)?{_AD_GRAPHIC}",
    r"(?:today|this\s+week(?:end)?|this\s+month|one\s+day|online)\s+only",
    r"while\s+(?:supplies|stocks?)\s+lasts?",
    r"(?:don'?t|do\s+not)\s+miss\s+(?:out|this|it)",
    r"(?:best|great|hot|amazing|unbeatable|exclusive|top)\s+(?:deals?|prices?|offers?|bargains?)",
    r"deals?\s+of\s+the\s+(?:day|week)",
    # "Summer sale!" / "- Flash sale ends tonight", never "a crowd at the Black Friday sale"
    r"(?=[bcefhmsw])(?:^|(?<=[.!?|:•·,;\-–—]\s)|(?<=[|•·:]))"
    r"(?:flash|clearance|mega|huge|big|summer|winter|spring|holiday"
    rf"|black\s+friday|cyber\s+monday|end\s+of\s+season)\s+sale{_AD_GRAPHIC}"
    r"|(?:flash|clearance|mega|huge|big|summer|winter|spring|holiday|black\s+friday|cyber\s+monday)\s+sale"
    r"(?=\s*(?:!|ends|now|starts|today|on\s+now))",
    r"sale\s+(?:ends|price|now\s+on|starts)",
    r"(?:on\s+sale|in\s+stock|available)\s+(?:now|today)",
    r"(?:promo|coupon|discount|voucher|offer)\s+codes?",
    r"use\s+(?:the\s+)?(?:promo\s+)?code\s+(?-i:(?=[A-Z\d]*\d)[A-Z\d]{3,}|[A-Z]{3,}\d*)\b",  # a code: capitals, digits
    r"visit\s+(?:us\b|(?:our|my)\s+(?:store|shop|website|site|page|blog|booth|showroom|channel|etsy))",
    r"check\s+out\s+(?:our|my)\s+(?:store|shop|website|site|page|blog|channel|profile|etsy|other)",
    r"follow\s+us\s+(?:on|@|for)|like\s+us\s+on|subscribe\s+to\s+(?:our|my)\b",
    r"like\s+and\s+(?:share|subscribe)",
    r"more\s+info(?:rmation)?(?:\s+(?:at|here|on))?",
    r"money[\s-]back\s+guarantee",
    r"satisfaction\s+guaranteed",
    r"order\s+(?:yours|from\s+us)",
    r"sponsored\s+(?:post|content|ad)",
]
# Phrases an ad uses that a description uses too ("Visitors browse the collection", "Students learn more about
# robots", "tickets cost only $5 in 1950", "Blondie performing Call Me", "a new arrival at the zoo"): an ad only
# where no description shares their clause (``_Clause.weak_is_ad``), or, capitalised, where they end a clause that
# ran straight on from one ("A red dress Shop the look"; "Call Me", a song's title too, only with an ad's word, a
# number or a link after it: "Nice flat Call Me 555-1234", never "Blondie performing Call Me #music").
_WEAK_AD_TRIGGERS = [
    r"(?:shop|buy|browse)\s+(?:(?:the|this)\s+(?:look|collection|range|sale|print|style|item|outfit)|our\s+\w+)",
    r"limited\s+(?:stock|edition\s+prints?|availability|quantities)|(?:only\s+)?\d+\s+left\s+in\s+stock|low\s+stock",
    r"ships?\s+(?:free|worldwide|today|within|in\s+\d)",
    r"(?:lowest|cheapest|wholesale|factory|discount)\s+prices?",
    r"(?:only|just|now|from|was|for\s+only|price)\s*(?::\s*)?[$€£]\s?\d[\d.,]*",
    r"(?P<contact>(?:call|text|contact|email|e-mail|whatsapp|dm|message)\s+(?:us|me))\b",
    r"(?:learn|read|find\s+out|discover|see)\s+more(?=\s*(?:$|[.!:|,\-–—]|(?:at|here|on|about)\b))",
    r"hurry(?:\s+up)?(?:\s*!|(?=\s*$))",  # not "Hurry, the bus is leaving"
    r"(?:new|hot)\s+arrivals?",
    r"(?:buy|shop|order|book|pre-?order)\s+(?:it\s+)?online",
    r"(?:fast|express|next[\s-]day|same[\s-]day|worldwide|international)\s+shipping",
]
_TRIGGER_START = r"(?<![\w@#])(?=[\w*])"  # every trigger starts with a letter, a digit or "*"
_STRONG_AD_RE = compiled.compile(_TRIGGER_START + "(?:" + "|".join(_AD_TRIGGERS) + r")(?!\w)", re.IGNORECASE,
                                 "strong_ad")
_WEAK_AD_RE = re.compile(_TRIGGER_START + "(?:" + "|".join(_WEAK_AD_TRIGGERS) + r")(?!\w)", re.IGNORECASE)
# Either kind: a caption it does not match has no ad (the cheap test before the clause checks).
AD_TRIGGER_RE = compiled.compile(_TRIGGER_START + "(?:" + "|".join(_AD_TRIGGERS + _WEAK_AD_TRIGGERS) + r")(?!\w)",
                                 re.IGNORECASE, "ad_trigger")
# Where one clause of a caption ends and the next begins: separators with spaces around
# them, sentence ends, commas, colons, brackets, line breaks.
# A match never ends inside a run of spaces, and one that starts inside a run also starts at its first space:
# starting after a space at a space is never needed, and would make a long run of spaces cost O(n^2). So too for
# ``_TAG_DELIM_RE`` and ``HTML_TAG_RE``.
_NOT_AFTER_SPACE = r"(?!(?<=\s)\s)"
SEGMENT_DELIM_RE = re.compile(
    _NOT_AFTER_SPACE + r"(?=[\s|•·,;:()\[\]{}])"
    r"(?:\s+[-–—~]+\s+|\s*[|•·]\s*|(?<=[.!?])\s+|(?<=[.!?][\"”’'])\s+|[,;:](?=\s)\s*|\s*[()\[\]{}]\s*|\s*[\n\t]+\s*)"
)
# Words that may stand between a description and its ad tail: "Red dress with free shipping".
_CLOSING_PUNCT_RE = re.compile(r"[.!?…\"”’')\]]+")
_AD_CONNECTORS = frozenset("with and plus now at for get only just on & + - – — sale special offer hurry new hot free "
                           "save buy shop order deal deals today big mega".split())
# What may share a clause with a weak trigger in an ad: its connectors, and words of offers ("Lowest prices online").
_AD_FILLERS = _AD_CONNECTORS | frozenset("online here instantly in store stores us our all orders guaranteed ever".split())

WORD_RE = re.compile(r"[^\W\d_]+")


# Quoted text as each language writes it: signage ('a banner 'Free shipping'', «50% off», 「大特価」) is described, not
# advertised. Opening mark -> the marks that close it, on the same line. A straight single quote opens only at a
# word's start, before a letter or digit, and not an elision ('90s, '19, 'til, 'em, rock 'n' roll: '50% off' and
# '99 cents' are quotes); it closes after a non-space and spans no "|" (a listing's separator: "Vintage '90s ... |
# Free shipping | ... kids' collection" quotes nothing). A straight or curly single quote closes only where no letter
# follows, so an apostrophe ("dog's", "Tom’s") is neither.
_QUOTE_CLOSERS = {'"': '"', "“": "”", "„": "“”", "«": "»", "»": "«", "‚": "‘’", "「": "」", "『": "』", "‘": "’", "'": "'"}
_QUOTE_MARKS = frozenset(_QUOTE_CLOSERS)
_APOSTROPHE_LIKE = frozenset("'’")
_CLOSING_MARKS = frozenset("".join(_QUOTE_CLOSERS.values()))
# '90s, '19: a decade, a year; not a price or a share ('99 cents', '15 percent off', '50% off' open quotes)
_ELISIONS = re.compile(r"(?:til|tis|twas|em|cause|n|\d\ds)\b"
                       r"|\d\d\b(?!\s*(?:%|¢|€|\$|£|cents?\b|percent\b|pence\b|off\b))", re.IGNORECASE)


def quoted_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each quoted stretch, leftmost first, none overlapping: an opening mark and the first mark after
    it that closes it on its line. Each opener looks its closer up in a list (bisection), so a caption of thousands
    of unclosed quotes costs n log n, not a scan to the line's end per quote."""
    def word(k: int) -> bool:
        return 0 <= k < len(text) and (text[k].isalnum() or text[k] == "_")

    closers: dict[str, list[int]] = {}
    openers: list[int] = []
    lines: list[int] = []
    bars: list[int] = []
    for i, ch in enumerate(text):
        if ch == "\n":
            lines.append(i)
            continue
        if ch == "|":
            bars.append(i)
        if ch in _CLOSING_MARKS and not (ch in _APOSTROPHE_LIKE and word(i + 1)):
            closers.setdefault(ch, []).append(i)
        if ch in _QUOTE_MARKS and (ch != "'" or (not word(i - 1) and i + 1 < len(text) and text[i + 1].isalnum()
                                                 and not _ELISIONS.match(text, i + 1))):
            openers.append(i)
    spans: list[tuple[int, int]] = []
    done = 0
    for i in openers:
        if i < done:
            continue
        after = [found[k] for c in _QUOTE_CLOSERS[text[i]]
                 if (found := closers.get(c)) and (k := bisect.bisect_right(found, i)) < len(found)]
        if not after:
            continue
        close, line = min(after), bisect.bisect_right(lines, i)
        if (line < len(lines) and close > lines[line]) or (text[i] == "'" and (
                text[close - 1].isspace() or bisect.bisect_right(bars, i) < bisect.bisect_left(bars, close))):
            continue
        spans.append((i, close + 1))
        done = close + 1
    return spans


@functools.lru_cache(maxsize=8)
def _segment_delims(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The starts and the ends of the caption's ``SEGMENT_DELIM_RE`` delimiters, found once per caption (each
    trigger's clause is then a bisection, not a new scan)."""
    delims = [d.span() for d in SEGMENT_DELIM_RE.finditer(text) if d.end() > d.start()]
    return tuple(d[0] for d in delims), tuple(d[1] for d in delims)


def _clause_of(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) of the ``SEGMENT_DELIM_RE`` clause around ``text[start:end]``: it starts where the last
    delimiter ending by ``start`` ends, and ends where the first delimiter ending after ``end`` starts (a delimiter
    may begin inside the match: "Hurry, ...")."""
    delim_starts, delim_ends = _segment_delims(text)
    i = bisect.bisect_right(delim_ends, start) - 1
    j = bisect.bisect_right(delim_ends, end)
    return (delim_ends[i] if i >= 0 else 0), (max(delim_starts[j], end) if j < len(delim_ends) else len(text))


# A token of hashtags only ("#summer", "#sale#fun"): it describes nothing, and an ad's clause takes it with the ad
# ("Shop our collection #summer"), before the cleaner's hashtag removal would leave the ad alone.
_HASHTAGS_TOKEN_RE = re.compile(r"(?:#\w*[^\W\d_]\w*)+")


def _is_filler(token: str) -> bool:
    return (not WORD_RE.search(token) or token.lower() in _AD_FILLERS or URL_RE.fullmatch(token) is not None
            or (token[:1] == "#" and _HASHTAGS_TOKEN_RE.fullmatch(token) is not None))


def _fillers_only(text: str) -> bool:
    """Only ad fillers, numbers, prices, links, hashtags and punctuation: no word that describes anything."""
    return all(_is_filler(t) for t in _CLOSING_PUNCT_RE.sub(" ", text).split())


# The tokens ``_fillers_only`` reads: what whitespace and ``_CLOSING_PUNCT_RE`` leave.
_FILLER_TOKEN_RE = re.compile(r"[^\s.!?…\"”’')\]]+")
_ALNUM_RE = re.compile(r"[^\W_]")


class _Spans:
    """Spans the cleaner cuts after the ads (boilerplate, credits), merged, for the clauses of the weak triggers to
    read as fillers: "Royalty Free Stock Image Shop the look!" is the ad "Shop the look!" once the label is cut."""

    def __init__(self, spans: list[tuple[int, int]]):
        self.spans = _merged(spans)
        self.ends = [e for _, e in self.spans]

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        found = []
        for k in range(bisect.bisect_right(self.ends, start), len(self.spans)):
            if self.spans[k][0] >= end:
                break
            found.append(self.spans[k])
        return found

    def around(self, pos: int) -> tuple[int, int] | None:
        """The span ``pos`` falls strictly inside, if there is one."""
        k = bisect.bisect_right(self.ends, pos)
        return self.spans[k] if k < len(self.spans) and self.spans[k][0] < pos else None

    def covers(self, start: int, end: int) -> bool:
        k = bisect.bisect_left(self.ends, end)
        return k < len(self.spans) and self.spans[k][0] <= start


class _Clause:
    """One clause with every trigger that starts in it blanked (the other triggers of a clause are ad words
    too), read once for all the weak triggers in it, and only as far as needed: its first and its last word that
    is no filler, and the word a trigger cuts. The text before and after each trigger is then judged without
    reading the clause again for each trigger."""

    def __init__(self, text: str, start: int, end: int, triggers: list[re.Match], trigger_starts: list[int],
                 cut: _Spans | None = None):
        self.start, self.end, self.source = start, end, text
        blanks = [t.span() for t in
                  triggers[bisect.bisect_left(trigger_starts, start):bisect.bisect_left(trigger_starts, end)]]
        if cut is not None:  # the spans the cleaner cuts anyway that reach into the clause
            blanks = sorted(blanks + cut.overlapping(start, end))
        pieces, pos = [], start
        for t_start, t_end in blanks:
            lo, hi = max(t_start, pos), min(t_end, end)
            if hi > lo:
                pieces += [text[pos:lo], " " * (hi - lo)]
                pos = hi
        pieces.append(text[pos:end])
        self.text = "".join(pieces)
        self.reversed = self.text[::-1]
        self._first_bad_end: int | None = -1  # -1: not read yet
        self._last_bad_start: int | None = -1
        self._last_context_start: int | None = -1
        self._words: list[int] | None = None

    def first_bad_end(self) -> int | None:
        """The end of the clause's first word that is no filler (None: there is none)."""
        if self._first_bad_end == -1:
            self._first_bad_end = next((m.end() for m in _FILLER_TOKEN_RE.finditer(self.text)
                                        if not _is_filler(m.group())), None)
        return self._first_bad_end

    def last_bad_start(self) -> int | None:
        """The start of its last word that is no filler, read from the end (on the reversed clause)."""
        if self._last_bad_start == -1:
            n = len(self.text)
            self._last_bad_start = next((n - m.end() for m in _FILLER_TOKEN_RE.finditer(self.reversed)
                                         if not _is_filler(self.text[n - m.end():n - m.start()])), None)
        return self._last_bad_start

    def fillers_before(self, pos: int) -> bool:
        """``_fillers_only(self.text[:pos])``: its whole words, then the piece of the word ``pos`` cuts."""
        first_bad_end = self.first_bad_end()
        if first_bad_end is not None and first_bad_end <= pos:
            return False
        if _FILLER_TOKEN_RE.match(self.text, pos) is None:
            return True
        head = _FILLER_TOKEN_RE.match(self.reversed, len(self.text) - pos)  # the word's piece before pos, backwards
        return head is None or _is_filler(self.text[pos - len(head.group()):pos])

    def fillers_after(self, pos: int) -> bool:
        """``_fillers_only(self.text[pos:])``."""
        last_bad_start = self.last_bad_start()
        if last_bad_start is not None and last_bad_start >= pos:
            return False
        if pos == 0 or _FILLER_TOKEN_RE.match(self.reversed, len(self.text) - pos) is None:
            return True
        tail = _FILLER_TOKEN_RE.match(self.text, pos)
        return tail is None or _is_filler(tail.group())

    def last_word_starts_lower(self, pos: int) -> bool:
        """``self.text[:pos].split()[-1][:1].islower()``, False when there is no word."""
        if self._words is None:
            self._words = [m.start() for m in re.finditer(r"\S+", self.text)]
        k = bisect.bisect_left(self._words, pos) - 1
        return k >= 0 and self.text[self._words[k]].islower()

    def context_after(self, pos: int) -> bool:
        """Whether a word, a number or a link that is no hashtag follows ``pos`` in the clause as written (another
        trigger too): the clause is read once, for its last such token."""
        if self._last_context_start == -1:
            self._last_context_start = None
            for t in _FILLER_TOKEN_RE.finditer(self.source, self.start, self.end):
                if _ALNUM_RE.search(t.group()) and not _HASHTAGS_TOKEN_RE.fullmatch(t.group()):
                    self._last_context_start = t.start() - self.start
        return self._last_context_start is not None and self._last_context_start >= pos

    def weak_is_ad(self, text: str, m: re.Match) -> bool:
        """``_weak_is_ad``: the rest of the clause is ad fillers or other triggers ("New arrivals!", "- Learn more
        at www.x.com"), or, capitalised, the trigger ends a clause a lower-case description ran into ("A red
        dress Shop the look"); a "Call me" so only with something an ad says after it (``context_after``)."""
        if not self.fillers_after(m.end() - self.start):
            return False
        before = m.start() - self.start
        if self.fillers_before(before):
            return True
        return (text[m.start()].isupper() and self.last_word_starts_lower(before)
                and (m.start("contact") < 0 or self.context_after(m.end() - self.start)))


def _weak_ads(text: str, strong: list[re.Match], weak: list[re.Match], judged: list[re.Match] | None = None,
              cut: _Spans | None = None) -> list[re.Match]:
    """The weak triggers of ``judged`` (default: all of ``weak``) that are ads, judged clause by clause
    (``_Clause``): a caption of many triggers in one clause is read once, not once per trigger. ``cut``: spans that
    read as fillers too."""
    triggers = sorted(strong + weak, key=lambda t: t.start())
    trigger_starts = [t.start() for t in triggers]
    clauses: dict[tuple[int, int], _Clause] = {}
    kept = []
    for m in weak if judged is None else judged:
        bounds = _clause_of(text, m.start(), m.end())
        clause = clauses.get(bounds)
        if clause is None:
            clause = clauses[bounds] = _Clause(text, *bounds, triggers, trigger_starts, cut)
        if clause.weak_is_ad(text, m):
            kept.append(m)
    return kept


@functools.lru_cache(maxsize=8)
def _cut_after_ads(text: str) -> _Spans:
    """The boilerplate and credits of the caption, found once for the scorer's several readings of its ads."""
    return _Spans(boilerplate_spans(text) + credit_spans(text))


def _weak_ads_once_cut(text: str, strong: list[re.Match], weak: list[re.Match]) -> list[re.Match]:
    """The weak triggers that are ads as the caption stands, or once the boilerplate and credits the cleaner cuts
    after the ads are gone (read as fillers): "Royalty Free Stock Image Shop the look!". A trigger inside such a span
    goes with it."""
    ads = _weak_ads(text, strong, weak)
    if len(ads) == len(weak):
        return ads
    cut = _cut_after_ads(text)
    if not cut.spans:
        return ads
    found = {m.start() for m in ads}
    rest = [m for m in weak if m.start() not in found and not cut.covers(m.start(), m.end())]
    return sorted(ads + _weak_ads(text, strong, weak, rest, cut), key=lambda t: t.start())


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans in order, overlapping or touching ones joined into one."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def ad_triggers(text: str) -> list[re.Match]:
    """Trigger matches outside quotes ('a sign reading " 50% off "' describes a sign); weak ones only where
    they are ads (``_Clause.weak_is_ad``)."""
    triggers = list(_STRONG_AD_RE.finditer(text))
    weak = list(_WEAK_AD_RE.finditer(text))
    if weak:
        triggers += _weak_ads_once_cut(text, triggers, weak)
        triggers.sort(key=lambda t: t.start())
    if triggers and not _QUOTE_MARKS.isdisjoint(text):
        quoted = quoted_spans(text)  # in order, none overlapping
        quoted_starts = [s for s, _ in quoted]

        def in_quotes(pos: int) -> bool:
            k = bisect.bisect_right(quoted_starts, pos) - 1
            return k >= 0 and pos < quoted[k][1]

        triggers = [t for t in triggers if not in_quotes(t.start())]
    return triggers


def _is_description(word: str) -> bool:
    """A word that describes something, or closing punctuation: where the ad after a description starts."""
    return bool((WORD_RE.search(word) and word.lower() not in _AD_CONNECTORS) or _CLOSING_PUNCT_RE.fullmatch(word))


_NON_SPACE_RE = re.compile(r"\S")
_LABEL_DELIM_RE = re.compile(r"\s*[:|•·\-–—]")


# A verb whose object the trigger is, inside a clause that names what shows or offers it: "Shop window displaying
# 50% off signs", "a store offering free shipping" describe the window and the store. Never at the clause's start
# ("Offering free shipping worldwide." is the ad), nor the -s forms ("features", "shows", "offers" are as often nouns).
_OFFER_VERBS = frozenset("displaying showing offering advertising announcing promoting featuring".split())


def _offered(text: str, tokens: list[tuple[int, int]], token_starts: list[int], start: int, seg_start: int) -> bool:
    """Whether the trigger at ``start`` is the object of an offer verb (``_OFFER_VERBS``) with a word of its
    clause before that verb."""
    k = bisect.bisect_left(token_starts, start) - 1
    if k < 1 or text[tokens[k][1]:start].strip():
        return False  # no word right before the trigger (nothing but spaces between), or none before that
    verb = text[tokens[k][0]:tokens[k][1]]
    return verb.lower() in _OFFER_VERBS and tokens[k - 1][0] >= seg_start and not verb[0].isupper()


def ad_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every advertising clause, merged, left to right. A clause holding a trigger goes
    whole; if it starts with a description ("Red dress 50% off"), only the trigger on (and the
    connectors just before it) is the ad."""
    triggers = ad_triggers(text)
    if not triggers:
        return []
    delim_starts, delim_ends = _segment_delims(text)
    tokens = [t.span() for t in re.finditer(r"\S+", text)]
    token_starts = [t[0] for t in tokens]
    last_described: dict[int, int] = {}  # token index -> the last description token at or before it (-1: none)

    def last_description(k: int) -> int:
        """The last whole token at or before ``k`` that is a description word, each token read once per call."""
        passed = []
        while k >= 0 and k not in last_described:
            if _is_description(text[tokens[k][0]:tokens[k][1]]):
                last_described[k] = k
                break
            passed.append(k)
            k -= 1
        found = last_described[k] if k >= 0 else -1
        for i in passed:
            last_described[i] = found
        return found

    spans: list[tuple[int, int]] = []
    for m in triggers:
        i = bisect.bisect_right(delim_ends, m.start()) - 1
        seg_start = delim_ends[i] if i >= 0 else 0
        if _offered(text, tokens, token_starts, m.start(), seg_start):
            continue
        j = bisect.bisect_left(delim_starts, m.end())
        seg_end = delim_starts[j] if j < len(delim_starts) else len(text)
        start = seg_start
        # The last description word before the trigger among the 64 tokens before it in its clause, if there is one:
        # a description, then the ad: only the ad goes. The token before the trigger may run into it.
        k = bisect.bisect_left(token_starts, m.start()) - 1
        if k >= 0 and tokens[k][0] >= seg_start:
            word = text[tokens[k][0]:min(tokens[k][1], m.start())]
            if word.lower() in _OFFER_VERBS and (k == 0 or tokens[k - 1][0] < seg_start):
                pass  # the clause's own verb ("Offering free shipping worldwide"): the ad's first word
            elif _is_description(word):
                start = tokens[k][0] + len(word)
            else:
                d = last_description(k - 1)
                if d >= 0 and d > k - 64 and tokens[d][0] >= seg_start:
                    start = tokens[d][1]
        # Never from inside a label the cleaner cuts next: "EPS 10 only $5" goes whole, not "10 only $5" (leaving
        # "EPS", which no rule reads). Only where words stand between the description and the trigger: a label
        # reaching over the trigger itself goes with it, and reading every label costs a caption of thousands of
        # run-in triggers ("Sale!Sale!...") twice the time over the cleaner's rounds.
        if start > seg_start and _NON_SPACE_RE.search(text, start, m.start()) is not None:
            label = _cut_after_ads(text).around(start)
            if label is not None:
                start = max(label[0], seg_start)
        # Nor does it end inside one, whose label word the ad would take and leave its name ("New arrivals Photo:
        # Jane Doe" goes whole, not "New arrivals Photo"): such a label runs over a colon, a dash or a bar.
        if seg_end < len(text) and _LABEL_DELIM_RE.match(text, seg_end) is not None:
            label = _cut_after_ads(text).around(seg_end)
            if label is not None:
                seg_end = label[1]
        spans.append((start, seg_end))
    return _merged(spans)


# Every trigger holds one of these words (lower-cased ``WORD_RE`` words) or a % or currency sign: a
# caption with none of them skips the trigger regex (most captions, at a fraction of the cost).
_AD_KEYWORDS = frozenset(
    "click tap buy shop order book call subscribe register sign download bid donate act apply join enrol enroll "
    "reserve grab get claim save preorder pre browse bogo add cart basket bag wishlist shipping delivery returns "
    "ships free limited offer offers deal deals discount discounts promotion promotions only while miss price "
    "prices sale stock available code codes promo coupon voucher us me visit check follow like more info "
    "information guarantee guaranteed hurry arrival arrivals sponsored pin pinterest share tweet bargain bargains "
    "trial quote estimate gift gifts".split()
)
_CREDIT_KEYWORDS = frozenset(
    "photo photos photograph photographs image images picture pictures pic pics foto fotos video videos footage "
    "footages illustration illustrations artwork artworks graphic graphics credit credits source sources via "
    "copyright rights courtesy photographed photography photographer author artist editor fotografía fotografías "
    "fotografia fotografias fotografie bild bilder imagen imagem imagens immagine crédit crédits crédito créditos "
    "credito crediti quelle quellen bildquelle bildquellen fotoquelle fotoquellen fuente fuentes fonte bildnachweis "
    "fotonachweis".split()
) | {word.lower() for word in re.findall(r"[A-Za-z]{2,}", _WIRE_AGENCIES.replace("\\s", " "))}  # "Rocket - NASA"


def _lower_words(text: str, words: list[str] | None) -> set[str]:
    return {w.lower() for w in (WORD_RE.findall(text) if words is None else words)}


# Words that introduce text shown in the image: what follows them is the sign's or the shirt's text, even
# when it reads like an ad or a credit ("a sign saying Buy Now, Pay Later", "An old poster: Buy now, pay later!").
# The object needs its article: "Vintage poster: buy now" is a shop's listing.
_SHOWN_INTROS = ("says", "saying", "said", "reads", "reading", "read", "that says", "which says", "with the word",
                 "with the words", "with the text", "with the slogan", "labeled", "labelled", "titled", "entitled",
                 "printed", "written")
_SHOWN_DETERMINERS = ("a", "an", "the", "this", "that", "his", "her", "their", "its")
_SHOWN_SURFACES = ("sign", "poster", "banner", "billboard", "placard", "plaque", "notice", "t-shirt", "tshirt", "shirt",
                   "sticker", "label", "card", "screen")


def _phrases_re(phrases: tuple[str, ...], backwards: bool = False) -> str:
    """An alternation of ``phrases``, any whitespace between their words; ``backwards``: each spelt backwards."""
    if backwards:
        phrases = tuple(phrase[::-1] for phrase in phrases)
    return "|".join(r"\s+".join(map(re.escape, phrase.split())) for phrase in phrases)


SHOWN_TEXT_RE = re.compile(
    rf"(?:\b(?:{_phrases_re(_SHOWN_INTROS)}|(?:{_phrases_re(_SHOWN_DETERMINERS)})\s+(?:[^\W\d_][\w'-]*\s+){{0,3}}?"
    rf"(?:{_phrases_re(_SHOWN_SURFACES)})s?\s*:)\s*(?:[:,]\s*)?(?:[\"“'‘]\s*)?)$", re.IGNORECASE)
# The same pattern read backwards, matched on the reversed caption where the text starts: a search for
# ``SHOWN_TEXT_RE`` ending there would try every earlier position, once per span of a caption that has thousands.
_SHOWN_TEXT_BACKWARDS_RE = re.compile(
    rf"\s*(?:[\"“'‘]\s*)?(?:[:,]\s*)?(?:{_phrases_re(_SHOWN_INTROS, True)}"
    rf"|:\s*s?(?:{_phrases_re(_SHOWN_SURFACES, True)})"
    rf"(?:\s+[\w'-]*[^\W\d_]){{0,3}}\s+(?:{_phrases_re(_SHOWN_DETERMINERS, True)}))\b", re.IGNORECASE)


@functools.lru_cache(maxsize=8)
def _reversed(text: str) -> str:
    return text[::-1]


def is_shown_text(text: str, start: int) -> bool:
    """Whether ``text[start:]`` is introduced as text shown in the image ("a shirt reading Order online"): whether
    ``SHOWN_TEXT_RE`` matches a piece of ``text`` that ends at ``start``."""
    start = min(max(start, 0), len(text))
    return _SHOWN_TEXT_BACKWARDS_RE.match(_reversed(text), len(text) - start) is not None


# What ties a clause to its neighbours, and what ends a sentence (the cleaner cuts them with a removed piece).
CLAUSE_SEPARATORS = ",;:|•·–—-/\\~+&"
SENTENCE_ENDS = ".!?…"
_LABEL_BEFORE = CLAUSE_SEPARATORS + SENTENCE_ENDS + "([{:\"”"
_LABEL_AFTER = CLAUSE_SEPARATORS + SENTENCE_ENDS + ")]}"


def _label_spans(matches: Iterable[re.Match], text: str) -> list[tuple[int, int]]:
    """(start, end) of every match that stands as a label and is not text shown in the image. A label stands at
    the start or the end of a clause; one with words of its clause on both sides is part of the description ("The
    Source: a newspaper stand", "a copyright sign"). The characters around it are read from the match out, the
    next non-space one only past a space: the cleaner may read a caption of thousands of matches 32 times."""
    spans = []
    n = len(text)
    for m in matches:
        start, end = m.span()
        if end <= start:
            continue
        before = text[start - 1] if start else ""
        if before.isspace():
            before = _char_before(text, start)
        if before and before not in _LABEL_BEFORE:
            after = text[end] if end < n else ""
            if after.isspace():
                after = _char_after(text, end)
            if after and after not in _LABEL_AFTER:
                continue
        if not is_shown_text(text, start):
            spans.append((start, end))
    return spans


# A generic stock label ("stock photos", "royalty free images", "free photos") right after one of these words is
# the object of the clause, not a label: "Photographer uploading stock photos", "A dog that is not a stock photo".
_MEDIA_OBJECT_BEFORE_RE = re.compile(
    r"\b(?:a|an|the|his|her|my|our|your|their|its|this|that|these|those|some|many|more|no|of|at|for|with|in|on"
    r"|from|about|like|into|through|by|(?:upload|download|brows|licens|search|edit|shar|post|creat|select|print|view"
    r"|choos|us|tak|mak)(?:e|es|ed|ing)|(?:upload|download|sell|buy|shoot|search|edit|post|print|view|find)(?:s|ed|ing)?"
    r"|bought|sold|took|taken|made|found|chose|shot)\s+$", re.IGNORECASE)
# So is a wallpaper or vector label ("A laptop showing an HD wallpaper", "A designer drawing a vector illustration").
_GENERIC_MEDIA_LABEL_RE = re.compile(
    r"(?:stock|royalty|free|vector|wallpapers?|backgrounds?|desktop|mobile|phone|iphone|android|pc|full|ultra|[ufq]?hd"
    r"|hq|[2458]k|\d{3,4}p|high|widescreen|eps|ai|svg|pdf|psd|cdr|jpe?g|png)\b|\d{3,5}\s?[x×]", re.IGNORECASE)


def _media_object_before(text: str, start: int) -> bool:
    """Whether ``_MEDIA_OBJECT_BEFORE_RE`` matches a piece of ``text`` that ends at ``start``. Such a piece is one
    word and the spaces after it, so the search starts at that word, not at the caption's start (once per span)."""
    i = min(max(start, 0), len(text))
    while i > 0 and text[i - 1].isspace():
        i -= 1
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):  # \w
        i -= 1
    return _MEDIA_OBJECT_BEFORE_RE.search(text, i, start) is not None


# WordPress and page-builder shortcodes: "[caption id="attachment_12" align="alignleft"]", "[/caption]",
# "[gallery ids="1,2"]". Known names, or any lower-case name with a quoted attribute (and its closing tag); the text
# they wrap stays.
_SHORTCODE_ATTR = r"""\s+[\w-]+(?:\s*=\s*(?:"[^"\[\]\n]*"|'[^'\[\]\n]*'|[^\s"'\[\]=]+))?"""
SHORTCODE_RE = re.compile(
    r"\[/?(?:caption|wp_caption|gallery|embed|audio|video|playlist|(?:vc|et_pb|fusion)_\w+)"
    rf"(?:{_SHORTCODE_ATTR})*\s*/?\]"
    r"""|\[(?P<name>[a-z][\w-]*)(?:\s+[\w-]+\s*=\s*(?:"[^"\[\]\n]*"|'[^'\[\]\n]*'))+\s*/?\]"""
)
_SHORTCODE_CLOSE_RE = re.compile(r"\[/([a-z][\w-]*)\]")


def shortcode_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every ``SHORTCODE_RE`` tag, and of the closing tags of the other names opened."""
    if "[" not in text:
        return []
    codes = list(SHORTCODE_RE.finditer(text))
    opened = {m.group("name") for m in codes if m.group("name")}
    if opened:
        codes += [m for m in _SHORTCODE_CLOSE_RE.finditer(text) if m.group(1) in opened]
    return sorted(m.span() for m in codes)

# Keyword stuffing: short tags listed as a clause of their own ("wedding, bride, groom, wedding dress, love,
# couple"). A tag is one to three words, none of them a word that builds a phrase ("a", "with", "and", "is"), so an
# enumeration inside a description is none ("A table with apples, pears, and bananas"), and a list a description
# runs into by a comma is left alone ("A man wearing a hat, gloves, ..."). Six tags make a list, or four when a
# word comes back in two of them ("wedding dress, wedding photo").
# A middle dot between two letters is a letter of the word, Catalan's "l·l" ("col·lecció"), no separator.
_TAG_DELIM_RE = re.compile(_NOT_AFTER_SPACE + r"(?=[\s,;|•·\-–—/.!?…])"
                           r"\s*(?:(?P<weak>[,;])|[|•\n]|(?<![^\W\d_])·|·(?![^\W\d_])|(?<=\s)[-–—/]+(?=\s)"
                           r"|[.!?…]+(?=\s|$))\s*")
_TAG_WORD_RE = re.compile(r"[^\W_][\w'’&.·-]*")
_TAG_STOPWORDS = frozenset(
    "a an the and or nor but of in on at with without to from for by into onto over under near off up down out as"
    " across through along around behind between beside toward towards against about after before during inside"
    " outside past upon within below above beneath than then is are was were be been being am has have had do does"
    " did it its this that these those his her their our my your he she they we who whom which what while where when"
    " there here very not no".split())
MIN_TAGS = 6
MIN_TAGS_WITH_REPEAT = 4


def _tag_words(item: str) -> list[str] | None:
    """An item's words, lower-cased, if it is a tag; else None."""
    words = item.split()
    if not 1 <= len(words) <= 3:
        return None
    low = [w.lower() for w in words]
    if any(w in _TAG_STOPWORDS or not _TAG_WORD_RE.fullmatch(w) for w in low):
        return None
    return low


def tag_list_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every keyword list standing as a clause: bounded by the caption's ends, a separator ("|",
    " - ") or a sentence end, never by a comma that ties it to a description. Text shown in the image is none."""
    if sum(text.count(ch) for ch in ",;|•·") < MIN_TAGS_WITH_REPEAT - 1:
        return []
    # (start, end, a comma before it, a comma after it) of each item between delimiters
    items: list[tuple[int, int, bool, bool]] = []
    pos, weak_before = 0, False
    for d in _TAG_DELIM_RE.finditer(text):
        weak = d.group("weak") is not None
        items.append((pos, d.start(), weak_before, weak))
        pos, weak_before = d.end(), weak
    items.append((pos, len(text), weak_before, False))
    spans: list[tuple[int, int]] = []
    run: list[tuple[int, int, bool, bool]] = []
    run_words: list[list[str]] = []
    for item in items + [(len(text), len(text), False, False)]:  # an empty item ends the last run
        words = _tag_words(text[item[0]:item[1]])
        if words is not None:
            if run or not item[2]:  # a tag a comma ties to a description starts no list
                run.append(item)
                run_words.append(words)
            continue
        while run and run[-1][3]:  # nor may a comma tie the list's end to one
            run.pop()
            run_words.pop()
        seen: set[str] = set()
        repeat = False
        for ws in run_words:
            repeat = repeat or not seen.isdisjoint(ws)
            seen.update(ws)
        long_enough = len(run) >= MIN_TAGS or (repeat and len(run) >= MIN_TAGS_WITH_REPEAT)
        if long_enough and not is_shown_text(text, run[0][0]):
            spans.append((run[0][0], run[-1][1]))
        run, run_words = [], []
    return spans


def boilerplate_spans(text: str) -> list[tuple[int, int]]:
    """The ``BOILERPLATE_RE`` labels, shortcodes and keyword lists (``tag_list_spans``), merged: what the cleaner
    cuts, and so what the scorer penalises ("A sign that says Free Downloads" has none; nor has "a man uploading
    stock photos")."""
    spans = [(s, e) for s, e in _label_spans(BOILERPLATE_RE.finditer(text), text)
             if not (_GENERIC_MEDIA_LABEL_RE.match(text, s) and _media_object_before(text, s))]
    spans += shortcode_spans(text)
    spans += tag_list_spans(text)
    if len(spans) < 2:
        return spans
    return _merged(spans)


# ``CREDIT_RE`` in two parts: its credits that start with a name, and all the others.
_CREDIT_NAME_FIRST = rf"(?:{_NAME_AGENCY_PHOTO}|{_NAME_AGENCY})(?!\w)"
_CREDIT_OTHERS = _CREDIT_PATTERN.replace(f"|{_NAME_AGENCY_PHOTO}", "", 1).replace(f"|{_NAME_AGENCY}", "", 1)
assert len(_CREDIT_OTHERS) == len(_CREDIT_PATTERN) - len(_NAME_AGENCY_PHOTO) - len(_NAME_AGENCY) - 2


@functools.cache
def _credit_others_re() -> re.Pattern:
    return compiled.compile(_CREDIT_OTHERS, re.IGNORECASE, "credit_others")


def compile_credit_patterns() -> None:
    """Both credit patterns compiled now, not at a caption's first need: a warm run server does it before it forks."""
    credit_re(), _credit_others_re()


# Either needs an agency after a slash or a bar somewhere in the caption.
_SLASH_AGENCY_RE = re.compile(rf"[/|]\s*(?-i:{_AGENCIES})", re.IGNORECASE)
# A name that starts a word, and one that starts inside a dotted or hyphenated word ("J.R.Smith", "Jean-Luc").
_CREDIT_NAME_FIRST_RE = compiled.compile(rf"(?<![\w@.'’&-]){_CREDIT_NAME_FIRST}", re.IGNORECASE, "credit_name_first")
_CREDIT_NAME_INSIDE_RE = compiled.compile(rf"(?<=[.'’&-]){_CREDIT_NAME_FIRST}", re.IGNORECASE, "credit_name_inside")
_NAME_INSIDE_START_RE = re.compile(rf"(?<=[.'’&-])[{_UPPER}@]")
_STOP_WORD_RE = re.compile(rf"{_NAME_STOP}|The\b|{_LABEL_COLON}")
# A name's dotted or hyphenated word, as ``_NAME_WORD`` reads it: "J.R.R.Tolkien", "Jean-Luc", "O'Brien".
_NAME_CHAIN_RE = re.compile(rf"[{_UPPER}][\w'’&-]*(?:\.[A-Za-z][\w'’&-]*)*")


class _NameFirstCredits:
    """Where in a caption the credits that start with a name match, in order. A name that starts a word is found by
    a search; one that starts inside a word ("AP.AP.AP...") reads the rest of that word, so a search for it would
    read a word of thousands of starts O(n^2) times. But a capitalised word that is no stop word and not an
    initial ("J.") starts its name with everything up to the end of its word, so each start inside it reads the
    same name to the same end, and fares the same: each word is tried once, not once per start inside it."""

    def __init__(self, text: str):
        self.text = text
        self.word_end = 0  # the end of the last word read
        self.failed: set[int] = set()  # the ends of the words whose names matched nothing
        self.first: re.Match | None = _CREDIT_NAME_FIRST_RE.search(text)
        self.inside = self._inside(0)

    def _inside(self, pos: int) -> int | None:
        text = self.text
        for start in _NAME_INSIDE_START_RE.finditer(text, pos):
            q = start.start()
            if text[q] != "@" and text[q + 1:q + 2] != "." and _STOP_WORD_RE.match(text, q) is None:
                if q >= self.word_end:
                    self.word_end = _NAME_CHAIN_RE.match(text, q).end()
                if self.word_end in self.failed:
                    continue
                if _CREDIT_NAME_INSIDE_RE.match(text, q):
                    return q
                self.failed.add(self.word_end)
            elif _CREDIT_NAME_INSIDE_RE.match(text, q):
                return q
        return None

    def next(self, pos: int) -> int | None:
        """The first position from ``pos`` on where a credit that starts with a name matches."""
        if self.first is not None and self.first.start() < pos:
            self.first = _CREDIT_NAME_FIRST_RE.search(self.text, pos)
        if self.inside is not None and self.inside < pos:
            self.inside = self._inside(pos)
        starts = [p for p in (self.first and self.first.start(), self.inside) if p is not None]
        return min(starts) if starts else None


def _credit_matches(text: str) -> Iterator[re.Match]:
    """The matches of ``CREDIT_RE.finditer(text)``."""
    if _SLASH_AGENCY_RE.search(text) is None:  # no credit starts with a name
        return _credit_others_re().finditer(text)
    if len(_NAME_INSIDE_START_RE.findall(text)) <= 64:  # few starts inside words: reading their words is cheap
        return credit_re().finditer(text)
    return _credit_matches_by_parts(text)


def _credit_matches_by_parts(text: str) -> Iterator[re.Match]:
    """``CREDIT_RE.finditer(text)`` as the first of the matches of its credits that start with a name
    (``_NameFirstCredits``) and those of the others: a match of either part is CREDIT_RE's match there."""
    names = _NameFirstCredits(text)
    other, named = _credit_others_re().search(text), names.next(0)
    while other is not None or named is not None:
        match = credit_re().match(text, named) if named is not None and (other is None or named <= other.start()) \
            else other
        yield match
        pos = match.end()  # never empty
        if other is not None and other.start() < pos:
            other = _credit_others_re().search(text, pos)
        if named is not None and named < pos:
            named = names.next(pos)


def credit_spans(text: str) -> list[tuple[int, int]]:
    """The ``CREDIT_RE`` labels: what the cleaner cuts, and so what the scorer penalises ("A man in a shirt
    reading Photo by John Smith" has none). Bracketed notes are ``bracket_note_spans``. A byline in another language
    that is all the caption's words stays: "Photo par Jean Dupont" alone may be his portrait."""
    bounds: list[int] = []  # where the caption's letters start and end, read once where a byline needs them
    others = _credit_others_re()  # compiled already: the matches come from it or from the whole (``credit_re``)
    placed: list[re.Match | _Cut] = []  # credits read again from their agency: "in Paris | AFP"
    covered = 0  # the end of the last of them, which a later match may start inside

    def kept(m: re.Match) -> bool:
        nonlocal covered
        start = m.start()
        if start < covered:
            return False
        # a name-first credit (its agency group matched: the others' pattern has none) after a place's word, or whose
        # "name" is the caption's own noun
        if text[start - 1:start].isspace() and "agency" in m.re.groupindex:
            agency = m.start("agency")
            if agency < 0:
                agency = m.start("agency_photo")
            own = agency >= 0 and _names_the_captions_own(text, start, agency)
            place = agency >= 0 and text[start - 2:start - 1] in _PLACE_WORD_ENDS \
                and _PLACE_BEFORE_RE.search(text, max(0, start - 12), start) is not None
            if own or place:
                # the credit is the agency's own ("AFP PHOTO / JANE DOE" read whole), or the agency alone, unless
                # it may be a state's or a region's abbreviation ("Farmhouse in Lancaster/PA")
                again = others.match(text, agency)
                if again is None or again.end() < m.end():
                    if text[agency:m.end()] in _REGION_LIKE_AGENCIES and (place or not own):
                        return False
                    again = _Cut(agency, m.end())
                # from the separator that tied it to the place ("Kyiv/Reuters, 2022": not "Kyiv/, 2022")
                cut = agency
                while cut > start and text[cut - 1] in _NAME_AGENCY_GLUE:
                    cut -= 1
                placed.append(_Cut(cut, again.span()[1]))
                covered = again.span()[1]
                return False
        if m.start("byline") < 0:
            return True
        if not bounds:
            first, last = WORD_RE.search(text), WORD_RE.search(_reversed(text))
            bounds.extend((first.start() if first else len(text), len(text) - last.start() if last else 0))
        return bounds[0] < m.start("byline") or bounds[1] > m.end("byline")

    spans = _label_spans(filter(kept, _credit_matches(text)), text)
    return sorted(spans + _label_spans(placed, text)) if placed else spans


def _names_the_captions_own(text: str, start: int, agency: int) -> bool:
    """Whether the capitalised word of a name-first credit (``text[start:agency]``, up to its agency) goes on the
    caption's own sentence rather than starts a byline: one capitalised word after a lower-case one, before a bar or a
    spaced slash ("A man holding a red Frisbee | Shutterstock", "A dog catching two Frisbees / AFP"). A byline starts
    its clause ("A dog. Jane Doe | AFP"), names a person in two words or more ("Kids in the park Jane Doe | Reuters")
    or is tied to its agency ("Smith/AP")."""
    before = text[:start].rstrip()
    if not before or not before[-1].isalnum():  # the caption's start, a separator, a sentence's end, a comma
        return False
    glue = text[start:agency]
    name = glue.rstrip("".join(_NAME_AGENCY_GLUE))
    joint = glue[len(name):]
    if "|" not in joint and not joint.startswith(" "):  # "Smith/AP", "Jane Doe/Getty Images": a byline's slash
        return False
    return " " not in name.strip() and (before[-1].islower() or before[-1].isdigit())


# A name-first credit ("Jane Doe/AFP", "Jane Doe | AFP") right after one of these words names a place or a person
# shown ("Protesters march in Paris | AFP", "A portrait of Jane Doe/AFP"): only its agency is the credit.
_PLACE_WORDS = ("in", "at", "on", "of", "from", "near", "to", "over", "into", "across", "around", "outside", "inside",
                "through", "the",
                # or names a side: "USA vs Netherlands | AP Photo" ("and", "with" also join two photographers'
                # names in one byline: "Jane Doe and John Smith/Reuters")
                "vs", "versus", "against", "between")
_PLACE_BEFORE_RE = re.compile(rf"\b(?:{'|'.join(_PLACE_WORDS)})\s+$", re.IGNORECASE)
# their last letters, either case: a cheap look first, at every match
_PLACE_WORD_ENDS = frozenset(word[-1] for word in _PLACE_WORDS) | frozenset(word[-1].upper() for word in _PLACE_WORDS)
_REGION_LIKE_AGENCIES = frozenset({"AP", "PA", "Anadolu"})  # as ``_WIRE_AGENCIES`` takes them only with their word
_NAME_AGENCY_GLUE = frozenset(" \t/|\\-–—·•:")  # between a name-first credit's name and its agency


class _Cut(NamedTuple):
    """A span to cut that is not a whole match (read by ``_label_spans`` as a match is)."""
    start: int
    end: int

    def span(self) -> tuple[int, int]:
        return self.start, self.end


def has_boilerplate(text: str) -> bool:
    return bool(boilerplate_spans(text))


def has_ad(text: str, words: list[str] | None = None) -> bool:
    """An ad clause that is not text shown in the image. ``words``: the caption's ``WORD_RE`` matches, if the
    caller already has them."""
    if not any(ch in text for ch in "%$€£") and _AD_KEYWORDS.isdisjoint(_lower_words(text, words)):
        return False
    if AD_TRIGGER_RE.search(text) is None:
        return False
    return any(not is_shown_text(text, start) for start, _ in ad_spans(text))


# --- bracketed links, sources and credits ------------------------------------------
BRACKET_GROUP_RE = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]|\{([^{}]*)\}")
# A label beyond English needs its colon or dash: "(Quelle: dpa)" is a note, "(Fonte Gaia)", "(Bild Zeitung)" and
# "(Fuente Cibeles)" are names.
_NOTE_LABEL_RE = re.compile(
    r"(?:image\s+|photo\s+)?(?:sources?|via|credits?|photo(?:\s+credits?)?"
    r"|image|picture|pic|foto|courtesy(?:\s+of)?"
    r"|from|copyright|©|see|more(?:\s+(?:at|info|here))?|link|url|website|read\s+more(?:\s+at)?"
    r"|full\s+(?:story|article)(?:\s+at)?|photographer)\b\s*(?:by\s+|:\s*|-\s+)?"
    rf"|(?:image\s+|photo\s+)?(?:{_SOURCE_WORD}|{_CREDIT_WORD}(?:\s+{_MEDIA_LABEL})?|{_FOREIGN_MEDIA_LABEL})\b"
    r"\s*(?::\s*|-\s+)"
    r"|©\s*",
    re.IGNORECASE,
)
_BARE_NOTE_LABELS = ("source", "sources", "via", "credit", "credits", "photo credit", "photo credits")
_CREDITED_FULL_RE = compiled.compile(rf"(?:{_CREDITED})(?:\s*\d{{4}})?\.?", re.IGNORECASE, "credited")


def _is_note(content: str) -> bool:
    text = content.strip()
    if not text:
        return False
    had_url = URL_RE.search(text) is not None
    text = URL_RE.sub(" ", text).strip()
    label = _NOTE_LABEL_RE.match(text)
    rest = text[label.end():] if label else text
    rest = rest.strip(" :;,.-–—/|")
    if not rest:
        if had_url:
            return True
        return bool(label) and label.group(0).strip(" :-").lower() in _BARE_NOTE_LABELS
    if had_url or label:
        return _CREDITED_FULL_RE.fullmatch(rest) is not None
    return False


def bracket_note_spans(text: str) -> list[tuple[int, int]]:
    """Bracketed groups that hold only a link, a source or a credit: "(source: http://x.y/z)",
    "[via Reuters]", "(Photo: Jane Doe/AP)". The span includes the brackets."""
    if not any(ch in text for ch in "([{"):
        return []
    return [m.span() for m in BRACKET_GROUP_RE.finditer(text)
            if _is_note(next(g for g in m.groups() if g is not None))]


def has_credit(text: str, words: list[str] | None = None) -> bool:
    """A credit the cleaner would cut: a ``credit_spans`` label or a bracketed note (a bare "[www.x.com]" is one,
    so the notes skip the keyword test). ``words``: the caption's ``WORD_RE`` matches, if the caller has them."""
    if bracket_note_spans(text):
        return True
    if not any(ch in text for ch in "©/|(") and _CREDIT_KEYWORDS.isdisjoint(_lower_words(text, words)):
        return False
    return bool(credit_spans(text))


# --- invisible characters and whitespace --------------------------------------------
# ANSI / VT100 escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), 2-char escapes, 8-bit CSI.
ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|\x9b[0-?]*[ -/]*[@-~]")
# C0 controls but tab, LF, VT, FF, CR (those are whitespace); DEL and C1 but NEL; soft hyphen; zero-width space,
# word joiner and invisible operators; BOM / ZWNBSP; Mongolian vowel separator; bidi embeddings, overrides
# (U+202A-E) and isolates (U+2066-9); interlinear annotation marks. Between two letters or marks of Thai, Lao,
# Myanmar or Khmer, whose words have no spaces, the zero-width space is the word separator and stays.
_ZWSP_SCRIPTS = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff"
CONTROL_RE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u180e\u2060-\u2064\ufeff"
    "\u202a-\u202e\u2066-\u2069\ufff9-\ufffb]"
    f"|(?<![{_ZWSP_SCRIPTS}])\u200b|\u200b(?![{_ZWSP_SCRIPTS}])"
)
# Zero-width (non-)joiners are needed inside emoji sequences and some scripts; next to ASCII, or at
# either end, they are noise.
ZW_JOINER_RE = re.compile(r"(?:^|(?<=[\x00-\x7f]))[\u200c\u200d]+|[\u200c\u200d]+(?=[\x00-\x7f]|$)")
WHITESPACE_RE = re.compile(r"\s+")
# Any whitespace but a plain space (an ideographic space is fine too), two or more spaces, or
# whitespace at either end.
IRREGULAR_WHITESPACE_RE = re.compile(r"[^\S \u3000]|  |^\s|\s$")


def has_control_chars(text: str) -> bool:
    if text.isprintable():
        return False
    return bool(ANSI_RE.search(text) or CONTROL_RE.search(text) or ZW_JOINER_RE.search(text))


def remove_control_chars(text: str) -> str:
    """ANSI escapes, control characters (NUL too), bidi overrides and stray zero-width characters, gone."""
    if text.isprintable():
        return text
    return ZW_JOINER_RE.sub("", CONTROL_RE.sub("", ANSI_RE.sub("", text)))


def has_irregular_whitespace(text: str) -> bool:
    return IRREGULAR_WHITESPACE_RE.search(text) is not None


def normalize_whitespace(text: str) -> str:
    """Every whitespace run becomes one space (a lone ideographic space stays); ends trimmed."""
    return WHITESPACE_RE.sub(lambda m: m.group(0) if m.group(0) == "\u3000" else " ", text).strip()


# --- text a wrong decode garbled ------------------------------------------------------
# U+FFFD is what a decoder leaves where bytes were not valid (the reader's "invalid utf-8 replaced":
# a Latin-1 "café" reads "caf\ufffd"): the characters are lost. Mojibake is UTF-8 read in another
# codec ("cafÃ©", "donâ€™t"): ftfy's detector, which spares real accented, Cyrillic, Greek or CJK text.
REPLACEMENT_CHAR = "\ufffd"


def has_bad_encoding(text: str) -> bool:
    """A replacement character, or mojibake ftfy recognises. ASCII text can hold neither, and skips
    ftfy's large pattern (imported on first need, as ``scoring.clip`` does)."""
    if text.isascii():
        return False
    if REPLACEMENT_CHAR in text:
        return True
    from ftfy.badness import is_bad

    return is_bad(text)


# --- quotes around the whole caption ---------------------------------------------------
_QUOTE_PAIRS = {'"': '"', "“": "”", "„": "“", "«": "»", "»": "«", "‘": "’", "'": "'", "‚": "‘", "「": "」",
                "『": "』", "”": "”"}
_WRAPPED_RE = re.compile(r"^\s*([\"“„«»‘'‚「『”])(.+)([\"”“»«’'」』])\s*([.!?]*)\s*$", re.DOTALL)
_LOOSE_APOSTROPHE_RE = re.compile(r"(?<!\w)['‘’]|['‘’](?!\w)")


def _quotes_pair_up(inner: str) -> bool:
    """Straight double quotes inside ``inner`` open (at a word start) and close (at a word end) in turn:
    'says " stop "' pairs up; 'Hi" and "bye' (two quoted parts) does not."""
    opening = True
    for i, ch in enumerate(inner):
        if ch != '"':
            continue
        before = inner[i - 1] if i else " "
        after = inner[i + 1] if i + 1 < len(inner) else " "
        if opening and not (before.isspace() or before in "([{"):
            return False
        if not opening and not (after.isspace() or after in ".,;:!?)]}"):
            return False
        opening = not opening
    return opening


def unwrap_quotes(text: str) -> str:
    """The caption without a quote pair around all of it (what ``&quot;...&quot;`` leaves). Quotes inside
    it stay, so do two quoted parts ('"Hi" and "bye"'); an apostrophe inside a word is no quote."""
    m = _WRAPPED_RE.match(text)
    if not m:
        return text
    opening, inner, closing, tail = m.groups()
    if _QUOTE_PAIRS.get(opening) != closing:
        return text
    if opening in "'‘‚":
        if _LOOSE_APOSTROPHE_RE.search(inner):
            return text
    elif opening == closing == '"':
        if not _quotes_pair_up(inner):
            return text
    elif opening in inner or closing in inner:
        return text
    if not any(ch.isalpha() for ch in inner):
        return text
    return inner.strip() + tail


def is_wrapped_in_quotes(text: str) -> bool:
    return unwrap_quotes(text) != text


# --- hashtags, entities, repeats, case ---------------------------------------------------
# A hashtag must hold a letter: "#1 fan" is a rank, and "&#39;" an entity. Its marks and zero-width (non-)joiners
# are part of it ("#เที่ยวไทย", "#سَفَر", Persian "#کتاب‌ها"): a ``\w`` run stopped at the first and left the rest.
# Possessive: up to its first letter (marks, digits, joiners are none), then all it holds; a tag that fails to join a
# run is not tried again at every letter (a 10,000-character Thai tag took a second).
_TAG_BODY = rf"[\d_{_MARKS}\u200c\u200d]*+[^\W\d_][{_WORD_OR_MARK}\u200c\u200d]*+"
_TAG = rf"#{_TAG_BODY}"
HASHTAG_RE = compiled.compile(rf"(?<![{_WORD_OR_MARK}#&])#({_TAG_BODY})", 0, "hashtag")
# Hashtags to drop: a run of two or more anywhere, or a single one ending the caption.
# Group 1 is the word before (to tell "on the #beach" from "sunset #nofilter"),
# group 3 the sentence mark after it, which is kept. Chinese, Japanese and Arabic punctuation takes no space after it
# ("海边的日落，#旅行 #大海"): a run may start right after one, and the word before stops short of it.
_TIGHT_PUNCT = "，、；：。！？،؛"
_DROPPED_HASHTAGS_RE = compiled.compile(
    rf"(?:(?:(?<=\s)|^)([^\s#](?:(?![{_TIGHT_PUNCT}]#)\S)*\s+)?|(?<=[{_TIGHT_PUNCT}]))"
    rf"({_TAG}(?:[\s,]+{_TAG})+|{_TAG}(?=[.!?]?\s*$))([.!?]?)", 0, "dropped_hashtags"
)
# A dropped run after one of these words keeps its first word: "a walk on the #beach". Lower case, or capitalised
# opening a sentence ("At #Disneyland"): "Gate A #airport", "Portland, OR #pnw" end on a name, the tag is dropped.
INLINE_HASHTAG_PRECEDERS = frozenset(
    "a an the my our your his her their its this that these those on in at of for with to"
    " from by and or into onto near over under".split()
)
# A single capitalised tag ending the caption after one of these verbs is its object, a name: "A poster supporting
# #BlackLivesMatter", "Crowds celebrate #Eid" keep the word. Only verbs whose object such a tag is: after most verbs
# it is a topic tag ("A puppy sleeping #Cute", "A man hiking #Nature") and is dropped.
_TAG_OBJECT_VERB_RE = re.compile(
    r"(?:celebrat|support|mark|honou?r|protest|commemorat|promot)(?:e|es|s|ed|ing)?", re.IGNORECASE)

# Markup tags, known names only, attributes as name=value: "a < b" and "<i and j>" are no tags.
_INLINE_TAGS = frozenset("a abbr b big cite code del dfn em font i ins kbd mark q s samp small span strike strong sub "
                         "sup time tt u var".split())
_BLOCK_TAGS = ("address|area|article|aside|blockquote|body|br|caption|center|dd|div|dl|dt|figcaption|figure|footer"
               "|h[1-6]|head|header|hr|html|img|li|link|main|meta|nav|ol|p|pre|section|table|tbody|td|tfoot|th|thead"
               "|title|tr|ul|wbr")
HTML_TAG_RE = re.compile(
    rf"(?!(?<=[ ])[ ])([ ]*)</?({'|'.join(sorted(_INLINE_TAGS))}|{_BLOCK_TAGS})"
    r"""(?:\s+[\w:-]+\s*=\s*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'<>=]+))*\s*/?>([ ]*)""",
    re.IGNORECASE,
)
ENTITY_RE = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]{1,31}|#\d{1,7}|#[xX][0-9a-fA-F]{1,6});")


# A word with its letters' marks: ``WORD_RE`` stops at a mark, so "लड़की" (girl) is two words, "लड" and "क"; here it
# is one. Only a mark after a letter counts as one. Where a caption holds no mark, its matches are ``WORD_RE``'s.
_MARKED_WORD = rf"(?:[^\W\d_][{_MARKS}]*)+"
MARKED_WORD_RE = re.compile(_MARKED_WORD)
# Alphabetic n-grams (1-4 words, each with its marks) repeated back to back, case-insensitively. A word neither starts
# nor ends next to a word character or a mark: "\b" would stop it at a vowel sign, and the fragments between marks
# looked like repeats ("बाल लाल", hair red, became "बालाल"). Without marks, these edges are "\b"'s.
# The lazy {0,3}? tries the shortest unit first, so "a a a a" is one run of "a".
REPEAT_RE = compiled.compile(
    rf"(?<![\w{_MARKS}])({_MARKED_WORD}(?:\s+{_MARKED_WORD}){{0,3}}?)(?:\s+\1(?![\w{_MARKS}]))+", re.IGNORECASE,
    "repeat")
# Doubled words that are usually meant ("she had had enough", "very very tall"); a
# capitalised double is a name ("Bora Bora", "New York New York") and is kept too.
# and English words made of a doubled word that is no word of its own ("mahi mahi", "pom pom", "choo choo train";
# not "can can", whose doubled "can" is as often a typo)
ALLOWED_DOUBLES = frozenset({"had", "that", "very", "bye", "ha", "no", "so", "mahi", "bora", "walla", "wagga", "pago",
                             "baden", "pom", "cha", "choo", "knock", "dik", "ylang", "tom"})

# Scripts written without spaces between words (CJK ideographs, kana, Thai, Lao,
# Khmer, Myanmar): whitespace tokens undercount their words.
NO_SPACE_SCRIPT_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]"
)

# Cheap necessary conditions, checked first so clean captions skip the full patterns.
_URL_HINT_RE = re.compile(r"://|www\.|\.(?:com|net|org|info|biz|io|ly|co\.uk)\b", re.IGNORECASE)
_FILENAME_HINT_RE = re.compile(rf"\d|\.{_IMAGE_EXT}\b", re.IGNORECASE)


def unescape_html(text: str) -> str:
    """Decode ``&amp;``-style entities until stable (alt text is often escaped twice); only well-formed
    ones with a ``;``: html.unescape on the whole string would turn "Terms &notice" into "Terms ¬ice"."""
    while True:
        decoded = ENTITY_RE.sub(lambda m: html.unescape(m.group(0)), text)
        if decoded == text:
            return text
        text = decoded


def has_html_entity(text: str) -> bool:
    """An undecoded entity, or a markup tag (what a decoded "&lt;br&gt;" leaves)."""
    return (ENTITY_RE.search(text) is not None and unescape_html(text) != text) or has_html_tag(text)


def has_html_tag(text: str) -> bool:
    return "<" in text and HTML_TAG_RE.search(text) is not None


def _drop_tag(match: re.Match) -> str:
    spaced = match.group(1) or match.group(3)
    return "" if match.group(2).lower() in _INLINE_TAGS and not spaced else " "


def remove_html_tags(text: str) -> str:
    """Markup tags gone: a block tag ("<br>", "<p>") leaves a space, an inline one ("<b>", "<sub>") nothing, so
    "H<sub>2</sub>O" stays one word. A "<" that opens no tag ("a < b", "<3") stays."""
    if not has_html_tag(text):
        return text
    return HTML_TAG_RE.sub(_drop_tag, text).strip(" ")


# One word said twice is grammar in many languages, not noise: reduplication makes plurals, variety or intensity
# (Hindi "अलग अलग", various; Turkish "renk renk", colourful; Indonesian "anak anak", children; Chinese, Thai, Tamil,
# Russian "еле еле"). English doubles a word by mistake ("a dog dog"), its meant doubles being ``ALLOWED_DOUBLES``.
# So two copies of one word are a repeat only where the caption reads as English: the word is in Latin letters and
# the caption holds one of these English function words. Three copies, or a doubled phrase, are a repeat anywhere.
_ENGLISH_FUNCTION_WORD_RE = re.compile(
    r"(?<![^\W\d_])(?:the|a|an|and|of|with|is|are|was|were|on|in|at|to|for|from|by|near|over|under|into|onto|while"
    r"|his|her|their|its|it|this|that|these|those)(?![^\W\d_])",
    re.IGNORECASE)
_LATIN_WORD_RE = re.compile(rf"(?:(?=[A-Za-z\u00c0-\u024f\u1e00-\u1eff])[^\W\d_][{_MARKS}]*)+")


def _reads_as_english(text: str) -> bool:
    return _ENGLISH_FUNCTION_WORD_RE.search(text) is not None


def _collapse_one(match: re.Match, english: bool = True) -> str:
    phrase, whole = match.group(1), match.group(0)
    n_words = len(WHITESPACE_RE.split(phrase))
    copies = len(WHITESPACE_RE.split(whole)) // n_words
    if copies == 2:
        second = whole[len(phrase):].lstrip()
        if phrase.lower() in ALLOWED_DOUBLES or (phrase[0].isupper() and second[0].isupper()):
            return whole
        if n_words == 1 and not (english and _LATIN_WORD_RE.fullmatch(phrase)):
            return whole
    return phrase


def collapse_repeats(text: str) -> str:
    """Keep one copy of each back-to-back repeated word or short phrase, until none is left; two copies of one word
    only in English (``_ENGLISH_FUNCTION_WORD_RE``): elsewhere they are reduplication."""
    english = _reads_as_english(text)
    while True:
        collapsed = REPEAT_RE.sub(lambda m: _collapse_one(m, english), text)
        if collapsed == text:
            return text
        text = collapsed


def has_repeat_run(text: str, words: list[str] | None = None) -> bool:
    """``words``: the caption's ``MARKED_WORD_RE`` matches (``WORD_RE``'s for ASCII), if the caller has them. Every
    repeat REPEAT_RE can find shows up as equal words 1-4 apart there, much cheaper to test than the regex itself
    (not among ``WORD_RE``'s fragments of marked words: a phrase of four may be eight of them)."""
    if words is None:
        words = WORD_RE.findall(text) if text.isascii() else MARKED_WORD_RE.findall(text)
    low = [w.lower() for w in words]
    if len(set(low)) == len(low):
        return False
    if not any(a == b for n in range(1, 5) for a, b in zip(low, low[n:])):
        return False
    return collapse_repeats(text) != text


def has_url(text: str) -> bool:
    return _URL_HINT_RE.search(text) is not None and bool(url_spans(text))


def has_filename(text: str) -> bool:
    return _FILENAME_HINT_RE.search(text) is not None and FILENAME_RE.search(text) is not None


_TIED_AFTER_TAGS = tuple(",;:")


def _drop_hashtags(match: re.Match) -> str:
    before, tags, mark = match.group(1) or "", match.group(2), match.group(3)
    single = HASHTAG_RE.fullmatch(tags)
    word, lead = before.strip(), match.string[:match.start()].rstrip()
    opens_sentence = not lead or lead.endswith((".", "!", "?"))
    preceder = word in INLINE_HASHTAG_PRECEDERS or (
        opens_sentence and word == word.capitalize() and word.lower() in INLINE_HASHTAG_PRECEDERS)
    if preceder or (single and tags[1].isupper() and _TAG_OBJECT_VERB_RE.fullmatch(word)):
        return before + HASHTAG_RE.search(tags).group(1) + mark
    before = before.rstrip()
    if before.endswith((".", "!", "?")):
        mark = ""
    # the caption's own punctuation after the run stays tied to the word before it ("Paris #a #b, 2019")
    return f"{before}{mark}" if match.string[match.end():match.end() + 1] in _TIED_AFTER_TAGS else f"{before}{mark} "


def has_droppable_hashtags(text: str) -> bool:
    """A run of two or more hashtags, or one ending the caption: what ``remove_hashtags`` takes out."""
    return "#" in text and _DROPPED_HASHTAGS_RE.search(text) is not None


def remove_hashtags(text: str) -> str:
    """Drop hashtag runs and trailing tags; keep the word of a tag used inside a sentence."""
    return HASHTAG_RE.sub(r"\1", _DROPPED_HASHTAGS_RE.sub(_drop_hashtags, text))


# Cherokee is written in its capital letters (Unicode's small ones are for rare styles): it is a script without
# case here, never shouting.
_CHEROKEE_RE = re.compile("[\u13a0-\u13ff\uab70-\uabbf]")
MIN_CASED_SHARE = 0.8


def is_all_caps(text: str) -> bool:
    """Shouting: at least 6 cased letters, none of them lower case, and at least ``MIN_CASED_SHARE`` of the letters.
    A caption in a script without case (Chinese, Arabic, Cherokee) with a Latin acronym or brand in it ("IKEA 客厅里的
    LED 台灯", 7 of 13) is not shouting, and lowering the acronyms would only damage it."""
    cased = sum(1 for ch in text if ch.isupper())
    if cased < 6 or any(ch.islower() for ch in text):
        return False
    if text.isascii():
        return True
    cased -= len(_CHEROKEE_RE.findall(text))
    return cased >= 6 and cased >= MIN_CASED_SHARE * sum(1 for ch in text if ch.isalpha())


def noise_free_words(text: str) -> list[str]:
    """The caption's whitespace tokens once links, file names, boilerplate, credits, bracketed
    notes, ads and hashtags are taken out: the words that can describe the image. An ad that is text shown in the
    image stays, as the cleaner keeps it ("A poster: Now $5 #vintage" keeps four words)."""
    for start, end in reversed(bracket_note_spans(text)):
        text = text[:start] + " " + text[end:]
    for start, end in reversed([(s, e) for s, e in ad_spans(text) if not is_shown_text(text, s)]):
        text = text[:start] + " " + text[end:]
    for start, end in reversed(labelled_url_spans(text)):
        text = text[:start] + " " + text[end:]
    text = FILENAME_RE.sub(" ", text)
    for spans in (credit_spans, boilerplate_spans):  # the cleaner's order, each on what the last one left
        for start, end in reversed(spans(text)):
            text = text[:start] + " " + text[end:]
    return HASHTAG_RE.sub(" ", text).split()


# The work kept per caption text (not the compiled patterns, which every caption shares): a benchmark clears it so
# that each timed call pays what a new caption pays. test_patterns checks that every cache taking a text is here.
CAPTION_CACHES = (_segment_delims, _cut_after_ads, _reversed)


def clear_caption_caches() -> None:
    """Forget every caption's cached work (``CAPTION_CACHES``): a caption read again costs what a new one does."""
    for cache in CAPTION_CACHES:
        cache.cache_clear()


# --- links and file names used as labels, not in a sentence: what the cleaner cuts and the scorer reads

_CLAUSE_END_CHARS = set(CLAUSE_SEPARATORS) | set(SENTENCE_ENDS)
_TRAILING_PUNCTUATION = ",;:.!?"
_NEXT_WORDS = 120  # characters after a link read to tell whether its clause goes on describing
_POSSESSIVE = ("'s", "’s")


def _unless_in_a_sentence(matches, text: str) -> list[tuple[int, int]]:
    """The spans of links or file names to cut: all but those inside a sentence (a word before, and the clause
    going on with words that describe: "A website https://x.com is shown on a laptop") and text shown in the
    image. What follows in the clause may be more noise ("#dog", "© Jane Doe", "stock photo", "(2019)", "@user"):
    then the link is still a label. A comma the link's pattern took in ("https://x.com/a, with a ball") is
    punctuation, not the link's."""
    spans = []
    for m in matches:
        start, end = m.span()
        core = end
        while core > start and text[core - 1] in _TRAILING_PUNCTUATION:
            core -= 1
        if is_shown_text(text, start):
            continue
        before = text[:start].rstrip()
        after = text[core:]
        # "example.com's homepage" (the link's pattern may take the "'s" in): a name in the sentence
        if text[core - 2:core] in _POSSESSIVE or (after[:2] in _POSSESSIVE and not after[2:3].isalnum()):
            continue
        starts_clause = not before or before[-1] in _CLAUSE_END_CHARS or before[-1] in "([{\"“"
        rest = after[:_NEXT_WORDS]  # what follows decides; a bound keeps a caption of many matches linear
        rest = rest[:next((i for i, ch in enumerate(rest) if ch in _CLAUSE_END_CHARS), len(rest))].strip()
        described = bool(rest) and rest[0].isalpha() and rest[0].islower() and bool(noise_free_words(rest))
        if starts_clause or not described:
            spans.append((start, end))
    return spans


def _filenames_outside_links(text: str) -> list[re.Match]:
    """``FILENAME_RE`` matches but those inside a link (a file name in its path): the link is cut or kept whole."""
    links = [m.span() for m in URL_RE.finditer(text)] if "." in text else []
    return [m for m in FILENAME_RE.finditer(text) if m.end() > m.start()
            and not any(a <= m.start() and m.end() <= b for a, b in links)]


def url_cuts(text: str) -> list[tuple[int, int]]:
    """The links the cleaner cuts, and the only ones the scorer's ``url`` rule reads: a link used in a sentence
    ("A website https://x.com is shown on a laptop") is the caption's."""
    return _unless_in_a_sentence(labelled_url_matches(text), text)


def filename_cuts(text: str) -> list[tuple[int, int]]:
    """The file names the cleaner cuts ("A t-shirt printed with IMG_1234 on the front" keeps its), as ``url_cuts``."""
    return _unless_in_a_sentence(_filenames_outside_links(text), text)
