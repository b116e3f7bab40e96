"""MLM-Filter's four quality metrics over transformers-native chat vision-language models.

Each metric asks the model for an integer 0-100 on the first line of its reply
(MLM-Filter, arXiv 2403.02677). Two ways to read it:

* ``mode="logits"`` (default): the expected score under the model's own
  distribution, read from logits without sampling. The image and caption come first
  in every prompt, followed by the scoring rules, which are the same for every
  metric; all of that is run once per pair (the prefill), and every metric's suffix
  (criterion, assistant turn start) with the score's digit walk is run on top of its
  KV cache as sibling branches of a token tree in ONE more forward pass, so a batch
  costs two model calls whatever the number of metrics.
* ``mode="generate"``: greedy decoding of a few tokens and MLM-Filter's tolerant
  first-line parser, for parity checks and models whose logits cannot be read.

Reading the expectation (``digit_split_expectation``). Tokenizers such as Qwen2's
or SmolLM's write numbers one digit per token, so "100" is three tokens and reading
one token would collapse it to "1" (and two tokens to "10"). The score is a digit
string followed by a non-digit ("end": newline, end of turn, "/", ...). With
``P1`` the next-token distribution after the prompt, ``P2(.|d)`` after digit ``d``
and ``P3(.|10)`` after "1","0":

    P(0)   = P1(0)
    P(d)   = P1(d) * P2(end | d)                       d = 1..9
    P(de)  = P1(d) * P2(e | d)                         de = 11..99
    P(10)  = P1(1) * P2(0 | 1) * P3(end | 10)
    P(100) = P1(1) * P2(0 | 1) * P3(0 | 10)

``P(end | x) = 1 - sum of digit probabilities``. The expected score is
``sum s P(s) / sum P(s)`` and ``sum P(s)`` is the mass on valid scores. That needs
the next-token distributions after ten more tokens, all in the same tree pass: the
nine digits 1..9 as siblings masked from each other, and "0" under "1". It is exact
except for one convention: a digit string that no valid score extends ("0", any two
digits but "10", "100") is taken as complete, so the little mass a model puts on
invalid continuations ("05", "855", "1000") counts for that prefix instead of being
dropped. Tokenizers with one token per number 0-100 (Llama-3 style) need no walk:
``P(s) = P1(token s)``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from curation_pipeline.models.loading import load_vlm
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer

CAPTION_LINE = "Text Caption: {caption}"
# The user turn: caption, blank line, shared rules, then the metric's criterion last,
# so everything before the criterion is one prefix for all metrics.
USER_TEXT = "{caption_line}\n\n{rules}\n{criterion}"
SCORING_RULES = (
    "Give a score from 0 to 100, where 0 is the worst and 100 the best, and use the whole "
    "range. Write the integer score alone on the first line of your reply."
)
CRITERIA = {
    "itm": (
        "Judge how well the caption matches the image: does it name the main objects and "
        "capture the overall theme of the picture?"
    ),
    "odf": (
        "Judge how well the caption describes the details of the objects in the image: are "
        "their colour, size, position, shape and material stated, and stated correctly?"
    ),
    "ctq": (
        "Judge the caption as a piece of text: its grammar, choice of words, fluency, "
        "readability, and whether its length suits the image."
    ),
    "su": (
        "Judge how much understanding the caption adds beyond what the pixels show: names "
        "of people or places, events, species or other knowledge that fits the image."
    ),
}
METRICS = tuple(CRITERIA)
prompt_hash = hashlib.sha256(
    "\x1f".join([USER_TEXT, CAPTION_LINE, SCORING_RULES, *(f"{k}={v}" for k, v in CRITERIA.items())]).encode()
).hexdigest()[:12]

_CAPTION_MARK = "\ue000caption\ue000"
_CRITERION_MARK = "\ue000criterion\ue000"
_DIGITS = tuple(str(d) for d in range(10))


def metric_prompt(metric: str) -> str:
    """The only per-metric text: its criterion (the rules are in the shared prefix)."""
    return CRITERIA[metric]


# --- reading scores: pure functions over probability tables -------------------------------


def whole_number_expectation(probs: np.ndarray) -> tuple[float, float]:
    """Expected score and valid mass from the probabilities of the tokens "0".."100"."""
    probs = np.asarray(probs, dtype=np.float64)
    mass = float(probs.sum())
    if mass <= 0:
        return math.nan, 0.0
    return float((np.arange(101) * probs).sum() / mass), mass


def digit_split_expectation(first: np.ndarray, second: np.ndarray, after_ten: np.ndarray) -> tuple[float, float]:
    """Expected score and valid mass for one-digit-per-token tokenizers (module docstring).

    ``first[d]`` = P1(d); ``second[d, e]`` = P2(e | d) (row 0 unused); ``after_ten[e]`` =
    P3(e | "10"). Probabilities of digit tokens only; "end" is the rest.
    """
    first, second, after_ten = (np.asarray(a, dtype=np.float64) for a in (first, second, after_ten))
    scores = np.zeros(101)
    scores[0] = first[0]
    for d in range(1, 10):
        scores[d] = first[d] * (1.0 - second[d].sum())
        scores[10 * d:10 * d + 10] = first[d] * second[d]
    ten = first[1] * second[1, 0]
    scores[10] = ten * (1.0 - after_ten.sum())
    scores[100] = ten * after_ten[0]
    return whole_number_expectation(scores)


_SCORE_LINE = re.compile(r"^(?:score\s*[:=]?\s*)?(\d+(?:\.\d*)?)\s*(?:/\s*100)?\s*\.?$", re.IGNORECASE)


def parse_score(reply: str | None) -> tuple[float, str | None]:
    """MLM-Filter's tolerant first-line parser: (score, None) or (NaN, reason), never 0 by default."""
    if reply is None or not reply.strip():
        return math.nan, "empty reply"
    line = reply.strip().splitlines()[0].replace(",", "").replace(";", "").strip()
    match = _SCORE_LINE.match(line)
    if match is None:
        return math.nan, f"unparseable reply: {line[:40]!r}"
    value = float(match.group(1))
    if not 0 <= value <= 100:
        return math.nan, f"score out of range: {value:g}"
    return value, None


