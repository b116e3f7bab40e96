"""AITQE (arXiv 2410.16166, checkpoint HymanH/AITQE) as a scorer-rewriter backend.

AITQE answers with a dictionary-like text: the rewritten caption ("Recaption"), an overall score on
1-10, then sub-scores with explanations. Its reference inference stops at the ``<Overall>`` marker, so
the usual reply is cut off mid-value (``{"Recaption": "A man ...", "Overall Score": "2<Overall>``) and
nothing guarantees valid JSON: ``parse_aitqe_output`` tries strict parsing, then a tolerant key-by-key
scan. The released checkpoint loads on native LLaVA classes (``models/released.py``); a
transformers-native chat VLM fine-tuned on AITQE's format works too (``ChatGenerator``).
"""

from __future__ import annotations

import ast
import json
import math
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from curation_pipeline.models.loading import ModelUnavailableError, inference_mode, load_vlm, model_ident
from curation_pipeline.models.released import (ReleasedModel, converted_from, load_released, read_config,
                                               released_layout)
from curation_pipeline.pairs import ContractError, PairBatch
from curation_pipeline.rewriting.base import CODE_VERSIONS, RewriteCandidate, hash_prompt
from curation_pipeline.rewriting.vlm import CAPTION_PLACEHOLDER, DEFAULT_BATCH_SIZE, ChatGenerator, GeneratingRewriter

# The checkpoint was trained on this instruction (reference inference script); a
# fine-tuned model answers reliably only in the format it was trained on.
DEFAULT_INSTRUCTION = (
    "Evaluate the caption: {caption}\n"
    "if score is low, give a short description of the image.\n"
    "Respond using a dictionary structure."
)
OVERALL_MARKER = "<Overall>"

_RECAPTION_KEYS = ("recaption", "re_caption", "rewritten_caption", "rewritten", "rewrite", "new_caption",
                   "improved_caption", "revised_caption", "enhanced_caption")
_OVERALL_KEYS = ("overall_score", "overall", "score", "overall_rating")


@dataclass
class AitqeOutput:
    """One parsed reply. ``overall`` is on AITQE's 1-10 scale, NaN when missing or invalid;
    ``subscores`` maps e.g. ``text_quality`` to its 1-10 score; ``error`` lists what was
    missing or wrong, None for a complete, valid reply."""

    recaption: str | None
    overall: float
    subscores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


# --- parsing --------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[A-Za-z]*")
# A key: quoted, or bare words (letters, digits, spaces, - / _), right after "{", "," or a line start.
_KEY_RE = re.compile(
    r"""(?:^|(?<=[{,\n]))\s*(?:"(?P<dq>[^"\n]{1,60})"|'(?P<sq>[^'\n]{1,60})'|(?P<bare>[A-Za-z][\w /\-]{0,59}?))\s*[:=]\s*""",
    re.MULTILINE,
)
_OPEN_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}
_BARE_VALUE_RE = re.compile(
    r"""(?P<v>[^\n]*?)(?=\s*,\s*["']?[A-Za-z][\w /\-]{0,59}["']?\s*:|\s*}|\n|$)""")
# What may follow a quoted value's closing quote: a comma and the next key (or the end, the reply cut off
# there, perhaps inside that key), "}", a line end or the end. A comma alone does not: captions have commas.
_VALUE_END = (r"""(?=[ \t]*(?:,\s*(?:["']?[A-Za-z][\w /\-]{0,59}["']?\s*[:=]|["']?[A-Za-z][\w /\-]{0,59}$|$)"""
              r"""|[}\n]|$))""")
# A score value is the number alone (ASCII digits, no exponent, no bare "3."), optionally on a scale ("8/10",
# "8 out of 10"), quoted, or ending in the <Overall> marker: "8 dogs" or "3.7e1" are no score.
_NUMBER_RE = re.compile(r"""\s*(?P<q>["'“‘])?\s*(-?[0-9]+(?:\.[0-9]+)?)"""
                        r"""\s*(?:(?:/|out of)\s*([0-9]+(?:\.[0-9]+)?))?\s*(?:<Overall[>}])?\s*(?(q)["'”’])\s*""")
