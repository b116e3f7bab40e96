"""Minimal caption rewrites from a chat vision-language model (the scorer's backends).

The prompt asks for the smallest repair; whether the model complied is measured afterwards
(``rewriting.verify``), not trusted here. Generation is deterministic (greedy or beam search), so a
re-run with the same model, prompt and settings proposes the same rewrites.
"""

from __future__ import annotations

import re
from typing import Callable

from curation_pipeline.models.aspect import model_input
from curation_pipeline.models.loading import inference_mode, load_vlm, model_ident
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.base import CODE_VERSIONS, RewriteCandidate, Rewriter, hash_prompt, no_caption_to_edit

CAPTION_PLACEHOLDER = "{caption}"
# the model rewriters' defaults, the rewriter resource's too (its max_new_tokens 0 means the rewriter's own)
VLM_MAX_NEW_TOKENS = 64
DEFAULT_NUM_BEAMS = 1  # greedy
DEFAULT_BATCH_SIZE = 8  # captions per generate call (vlm and aitqe)
DEFAULT_PROMPT = (
    "This image came with the caption below.\n"
    "Caption: {caption}\n\n"
    "Edit the caption as little as possible so that it matches the image. Keep everything "
    "that is right: names, places, numbers, style and language. Correct what is wrong and "
    "add the main content it leaves out, nothing the image does not show. "
    "Reply with the edited caption only, on one line."
)
NO_CAPTION_PROMPT = (
    "Write a short factual caption for this image: one sentence naming the main subjects "
    "and what is happening. Reply with the caption only, on one line."
)

# What a chat model says before its answer: "Sure, here is the edited caption:", "The revised caption is: ...",
# "**Caption:**", "New caption - ...". A dash ends the label only before a space ("Caption-worthy sunset" is a
# caption), and a courtesy word ("Sure,", "Okay.") goes only with a label after it ("Okay sign on a wall" stays).
_CAPTION_WORDS = r"(?:the\s+)?(?:(?:new|edited|corrected|revised|rewritten|improved|updated|final)\s+)?caption"
_COURTESY = r"(?:sure|okay|ok|certainly|of\s+course|absolutely|alright|all\s+right)"
_CAPTION_LABEL = (rf"\**\s*(?:{_CAPTION_WORDS}(?:\s+is)?\s*\**\s*(?::|[-–—](?=\s))"
                  r"|(?:answer|output|response|edited|revised|rewritten|corrected)\s*\**\s*:)\s*\**")
_HERE_IS = r"(?:here\s+is|here['’]s)\b[^:]*:\s*"
_LABEL_RE = re.compile(
    rf"^(?:{_COURTESY}\b[\s,.!:;–—-]*"
    rf"(?={_HERE_IS}|{_CAPTION_LABEL}))?(?:{_HERE_IS})?(?:{_CAPTION_LABEL})?",
    re.IGNORECASE,
)
_QUOTES = "\"'`“”‘’«»"
_APOSTROPHE_RE = re.compile(r"(?<=\w)['’](?=\w)")
_SPACE_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # control bytes, replacement char


# Markdown a chat model starts a line with: a header ("### "), a block quote ("> "); and emphasis around a line.
_MARKDOWN_START = re.compile(r"^(?:#{1,6}\s+|>\s+(?=\D))+")  # "> 50 people ..." is a caption: more than 50
_EMPHASIS = "*_`"
# A line that only announces what follows: a courtesy word ("Sure.", "Okay!"), a caption label with or without its
# colon or dash ("Edited caption -", "### Caption", "**Edited caption:**"), a "Here is ..." ending in a colon.
_ANNOUNCES = re.compile(
    rf"^(?:(?:{_COURTESY}|done|here\s+you\s+go)\W*"
    rf"|{_CAPTION_WORDS}(?:\s*\([^()]{{0,40}}\))?(?:\s+is)?\s*[:\-–—]?|.*:)$", re.IGNORECASE)


def _bare(line: str) -> str:
    """A line without the markdown around it: header and quote marks, emphasis at both ends."""
    return _MARKDOWN_START.sub("", line).strip(_EMPHASIS + " ").strip()