# --- model plumbing ------------------------------------------------------------------------


@dataclass
class _State:
    """A batch of sequences in the KV cache: which cached columns each row may attend to,
    and the text position its next token takes."""

    cache: object
    visible: torch.Tensor  # [rows, cached columns] bool
    next_pos: torch.Tensor  # [rows] long


class _ScoreTokens:
    """How numbers 0-100 are tokenized: one token each ("whole") or one per digit ("digits")."""

    def __init__(self, tokenizer):
        encoded = [tokenizer.encode(str(n), add_special_tokens=False) for n in range(101)]
        digit_ids = [tokenizer.encode(d, add_special_tokens=False) for d in _DIGITS]
        if all(len(ids) == 1 for ids in encoded):
            self.kind, self.ids = "whole", [ids[0] for ids in encoded]
        elif all(len(ids) == 1 for ids in digit_ids) and all(
            ids == [digit_ids[int(c)][0] for c in str(n)] for n, ids in enumerate(encoded)
        ):
            self.kind, self.ids = "digits", [ids[0] for ids in digit_ids]
        else:
            raise ValueError(
                "this tokenizer writes numbers neither one token per digit nor one token per number; "
                "scores cannot be read from logits: use mode='generate'"
            )


class MlmFilterScorer(Scorer):
    needs_images = True

    def __init__(self, model: str, *, metrics=METRICS, mode: str = "logits", device: str | None = None,
                 dtype=None, batch_size: int = 4, max_new_tokens: int = 4, trust_remote_code: bool = False,
                 min_mass: float = 0.05, name: str = "mlm"):
        unknown = set(metrics) - set(CRITERIA)
        if unknown or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of {METRICS}; got {tuple(metrics)}")
        if mode not in ("logits", "generate"):
            raise ValueError(f"mode must be 'logits' or 'generate', got {mode!r}")
        self.name, self.metrics, self.mode = name, tuple(metrics), mode
        self.version = f"1:{model}:{mode}:{prompt_hash}"
        self.columns = tuple(c for m in self.metrics for c in (f"{name}_{m}", f"{name}_{m}_error"))
        self.batch_size, self.max_new_tokens, self.min_mass = batch_size, max_new_tokens, min_mass
        self.model, self.processor = load_vlm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        self.tokenizer = self.processor.tokenizer
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self._prefix_template, self._tail = self._split_template()
        self._image_token = getattr(self.processor, "image_token", None)
        if mode == "logits":
            self.score_tokens = _ScoreTokens(self.tokenizer)
            # The tokens appended after the cached prompt: all metrics (shared prefix), or only
            # the digit walk (a full prompt per metric).
            self._shared_tree = _Tree.build([self._suffix_token_ids(m) for m in self.metrics], self.score_tokens)
            self._walk_tree = _Tree.build([[]], self.score_tokens)

    # --- prompts ---

    def _split_template(self) -> tuple[str, str]:
        """Render the chat template once with markers: the part before the criterion holds the
        image, caption and scoring rules (the shared prefix); the tail closes the user turn and
        opens the assistant's."""
        text = USER_TEXT.format(caption_line=CAPTION_LINE.format(caption=_CAPTION_MARK),
                                rules=SCORING_RULES, criterion=_CRITERION_MARK)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        rendered = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prefix, _, tail = rendered.partition(_CRITERION_MARK)
        if _CAPTION_MARK not in prefix or not tail:
            raise ValueError("the chat template does not keep the prompt text verbatim; use another model")
        return prefix, tail

    def prefix_text(self, caption: str) -> str:
        caption = caption.strip()
        if self._image_token:
            caption = caption.replace(self._image_token, "")
        return self._prefix_template.replace(_CAPTION_MARK, caption)

    def suffix_text(self, metric: str) -> str:
        return metric_prompt(metric) + self._tail

    def _suffix_token_ids(self, metric: str) -> list[int]:
        """Suffix tokens as they appear inside the full prompt; the split must fall on a token
        boundary, or the shared prefix would not reproduce separate calls."""
        prefix = self.prefix_text("A dog runs on the grass.")
        alone = self.tokenizer(prefix)["input_ids"]
        full = self.tokenizer(prefix + self.suffix_text(metric))["input_ids"]
        if full[:len(alone)] != alone:
            raise ValueError("this tokenizer merges tokens across the caption/criterion boundary; "
                             "the shared prefix cannot be used: use mode='generate'")
        return full[len(alone):]

    # --- scoring ---

    def score(self, batch: PairBatch) -> pd.DataFrame:
        return self._score(batch, shared=True)

    def score_separate(self, batch: PairBatch) -> pd.DataFrame:
        """Logits mode without the shared prefix: one full prompt per metric (parity, benchmark)."""
        return self._score(batch, shared=False)

    def _score(self, batch: PairBatch, shared: bool) -> pd.DataFrame:
        n = len(batch)
        values = {m: np.full(n, np.nan) for m in self.metrics}
        errors: dict[str, list[str | None]] = {m: [None] * n for m in self.metrics}
        valid = []
        for i, (image, caption) in enumerate(zip(batch.images, batch.captions)):
            reason = "no image" if image is None else "no caption" if not (caption or "").strip() else None
            if reason:
                for m in self.metrics:
                    errors[m][i] = reason
            else:
                valid.append(i)
        for start in range(0, len(valid), self.batch_size):
            rows = valid[start:start + self.batch_size]
            images = [batch.images[i].convert("RGB") for i in rows]
            prefixes = [self.prefix_text(batch.captions[i]) for i in rows]
            if self.mode == "generate":
                results = self._generate(images, prefixes)
            elif shared:
                results = self._logits_shared(images, prefixes)
            else:
                results = self._logits_separate(images, prefixes)
            for m, scored in results.items():
                for row, (value, reason) in zip(rows, scored):
                    values[m][row], errors[m][row] = value, reason
        frame = {}
        for m in self.metrics:
            frame[f"{self.name}_{m}"] = values[m]
            frame[f"{self.name}_{m}_error"] = pd.Series(errors[m], dtype=object)
        return pd.DataFrame(frame)

    def _inputs(self, texts: list[str], images: list):
        inputs = self.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
        return {
            k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
            for k, v in inputs.items() if isinstance(v, torch.Tensor)
        }

    @torch.inference_mode()
    def _generate(self, images, prefixes) -> dict[str, list[tuple[float, str | None]]]:
        results = {}
        for m in self.metrics:
            inputs = self._inputs([p + self.suffix_text(m) for p in prefixes], images)
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            replies = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            results[m] = [parse_score(r) for r in replies]
        return results

    @torch.inference_mode()
    def _logits_shared(self, images, prefixes):
        """One prefill of the shared prefix, then every metric's suffix and digit tree as
        sibling branches of one more forward pass: two model calls per batch in all."""
        state, first = self._prefill(self._inputs(prefixes, images))
        tree = self._shared_tree
        scored = self._read(tree, self._run_tree(state, tree), first)
        return {m: [row[k] for row in scored] for k, m in enumerate(self.metrics)}

    @torch.inference_mode()
    def _logits_separate(self, images, prefixes):
        results = {}
        for m in self.metrics:
            state, first = self._prefill(self._inputs([p + self.suffix_text(m) for p in prefixes], images))
            tree = self._walk_tree
            results[m] = [row[0] for row in self._read(tree, self._run_tree(state, tree), first)]
        return results

    def _prefill(self, inputs) -> tuple[_State, torch.Tensor]:
        """Run a left-padded prompt batch; the model sets its own (possibly multimodal) positions."""
        inner = getattr(self.model, "model", None)
        if getattr(inner, "rope_deltas", None) is not None:
            inner.rope_deltas = None
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        mask = inputs["attention_mask"].bool()
        rope_deltas = getattr(inner, "rope_deltas", None)
        if rope_deltas is not None:  # M-RoPE (Qwen2-VL family): text resumes after the image grid
            next_pos = mask.sum(-1) + rope_deltas.view(-1).to(mask.device)
        else:  # 1-D RoPE: the model counted positions over the padded length
            next_pos = torch.full((mask.shape[0],), mask.shape[1], device=mask.device)
        state = _State(out.past_key_values, mask, next_pos.long())
        return state, out.logits[:, -1].float().softmax(-1)

    def _run_tree(self, state: _State, tree: _Tree) -> torch.Tensor | None:
        """Append ``tree`` to every row's cached prompt in one forward pass; the next-token
        probabilities of the score tokens at ``tree.keep`` [rows, len(keep), score tokens].

        An explicit 4-D mask says what each new token attends to (the row's real cached
        columns, its ancestors, itself) and explicit positions continue each row's text, which
        lets padding and sibling branches share the pass. Logits are computed for the read
        nodes only: with a 150k vocabulary the LM head would otherwise cost as much as the rest.
        """
        if not tree.ids:
            return None
        rows = state.visible.shape[0]
        ids = torch.tensor(tree.ids, device=self.device).expand(rows, -1)
        ancestors = tree.ancestors.to(self.device)
        allowed = torch.cat([state.visible[:, None, :].expand(-1, len(tree.ids), -1),
                             ancestors.expand(rows, -1, -1)], dim=-1)[:, None]
        if self.model.config._attn_implementation == "sdpa":
            mask = allowed
        else:
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        positions = state.next_pos[:, None] + tree.depth.to(self.device)[None]
        if getattr(getattr(self.model, "model", None), "rope_deltas", None) is not None:
            positions = positions[None].expand(3, -1, -1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=state.cache,
                         use_cache=True, logits_to_keep=torch.tensor(tree.keep, device=self.device))
        return out.logits.float().softmax(-1)[..., self.score_tokens.ids]

    def _read(self, tree: _Tree, probs: torch.Tensor | None, first: torch.Tensor) -> list[list[tuple]]:
        """Per row, one (score, reason) per branch of ``tree``."""
        first = first[:, self.score_tokens.ids].cpu().numpy()
        probs = probs.cpu().numpy() if probs is not None else None
        column = {node: k for k, node in enumerate(tree.keep)}

        def at(row, node):
            return first[row] if node < 0 else probs[row, column[node]]

        scored = []
        for row in range(first.shape[0]):
            out = []
            for last, branches, zero in tree.reads:
                if self.score_tokens.kind == "whole":
                    value, mass = whole_number_expectation(at(row, last))
                else:
                    second = np.vstack([np.zeros(10), *(at(row, b) for b in branches)])
                    value, mass = digit_split_expectation(at(row, last), second, at(row, zero))
                out.append((math.nan, f"low score-token mass ({mass:.3f})") if mass < self.min_mass
                           else (value, None))
            scored.append(out)
        return scored