# A score key's unquoted value: up to a comma, "}" or a line end (a number holds none of them).
_BARE_SCORE_RE = re.compile(r"(?P<v>[^,}\n]*)")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "'": "'", "\\": "\\", "/": "/"}


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def _strict(text: str) -> dict | None:
    """The reply as a dict when it is valid JSON or a Python literal between its outer braces."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    span = text[start:end + 1]
    for load in (json.loads, ast.literal_eval):
        try:
            value = load(span)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
    return None


def _quoted_value(text: str, start: int) -> tuple[str, int, bool, bool]:
    """(value, end, closed, ambiguous) for a quoted value at ``start``. The closing quote is the first one
    followed by the next key (``, "Overall Score":``), a ``}`` or the end, so unescaped quotes inside a
    caption survive ("A sign reading 'OPEN', hanging on a door"). ``ambiguous``: the value opens an inner
    quote it never closes, so the quote taken as its end may be an inner one. An escaped quote (``\\"``)
    is never the end, so it makes nothing ambiguous; a quote after an escaped backslash (``\\\\"``) is not
    escaped."""
    close = _OPEN_QUOTES[text[start]]
    pattern = re.compile(r"(?<!\\)(?:\\\\)*(?P<q>" + re.escape(close) + ")" + _VALUE_END)
    match = pattern.search(text, start + 1)
    if match is None:
        return text[start + 1:], len(text), False, False
    value = text[start + 1:match.start("q")]
    unescaped = re.sub(r"\\.", " ", value)  # only unescaped inner quotes can be taken for the end
    opened = len(re.findall(r"(?<!\w)" + re.escape(text[start]) + r"(?=\w)", unescaped))
    closed = len(re.findall(r"(?<=\w)" + re.escape(close) + r"(?!\w)", unescaped))
    return value, match.end(), True, opened > closed


def _unescape(value: str) -> str:
    r"""Escapes decoded as ``json.loads`` decodes them, ``\uXXXX`` included, so a reply cut off before its closing
    brace reads as a complete one does ("caf\u00e9" is "café"); a surrogate pair is one character ("\ud83d\ude00"
    one emoji), a lone half, which no text can hold, U+FFFD."""
    decoded = re.sub(r"\\(?:u([0-9a-fA-F]{4})|(.))",
                     lambda m: chr(int(m.group(1), 16)) if m.group(1) else _ESCAPES.get(m.group(2), m.group(0)), value)
    if any("\ud800" <= ch <= "\udfff" for ch in decoded):
        decoded = decoded.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return decoded


_NO_VALUE = frozenset({"null", "none"})  # a recaption left unquoted as JSON's or Python's "no value", any case


@dataclass
class _Entry:
    """One key-value pair as the tolerant scan read it: the key normalised, where its value starts, whether the
    reply ends inside the value (``cut_off``: a quoted one never closed, an unquoted one running to the end of
    a ``{...}`` never closed) or its end could not be told for sure (``ambiguous``), and whether it was quoted
    at all."""

    key: str
    value: object
    value_start: int = 0
    cut_off: bool = False
    ambiguous: bool = False
    quoted: bool = True


def _is_score_key(key: str) -> bool:
    return key in _OVERALL_KEYS or key.endswith("_score")


def _scan(text: str, braced: bool = False) -> list[_Entry]:
    """Key-value pairs read one by one, in order, repeated keys included (``braced``: the reply opened a ``{``)."""
    entries: list[_Entry] = []
    pos = 0
    while (key_match := _KEY_RE.search(text, pos)) is not None:
        key = next(g for g in key_match.group("dq", "sq", "bare") if g is not None)
        start = key_match.end()
        entry = _Entry(_normalise_key(key), "", start)
        if start < len(text) and text[start] in _OPEN_QUOTES:
            value, pos, closed, entry.ambiguous = _quoted_value(text, start)
            entry.cut_off = not closed
        else:
            bare = (_BARE_SCORE_RE if _is_score_key(entry.key) else _BARE_VALUE_RE).match(text, start)
            # an unquoted value running to the reply's end: cut off inside a {...} never closed; in plain text
            # the reply may have ended at EOS, which the parser cannot tell from the token budget: taken as whole
            value, pos, entry.quoted = bare.group("v"), max(bare.end(), start + 1), False
            entry.cut_off = braced and bare.end() == len(text)  # the value stops at a closing "}"
        entry.value = _unescape(value).strip()
        entries.append(entry)
    return entries


# The marker AITQE writes right after its overall score (``"Overall Score": "2<Overall>"``); the reference's
# post-processing turns its ">" into "}" (``outputs[:-1] + "}"``).
_MARKER_RE = re.compile(r"<Overall[>}]")
# The value the marker ends: what follows the last ":" or "=" (and an opening quote) before it on its line.
_MARKED_VALUE_RE = re.compile(r"""[:=][ \t]*["'“‘]?(?P<v>[^"'“”‘’:=\n{},]*?)[ \t]*$""")


def _marked_overall(text: str) -> tuple[str, int] | None:
    """(the value just before the last ``<Overall>`` marker, the marker's position), or None when there is no
    marker or no key's value ends at it. The marker is where the model itself says its overall score ended, so
    the value there is the overall whatever the recaption before it holds."""
    markers = list(_MARKER_RE.finditer(text))
    if not markers:
        return None
    marker = markers[-1]
    value = _MARKED_VALUE_RE.search(text[max(0, marker.start() - 200):marker.start()])
    return (value.group("v"), marker.start()) if value is not None else None


def _score(value, what: str, errors: list[str], cut_off: bool = False) -> float:
    """A 1-10 score from 8, "8", "8.5", "8/10", "2<Overall>"; NaN (and an error) otherwise. ``cut_off``: the reply
    ends inside the value, so its number may be incomplete (Qwen2 writes "10" as "1", "0"): no score."""
    if cut_off:
        errors.append(f"{what} cut off: the reply ends inside it (raise max_new_tokens)")
        return math.nan
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        number, scale = float(value), None
    else:
        match = _NUMBER_RE.fullmatch(str(value or ""))
        if match is None:
            errors.append(f"{what} is not a number: {str(value)[:20]!r}")
            return math.nan
        number, scale = float(match.group(2)), match.group(3)
    if scale is not None and float(scale) != 10:
        errors.append(f"{what} is not on the 1-10 scale: {number:g}/{scale}")
        return math.nan
    if not 1 <= number <= 10:
        errors.append(f"{what} out of range 1-10: {number:g}")
        return math.nan
    return number


def parse_aitqe_output(text: str | None) -> AitqeOutput:
    """Recaption, overall score and sub-scores from an AITQE reply, never raising: JSON, Python-dict
    style, unquoted keys, code fences, prose around it, replies cut off anywhere. A recaption whose
    closing quote never came, or whose end is ambiguous, is not returned (it may be truncated).

    The reference (``inference.py``) parses nothing: it prints the reply. Where the key-by-key scan reads
    it, the reply's own structure decides: with the ``<Overall>`` marker, the overall is the value just
    before it; the keys read after a recaption whose end is ambiguous may be text inside that recaption,
    so no score is taken from them (without the marker, the overall is the last overall key, and only
    keys after it give sub-scores). An unquoted recaption must be followed by the overall (AITQE's
    order), or where it ends is a guess ("A menu, Price list: 5 dollars"). A value the reply ends inside
    (its quote never closed, or unquoted up to the end of a ``{`` never closed) may have been cut by the token
    budget: such a recaption is not returned, such a score is NaN (``"Overall Score": "1`` may be the "1" of
    "10"); the ``<Overall>`` marker ends the overall. Judged from the text alone, so a stored reply reads as a fresh one."""
    if text is None or not text.strip():
        return AitqeOutput(None, math.nan, error="empty output")
    body = _FENCE_RE.sub("", text)
    brace = body.find("{")
    body = body[brace:] if brace >= 0 else body
    parsed = _strict(body)
    marked = None
    if parsed is not None:
        entries = [_Entry(_normalise_key(k), v) for k, v in parsed.items()]
    else:
        body = body.lstrip("{")
        entries = _scan(body, braced=brace >= 0)
        marked = _marked_overall(body)
    errors: list[str] = []

    recaption_at = next((i for k in _RECAPTION_KEYS for i, e in enumerate(entries) if e.key == k), None)
    overall_at = [i for i, e in enumerate(entries) if e.key in _OVERALL_KEYS]
    # the key whose value the marker ends (the scan's last key starting before it)
    marked_at = max((i for i, e in enumerate(entries) if e.value_start <= marked[1]), default=None) if marked else None
    if marked_at is None or entries[marked_at].key not in _OVERALL_KEYS:  # ends a recaption or another key's text
        marked, marked_at = None, None
    recaption = None
    untrusted = False  # whether the keys read after the recaption may be text inside it
    if recaption_at is None:
        errors.append("no recaption")
    else:
        entry = entries[recaption_at]
        following = recaption_at + 1 if recaption_at + 1 < len(entries) else None
        unexpected = not entry.quoted and following is not None and (
            following != marked_at if marked else entries[following].key not in _OVERALL_KEYS)
        untrusted = entry.ambiguous or unexpected
        if entry.cut_off:
            errors.append("recaption cut off (raise max_new_tokens)")
        elif entry.ambiguous:
            errors.append("recaption end ambiguous (unescaped quotes inside it)")
        elif unexpected:
            errors.append(f"recaption end ambiguous (unquoted, followed by {entries[following].key!r}, "
                          "not the overall score)")
        elif entry.value is not None and not isinstance(entry.value, str):  # strict JSON: a list, a number
            errors.append(f"recaption is not text but {type(entry.value).__name__}")
        else:
            recaption = re.sub(r"\s+", " ", entry.value or "").strip() or None
            # as strict JSON reads an unquoted null: no recaption, not the word
            if not entry.quoted and recaption is not None and recaption.lower() in _NO_VALUE:
                recaption = None
            if recaption is None:
                errors.append("empty recaption")

    trusted = entries
    if untrusted:  # only the keys after the anchor, which the model wrote after the recaption's real end
        if marked:
            anchor = next((i for i, e in enumerate(entries) if e.value_start > marked[1]), len(entries))
        else:
            anchor = overall_at[-1] if overall_at and overall_at[-1] > recaption_at else len(entries)
        trusted = entries[:recaption_at + 1] + entries[anchor:]
    if marked:
        overall = _score(marked[0], "overall score", errors)
    else:
        chosen = ([entries[overall_at[-1]]] if untrusted and overall_at else
                  [e for k in _OVERALL_KEYS for e in trusted if e.key == k][:1])
        if chosen:
            overall = _score(chosen[0].value, "overall score", errors, chosen[0].cut_off)
        else:
            errors.append("no overall score")
            overall = math.nan

    subscores: dict[str, float] = {}
    for entry in trusted:
        if entry.key.endswith("_score") and entry.key not in _OVERALL_KEYS:
            name = entry.key[:-len("_score")]
            if name not in subscores:
                subscores[name] = _score(entry.value, f"{name} score", errors, entry.cut_off)
    return AitqeOutput(recaption, overall, subscores, "; ".join(errors) or None)


# --- the released checkpoint --------------------------------------------------------------

# The reference processor's image tags (MMDataProcessor.image_start_token, image_end_token). It rewrites the whole
# prompt, caption included, around them: spaces after "<img_end>" dropped and a newline forced there; a tagged
# span that is not JSON removed; one that is, loaded as a second image from a local path. A caption holding either
# is refused, never tokenized otherwise than the reference would, nor its file loading reproduced.
IMAGE_TAGS = ("<img_start>", "<img_end>")
IMAGE_TAG_REFUSAL = "caption holds <img_start>/<img_end>, which the reference processor rewrites or loads as an image"


class AitqeGenerator:
    """The released AITQE checkpoint, asked as its reference ``inference.py`` asks it: one image slot
    (with its ``image_pattern`` text), a newline, the instruction; no chat template, no BOS; greedy,
    stopping at ``<Overall>``."""

    def __init__(self, released: ReleasedModel, *, max_new_tokens: int, stop_strings: list[str] | None):
        self.released, self.max_new_tokens, self.stop_strings = released, max_new_tokens, stop_strings
        self.tokenizer = released.tokenizer
        pattern = released.config.get("image_pattern", "<image>")
        self.before, _, self.after = (pattern.format(0) if "{}" in pattern else pattern).partition("<image>")
        # The reference's collator asserts this id is not in a prompt (MMDataCollector); its model would
        # also mask it out of the attention (modeling_mm), so such a prompt has no reference reply.
        self.pad_token_id = released.config.get("pad_token_index", self.tokenizer.pad_token_id)

    def _instruction_ids(self, instruction: str) -> list[int]:
        return self.tokenizer("\n" + instruction, add_special_tokens=False)["input_ids"]

    def refusal(self, instruction: str) -> str | None:
        """Why this instruction is not asked, or None: it holds an image tag (``IMAGE_TAGS``), whose handling
        by the reference's processor is not reproduced; or its tokens hold the pad id, as a caption holding
        ``<|endoftext|>`` (or any special token mapped to that id) makes them, which the reference refuses.
        Not stripped: that would score a caption the reference never scores."""
        if any(tag in instruction for tag in IMAGE_TAGS):
            return IMAGE_TAG_REFUSAL
        if self.pad_token_id is None or self.pad_token_id not in self._instruction_ids(instruction):
            return None
        token = self.tokenizer.convert_ids_to_tokens(self.pad_token_id)
        return f"caption holds the pad token {token}, which the reference refuses"

    def token_ids(self, instruction: str) -> list[int]:
        """As the reference's processor: the pattern's text around one image slot, then a newline
        it forces after ``<img_end>`` (spaces there dropped), then ``"\\n" + instruction``. An instruction
        holding an image tag has other ids there (``refusal``): asking it is a caller's error."""
        if any(tag in instruction for tag in IMAGE_TAGS):
            raise ContractError(f"an AITQE instruction holding an image tag reached the model: {IMAGE_TAG_REFUSAL}")
        tok = self.tokenizer
        after = self.after.lstrip(" ")
        after = after if after.startswith("\n") else "\n" + after
        ids = tok(self.before, add_special_tokens=False)["input_ids"] if self.before else []
        ids += [self.released.image_token_id] * self.released.image_tokens
        ids += tok(after, add_special_tokens=False)["input_ids"]
        return ids + self._instruction_ids(instruction)

    @inference_mode
    def generate(self, images: list, instructions: list[str]) -> list[str]:
        import torch

        sequences = [self.token_ids(text) for text in instructions]
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, seq in enumerate(sequences):
            ids[k, width - len(seq):], mask[k, width - len(seq):] = torch.tensor(seq), 1
        model = self.released.model
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        extra = {"stop_strings": self.stop_strings, "tokenizer": self.tokenizer} if self.stop_strings else {}
        # the image placeholder is never generated: the loader's generation_config suppresses it (released.py)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             pixel_values=self.released.pixel_values(images).to(device, dtype),
                             max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1, **extra)
        return [text.strip() for text in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


class _LoadedVlm:
    """A chat VLM and its processor as one object, so the loaded pair can be shared (``_shared``)."""

    def __init__(self, loaded):
        self.model, self.processor = loaded


# (how it was loaded) -> the loaded model, while a scorer or rewriter holds it: the AITQE scorer and rewriter
# of one process share one copy (the released checkpoint is some 16 GB in bf16; two did not fit where one did)
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def _shared(key: tuple, load: Callable[[], object]):
    with _LOADING:
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = load()
            _LOADED[key] = loaded
        return loaded


def load_aitqe(model: str, *, max_new_tokens: int, stop_strings: list[str] | None, device: str | None = None,
               dtype=None, trust_remote_code: bool = False, vision_tower: str | None = None):
    """The released AITQE checkpoint, or any chat VLM fine-tuned on AITQE's format; the model itself is shared
    with any other generator of this process loaded the same way (the scorer's and the rewriter's)."""
    written = converted_from(model)  # a missing local directory fails here, once
    if written.get("layout") == "mm":  # transformers runs it, this project asks the original as its reference does
        raise ModelUnavailableError(model, "a directory `curate convert-model` wrote from an AITQE checkpoint has no "
                                           "chat template nor AITQE's prompt format: give the original checkpoint "
                                           f"({written.get('source')})")
    layout = released_layout(read_config(model))
    key = (model, vision_tower, device, str(dtype), trust_remote_code, layout)
    if layout == "mm":
        released = _shared(key, lambda: load_released(model, vision_tower=vision_tower, device=device, dtype=dtype))
        return AitqeGenerator(released, max_new_tokens=max_new_tokens, stop_strings=stop_strings)
    if layout is not None:
        raise ModelUnavailableError(model, f"a released {layout!r} checkpoint is an MLM-Filter scorer, not AITQE")
    pair = _shared(key, lambda: _LoadedVlm(load_vlm(model, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)))
    generator = ChatGenerator(pair.model, pair.processor, max_new_tokens=max_new_tokens, stop_strings=stop_strings)
    generator.shared = pair  # held while the generator is: the next load of the same model finds it
    return generator


def precision(generator) -> str:
    """The dtype the loaded model generates in ("bfloat16", "float32"): replies differ by it."""
    model = generator.released.model if isinstance(generator, AitqeGenerator) else generator.model
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def planned_precision(model: str, device: str | None = None, dtype=None) -> tuple[str, bool]:
    """(the dtype ``load_aitqe`` would load ``model`` in on ``device`` in this process, as ``precision`` names it;
    whether it is the released checkpoint), without reading the weights: the precision depends on the GPU."""
    from curation_pipeline.models.loading import pick_device, pick_dtype
    from curation_pipeline.models.released import released_dtype

    layout, device = released_layout(read_config(model)), pick_device(device)
    chosen = released_dtype(layout, device, dtype) if layout == "mm" else pick_dtype(device, dtype)
    return str(chosen).removeprefix("torch."), layout == "mm"


def aitqe_instruction(generator, prompt: str, caption: str | None) -> str:
    """The instruction with the caption in. The released checkpoint gets the caption exactly as given:
    the reference's ``process_prompt`` inserts it as it is (its data processor strips only outside
    inference, ``if not self.is_infra``), so leading/trailing whitespace changes its tokens and its reply.
    A chat VLM gets it stripped and without its image token (the chat template places the image)."""
    caption = caption or ""
    if isinstance(generator, ChatGenerator):
        caption = generator.without_image_token(caption.strip())
    return prompt.replace(CAPTION_PLACEHOLDER, caption)


def skip_refused(generator, batch: PairBatch, instruction: Callable[[str | None], str],
                 run: Callable[[PairBatch], list[RewriteCandidate]]) -> list[RewriteCandidate]:
    """``run`` over the pairs the released checkpoint's reference accepts; a pair with an image whose
    instruction it refuses (``AitqeGenerator.refusal``) gets no model call, and a candidate saying why.
    A chat VLM has no such reference: every pair runs."""
    refusals = [generator.refusal(instruction(caption)) if isinstance(generator, AitqeGenerator) and image is not None
                else None for caption, image in zip(batch.captions, batch.images)]
    keep = [i for i, reason in enumerate(refusals) if reason is None]
    if len(keep) == len(batch):
        return run(batch)
    candidates = [RewriteCandidate(None, error=reason) for reason in refusals]
    rest = PairBatch([batch.keys[i] for i in keep], [batch.captions[i] for i in keep],
                     [batch.images[i] for i in keep], [batch.original_sizes[i] for i in keep])
    for i, candidate in zip(keep, run(rest) if keep else []):
        candidates[i] = candidate
    return candidates


# --- the rewriter ---------------------------------------------------------------------------

class UnloadedGenerator:
    """The generator of an ``AitqeRewriter`` built with ``load_model=False``: it never generates."""

    def generate(self, images, instructions):
        raise ContractError("an aitqe rewriter built without its model was asked to generate (every target was "
                            "to be answered from a stored reply)")


# The reference inference script's generation budget.
AITQE_MAX_NEW_TOKENS = 384


class AitqeRewriter(GeneratingRewriter):
    """Rewrites and rates in one call; its ratings go to the lineage as ``aitqe_*`` scores."""

    name = "aitqe"

    def __init__(self, model: str, *, instruction: str | None = None, max_new_tokens: int = AITQE_MAX_NEW_TOKENS,
                 batch_size: int = DEFAULT_BATCH_SIZE, stop_after_overall: bool = True, device: str | None = None,
                 dtype=None, trust_remote_code: bool = False, vision_tower: str | None = None, load_model: bool = True):
        super().__init__(instruction or DEFAULT_INSTRUCTION, batch_size,
                         f"the AITQE instruction must contain {CAPTION_PLACEHOLDER}")
        self.model, self.max_new_tokens, self.vision_tower = model, max_new_tokens, vision_tower
        self.trust_remote_code, self.dtype = trust_remote_code, dtype
        self.stop_strings = [OVERALL_MARKER] if stop_after_overall else None
        # 3: images as the reference decodes them (shards.reader.model_image); 4: a caption holding the
        # released checkpoint's pad token is refused, as the reference refuses it (AitqeGenerator.refusal);
        # 5: a recaption holding escaped quotes is no longer rejected as ambiguous (_quoted_value); 6: \uXXXX escapes
        # decoded in a reply cut off at <Overall> too, as in a complete one (_unescape); 7: the overall is the value
        # before <Overall>, and an unquoted recaption followed by another key than the overall is ambiguous
        # (parse_aitqe_output); 8: a caption holding <img_start>/<img_end> is refused (AitqeGenerator.refusal);
        # 9: the version names the precision and a vision tower given in place of the checkpoint's, as the scorer's;
        # a score the reply ends inside is NaN, a score value must be the number alone, a non-text recaption is an
        # error; a recaption kept where the score failed keeps the parse error (parse_aitqe_output, _candidate);
        # 10: an unquoted null or None recaption is none, in a reply cut at <Overall> too (parse_aitqe_output)
        # load_model=False: the settings, version and ``answer`` only, for targets all answered from the replies the
        # scorer stored (``rewriting.reuse``, on a Ray actor): asked to generate, it raises
        self.generator = load_aitqe(model, max_new_tokens=max_new_tokens, stop_strings=self.stop_strings,
                                    device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                    vision_tower=vision_tower) if load_model else UnloadedGenerator()
        # the loaded model's precision, or the one it would load in here (a Ray actor: the GPU it was given)
        dtype_name = precision(self.generator) if load_model else planned_precision(model, device, dtype)[0]
        tower = f":tower={model_ident(vision_tower)}" if vision_tower else ""
        self.version = (f"{CODE_VERSIONS['aitqe']}:{model_ident(model)}:max_new={max_new_tokens}"
                        f":stop={int(stop_after_overall)}"
                        f":dtype={dtype_name}{tower}")
        reason = (self.generator.refusal(self.prompt.replace(CAPTION_PLACEHOLDER, ""))
                  if isinstance(self.generator, AitqeGenerator) else None)
        if reason:
            raise ValueError(f"the AITQE instruction {reason.removeprefix('caption ')}: {self.prompt[:80]!r}")

    def instruction(self, caption: str | None) -> str:
        return aitqe_instruction(self.generator, self.prompt, caption)

    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        return skip_refused(self.generator, batch, self.instruction, super().rewrite)

    def answer(self, caption: str | None, reply: str) -> RewriteCandidate:
        """The candidate ``rewrite`` makes of ``reply``, the model's answer for a pair with this caption and an
        image: for a reply generated already (``rewriting.reuse``)."""
        candidate = self._candidate(reply)
        candidate.prompt_hash = hash_prompt(self.template(caption))
        return candidate

    @staticmethod
    def _candidate(reply: str) -> RewriteCandidate:
        """The recaption, with the parse's error even where there is one (a score out of range): the lineage
        records it with the verdict."""
        parsed = parse_aitqe_output(reply)
        scores = {"aitqe_overall": parsed.overall, **{f"aitqe_{k}": v for k, v in parsed.subscores.items()}}
        return RewriteCandidate(parsed.recaption, error=parsed.error, raw=reply, scores=scores)