def caption_line(text: str | None) -> tuple[str, bool]:
    """The caption in a model reply (``clean_output``), and whether a further line followed it: then the
    caption line was finished, even if the reply was cut off later (a model that goes on to explain its edit)."""
    lines = [line.strip() for line in _CONTROL_RE.sub("", text or "").splitlines() if line.strip()]
    first = 0
    while first < len(lines) - 1 and _ANNOUNCES.match(_bare(lines[first])):
        first += 1
    line, previous = (_MARKDOWN_START.sub("", lines[first]) if lines else ""), None
    while line != previous:  # labels and quotes nest either way: 'Caption: "..."', '"Caption: ..."'
        previous = line
        line = _unquote(_unemphasise(_LABEL_RE.sub("", line, count=1).strip()))
        for mark in ("**", "__"):  # "Caption: **A dog.**": the label took the opening mark with it
            if line.endswith(mark) and line.count(mark) == 1:
                line = line[:-len(mark)].rstrip()
    return _SPACE_RE.sub(" ", line).strip(), first < len(lines) - 1


def _unemphasise(line: str) -> str:
    """Without markdown emphasis around the whole line ("**A dog runs.**"), only where it is its one pair."""
    for mark in ("**", "__", "*", "_", "`"):
        if len(line) > 2 * len(mark) and line.startswith(mark) and line.endswith(mark) \
                and mark not in line[len(mark):-len(mark)]:
            return line[len(mark):-len(mark)].strip()
    return line


def clean_output(text: str | None) -> str:
    """The caption in a model reply: its first line after any that only announce the answer (a courtesy word,
    a caption label, a line ending in a colon), without markdown header or quote marks, a "Caption:" label,
    wrapping quotes or control characters, whitespace collapsed ("" if nothing left)."""
    return caption_line(text)[0]


def _unquote(line: str) -> str:
    """Without quotes around the whole line; only when they are its one pair: '"Jaws" next to "Alien"'
    quotes two titles, and an apostrophe inside a word ("dog's") is no quote."""
    while len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        inner = _APOSTROPHE_RE.sub("", line[1:-1])
        if line[0] in inner or line[-1] in inner:
            break
        line = line[1:-1].strip()
    if line and line[0] in _QUOTES and line.count(line[0]) == 1:  # cut off before its closing quote
        line = line[1:].strip()
    return line


class Reply(str):
    """A decoded reply; ``cut_off``: generation stopped at max_new_tokens, not at an end token, so the reply
    may end mid-phrase ("... a dog sitting on the")."""

    cut_off: bool = False


def cut_off(generated, max_new_tokens: int, end_ids: set[int]) -> list[bool]:
    """Per row of the generated ids (prompt removed): all max_new_tokens used and the last one no end token
    (a row that ended earlier is padded with the pad token)."""
    if generated.shape[-1] < max_new_tokens:
        return [False] * generated.shape[0]
    return [int(row[-1]) not in end_ids for row in generated]


