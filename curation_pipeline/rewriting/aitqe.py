"""AITQE (arXiv 2410.16166, checkpoint HymanH/AITQE) as a scorer-rewriter backend.

AITQE answers with a dictionary-like text: the rewritten caption first
("Recaption"), then an overall score on 1-10, then sub-scores with explanations.
Its reference inference stops generating at the ``<Overall>`` marker written after
the overall score, so the usual output is a dictionary cut off mid-value, e.g.
``{"Recaption": "A man ...", "Overall Score": "2<Overall>``. Nothing guarantees valid
JSON either, hence ``parse_aitqe_output``: strict JSON or Python-literal parsing
first, then a tolerant key-by-key scan.

The checkpoint ships its own modelling code, so it is loaded only when the caller
explicitly sets ``trust_remote_code``. Two shapes are supported: a transformers-native
chat VLM (processor with a chat template, batched through ``ChatGenerator``), and the
released custom model, recognised by its ``bind_processor`` method, whose processor
reads each image from a file path embedded in the prompt (one pair per call).
"""

from __future__ import annotations

import ast
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from curation_pipeline.models.loading import ModelUnavailableError, finish, prepare_source, load_vlm, pick_device, pick_dtype
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.rewriting.vlm import CAPTION_PLACEHOLDER, ChatGenerator, generate_in_batches

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
_NUMBER_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:(?:/|out of)\s*(\d+(?:\.\d+)?))?")
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


def _quoted_value(text: str, start: int) -> tuple[str, int, bool]:
    """(value, end, closed) for a quoted value at ``start``. The closing quote is the first one
    followed by a delimiter, so unescaped quotes inside a caption survive."""
    close = _OPEN_QUOTES[text[start]]
    pattern = re.compile(r"(?<!\\)" + re.escape(close) + r"(?=\s*(?:[,}\n]|$))")
    match = pattern.search(text, start + 1)
    if match is None:
        return text[start + 1:], len(text), False
    return text[start + 1:match.start()], match.end(), True


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)


def _scan(text: str) -> tuple[dict[str, str], set[str]]:
    """Key-value pairs read one by one; also the keys whose quoted value was never closed."""
    found: dict[str, str] = {}
    cut_off: set[str] = set()
    pos = 0
    while (key_match := _KEY_RE.search(text, pos)) is not None:
        key = next(g for g in key_match.group("dq", "sq", "bare") if g is not None)
        start = key_match.end()
        if start < len(text) and text[start] in _OPEN_QUOTES:
            value, pos, closed = _quoted_value(text, start)
            if not closed:
                cut_off.add(_normalise_key(key))
        else:
            bare = _BARE_VALUE_RE.match(text, start)
            value, pos = bare.group("v"), max(bare.end(), start + 1)
        found.setdefault(key.strip(), _unescape(value).strip())
    return found, cut_off


def _score(value, what: str, errors: list[str]) -> float:
    """A 1-10 score from 8, "8", "8.5", "8/10", "2<Overall>"; NaN (and an error) otherwise."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        number, scale = float(value), None
    else:
        match = _NUMBER_RE.match(str(value or "").replace(OVERALL_MARKER, ""))
        if match is None:
            errors.append(f"{what} is not a number: {str(value)[:20]!r}")
            return math.nan
        number, scale = float(match.group(1)), match.group(2)
    if scale is not None and float(scale) != 10:
        errors.append(f"{what} is not on the 1-10 scale: {number:g}/{scale}")
        return math.nan
    if not 1 <= number <= 10:
        errors.append(f"{what} out of range 1-10: {number:g}")
        return math.nan
    return number


def parse_aitqe_output(text: str | None) -> AitqeOutput:
    """Recaption, overall score and sub-scores from an AITQE reply, never raising.

    Accepts valid JSON, Python-dict style (single quotes), unquoted keys, code fences,
    prose before or after, and replies cut off mid-dictionary or mid-value. A recaption
    whose closing quote never came is treated as truncated and not returned.
    """
    if text is None or not text.strip():
        return AitqeOutput(None, math.nan, error="empty output")
    body = _FENCE_RE.sub("", text)
    brace = body.find("{")
    body = body[brace:] if brace >= 0 else body
    parsed = _strict(body)
    cut_off: set[str] = set()
    if parsed is None:
        parsed, cut_off = _scan(body.lstrip("{"))
    fields = {_normalise_key(k): v for k, v in parsed.items()}
    errors: list[str] = []

    recaption_key = next((k for k in _RECAPTION_KEYS if k in fields), None)
    recaption = None
    if recaption_key is None:
        errors.append("no recaption")
    elif recaption_key in cut_off:
        errors.append("recaption cut off (raise max_new_tokens)")
    else:
        recaption = re.sub(r"\s+", " ", str(fields[recaption_key] or "")).strip() or None
        if recaption is None:
            errors.append("empty recaption")

    overall_key = next((k for k in _OVERALL_KEYS if k in fields), None)
    if overall_key is None:
        errors.append("no overall score")
        overall = math.nan
    else:
        overall = _score(fields[overall_key], "overall score", errors)

    subscores = {}
    for key, value in fields.items():
        if key.endswith("_score") and key != overall_key:
            name = key[:-len("_score")]
            subscores[name] = _score(value, f"{name} score", errors)
    return AitqeOutput(recaption, overall, subscores, "; ".join(errors) or None)


# --- the rewriter ---------------------------------------------------------------------------


def _load_custom(model: str, device: str | None, dtype):
    """AITQE's released custom model: AutoModelForCausalLM + AutoTokenizer with its own code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = prepare_source(model)
    device = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True, padding_side="left",
                                                  truncation_side="left", use_fast=False)
        loaded = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True, dtype=pick_dtype(device, dtype))
    except (OSError, ValueError, KeyError, ImportError, TypeError, AttributeError) as exc:
        raise ModelUnavailableError(model, exc) from exc
    if not hasattr(loaded, "bind_processor"):
        raise ModelUnavailableError(model, "neither a chat vision-language model nor AITQE's custom model "
                                           "(no bind_processor method)")
    return finish(loaded, device), tokenizer