@dataclass
class _Tree:
    """Tokens appended after the cached prompt, as a tree: each node sees its ancestors and
    itself, at position ``depth`` past the prompt. One branch per metric suffix; under each,
    for one-digit-per-token tokenizers, the nine first digits "1".."9" as siblings and "0"
    under "1" (the walk of ``digit_split_expectation``)."""

    ids: list[int]
    ancestors: torch.Tensor  # [nodes, nodes] bool, self included
    depth: torch.Tensor  # [nodes] long
    reads: list[tuple[int, list[int], int]]  # per branch: (last suffix node or -1 = prompt end, digit nodes, zero)
    keep: list[int]  # nodes whose next-token distribution is read

    @classmethod
    def build(cls, suffixes: list[list[int]], tokens: _ScoreTokens) -> _Tree:
        ids: list[int] = []
        parents: list[int] = []

        def add(token: int, parent: int) -> int:
            ids.append(token)
            parents.append(parent)
            return len(ids) - 1

        reads = []
        for suffix in suffixes:
            last = -1
            for token in suffix:
                last = add(token, last)
            if tokens.kind == "whole":
                reads.append((last, [], -1))
                continue
            branches = [add(tokens.ids[d], last) for d in range(1, 10)]
            reads.append((last, branches, add(tokens.ids[0], branches[0])))
        n = len(ids)
        ancestors = torch.eye(n, dtype=torch.bool)
        depth = torch.zeros(n, dtype=torch.long)
        for node, parent in enumerate(parents):
            if parent >= 0:
                ancestors[node] |= ancestors[parent]
                depth[node] = depth[parent] + 1
        keep = sorted({node for last, branches, zero in reads for node in (last, *branches, zero) if node >= 0})
        return cls(ids, ancestors, depth, reads, keep)