def _end_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
    ids |= {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {int(i) for i in ids if i is not None}


class ChatGenerator:
    """Batched, left-padded, deterministic generation from a chat VLM, prompts rendered with the model's
    own chat template (image first, then the instruction), as the scorer does."""

    def __init__(self, model, processor, *, max_new_tokens: int, num_beams: int = 1,
                 stop_strings: list[str] | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1 (1 = greedy), got {num_beams}")
        self.model, self.processor = model, processor
        self.tokenizer = processor.tokenizer
        self.max_new_tokens, self.num_beams, self.stop_strings = max_new_tokens, num_beams, stop_strings
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.image_token = getattr(processor, "image_token", None)

    def without_image_token(self, text: str) -> str:
        """A caption that contains the image placeholder would break the image-token count."""
        return text.replace(self.image_token, "") if self.image_token else text

    def render(self, instruction: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @inference_mode
    def generate(self, images: list, instructions: list[str]) -> list[str]:
        """One decoded reply per (image, instruction), special tokens removed, otherwise untouched."""
        import torch

        if not images:
            return []
        image_processor = getattr(self.processor, "image_processor", None)
        # one list per prompt: SmolVLM's processor reads a flat list as one prompt's images (the others: the same)
        inputs = self.processor(text=[self.render(t) for t in instructions],
                                images=[[model_input(im, image_processor)] for im in images],
                                padding=True, padding_side="left", return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                  for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        extra = {"stop_strings": self.stop_strings, "tokenizer": self.tokenizer} if self.stop_strings else {}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                  do_sample=False, **extra)
        generated = out[:, inputs["input_ids"].shape[1]:]
        replies = [Reply(text) for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]
        for reply, cut in zip(replies, cut_off(generated, self.max_new_tokens, _end_ids(self.model, self.tokenizer))):
            reply.cut_off = cut
        return replies


class GeneratingRewriter(Rewriter):
    """A model rewriter: ``generator.generate`` answers ``instruction(caption)`` for each pair with an
    image, ``batch_size`` pairs at a time; ``_candidate`` reads each reply."""

    needs_images = True

    def __init__(self, prompt: str, batch_size: int, placeholder_error: str):
        if CAPTION_PLACEHOLDER not in prompt:
            raise ValueError(f"{placeholder_error}; got {prompt[:80]!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.prompt, self.batch_size = prompt, batch_size

    def template(self, caption: str | None) -> str:
        """The prompt a caption is asked with (before the caption is filled in)."""
        return self.prompt

    def no_caption_to_edit(self, caption: str | None) -> bool:
        """No words once the generator's image placeholder is removed, as ``instruction`` removes it."""
        return no_caption_to_edit(caption, getattr(getattr(self, "generator", None), "image_token", None))

    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        candidates = generate_in_batches(batch, self.batch_size, self.instruction, self.generator.generate,
                                         self._candidate)
        for caption, image, cand in zip(batch.captions, batch.images, candidates):
            if image is not None:  # lineage hashes the prompt this pair was actually asked with
                cand.prompt_hash = hash_prompt(self.template(caption))
        return candidates


class VlmRewriter(GeneratingRewriter):
    """Asks a chat VLM for the smallest caption edit that makes the caption match its image."""

    name = "vlm"

    def __init__(self, model: str, *, prompt: str | None = None, max_new_tokens: int = VLM_MAX_NEW_TOKENS,
                 num_beams: int = DEFAULT_NUM_BEAMS, batch_size: int = DEFAULT_BATCH_SIZE, device: str | None = None,
                 dtype=None, trust_remote_code: bool = False):
        super().__init__(prompt or DEFAULT_PROMPT, batch_size,
                         f"the rewrite prompt must contain {CAPTION_PLACEHOLDER} where the caption goes")
        # 3: chat lead-ins ("Sure, here is the edited caption:", "Revised caption - ") removed from replies
        # 4: a reply cut off at max_new_tokens is no candidate (it ends mid-phrase)
        # 5: markdown header and quote marks removed; lines of only a courtesy word or a caption label skipped;
        # a reply cut off after its caption line keeps that line
        # 6: a generic label ("Answer:", "Output:") removed, and an emphasis mark the label left alone at the end
        loaded, processor = load_vlm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        # after loading: a snapshot fetched just now is the one named
        self.version = f"{CODE_VERSIONS['vlm']}:{model_ident(model)}:beams={num_beams}:max_new={max_new_tokens}"
        self.generator = ChatGenerator(loaded, processor, max_new_tokens=max_new_tokens, num_beams=num_beams)

    def template(self, caption: str | None) -> str:
        """A pair without a caption is asked to caption its image instead."""
        return NO_CAPTION_PROMPT if self.no_caption_to_edit(caption) else self.prompt

    def instruction(self, caption: str | None) -> str:
        """The user turn for one caption; str.replace, so braces in captions or prompts are literal."""
        caption = self.generator.without_image_token(caption or "").strip()
        return self.template(caption).replace(CAPTION_PLACEHOLDER, caption)

    @staticmethod
    def _candidate(reply: str) -> RewriteCandidate:
        caption, finished = caption_line(reply)
        # a caption cut mid-phrase must not be judged as a finished one; a finished line before the cut is one
        if getattr(reply, "cut_off", False) and not finished:
            return RewriteCandidate(None, error="reply cut off at max_new_tokens (raise rewriter.max_new_tokens)",
                                    raw=str(reply))
        return RewriteCandidate(caption or None, error=None if caption else "empty output", raw=str(reply))


def generate_in_batches(batch: PairBatch, batch_size: int, instruction: Callable[[str | None], str],
                        generate: Callable[[list, list[str]], list[str]],
                        candidate: Callable[[str], RewriteCandidate]) -> list[RewriteCandidate]:
    """Pairs without an image get no candidate (a VLM must see it); the rest run ``batch_size`` at a time."""
    candidates: list[RewriteCandidate | None] = [
        RewriteCandidate(None, error="no image") if image is None else None for image in batch.images]
    todo = [i for i, c in enumerate(candidates) if c is None]
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        replies = generate([batch.images[i] for i in rows], [instruction(batch.captions[i]) for i in rows])
        for i, reply in zip(rows, replies):
            candidates[i] = candidate(reply)
    return candidates