class AitqeRewriter(Rewriter):
    """Rewrites and rates in one call; its ratings go to the lineage as ``aitqe_*`` scores."""

    name = "aitqe"
    needs_images = True

    def __init__(self, model: str, *, instruction: str | None = None, max_new_tokens: int = 256,
                 batch_size: int = 8, stop_after_overall: bool = True, device: str | None = None, dtype=None,
                 trust_remote_code: bool = False):
        if not trust_remote_code:
            raise ValueError(
                f"AITQE model {model!r} runs its own modelling code from the checkpoint; it is loaded only "
                "when you allow that for it: set rewriter.trust_remote_code: true (and only for a checkpoint "
                "you trust)")
        instruction = instruction or DEFAULT_INSTRUCTION
        if CAPTION_PLACEHOLDER not in instruction:
            raise ValueError(f"the AITQE instruction must contain {CAPTION_PLACEHOLDER}; got {instruction[:80]!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.prompt, self.batch_size, self.max_new_tokens = instruction, batch_size, max_new_tokens
        self.stop_strings = [OVERALL_MARKER] if stop_after_overall else None
        self.version = f"1:{model}:max_new={max_new_tokens}:stop={int(stop_after_overall)}"
        self.generator = self.model = self.tokenizer = self._custom_processor = None
        prepare_source(model)  # a missing local directory fails here, once
        try:
            loaded, processor = load_vlm(model, device=device, dtype=dtype, trust_remote_code=True)
        except ModelUnavailableError as chat_error:
            try:
                self.model, self.tokenizer = _load_custom(model, device, dtype)
            except ModelUnavailableError as custom_error:
                raise ModelUnavailableError(model, f"as a chat VLM: {chat_error.__cause__}; "
                                                   f"as AITQE's custom model: {custom_error.__cause__ or custom_error}"
                                            ) from custom_error
            self._custom_processor = self.model.bind_processor(self.tokenizer, config=self.model.config)
        else:
            self.generator = ChatGenerator(loaded, processor, max_new_tokens=max_new_tokens,
                                           stop_strings=self.stop_strings)

    def instruction(self, caption: str | None) -> str:
        caption = (caption or "").strip()
        if self.generator is not None:
            caption = self.generator.without_image_token(caption)
        return self.prompt.replace(CAPTION_PLACEHOLDER, caption)

    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        generate = self.generator.generate if self.generator is not None else self._generate_custom
        return generate_in_batches(batch, self.batch_size, self.instruction, generate, self._candidate)

    @staticmethod
    def _candidate(reply: str) -> RewriteCandidate:
        parsed = parse_aitqe_output(reply)
        scores = {"aitqe_overall": parsed.overall, **{f"aitqe_{k}": v for k, v in parsed.subscores.items()}}
        error = None if parsed.recaption else parsed.error
        return RewriteCandidate(parsed.recaption, error=error, raw=reply, scores=scores)

    @torch.inference_mode()
    def _generate_custom(self, images: list, instructions: list[str]) -> list[str]:
        """The released processor reads images from paths inside the prompt, one prompt per call."""
        replies = []
        with tempfile.TemporaryDirectory(prefix="aitqe-") as tmp:
            for n, (image, instruction) in enumerate(zip(images, instructions)):
                path = Path(tmp) / f"{n}.png"
                image.convert("RGB").save(path)
                image_ref = json.dumps({"path": str(path), "source": "localpath", "file_type": "I"})
                inputs = self._custom_processor(f"<img_start>{image_ref}<img_end>\n{instruction}")
                device = next(self.model.parameters()).device
                inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
                extra = {"stop_strings": self.stop_strings, "tokenizer": self.tokenizer} if self.stop_strings else {}
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=1,
                                          do_sample=False, use_cache=True, **extra)
                replies.append(self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                           skip_special_tokens=True)[0])
        return replies
