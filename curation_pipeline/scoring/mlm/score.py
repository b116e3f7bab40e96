"""Reading an MLM-Filter score: expected values over digit probabilities, and the replies' parsers.
Pure functions, so the math is tested on hand-made numbers."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Below this probability on the score tokens a metric is unknown (NaN), not an expectation over noise: the
# default of the scorer and of the settings that build it
MIN_SCORE_MASS = 0.05


def whole_number_expectation(probs: np.ndarray) -> tuple[float, float]:
    """Expected score and valid mass from the probabilities of the tokens "0".."100"."""
    probs = np.asarray(probs, dtype=np.float64)
    mass = float(probs.sum())
    if mass <= 0:
        return math.nan, 0.0
    return float((np.arange(101) * probs).sum() / mass), mass


def digit_split_expectation(first: np.ndarray, second: np.ndarray, after_ten: np.ndarray) -> tuple[float, float]:
    """Expected score and valid mass for one-digit-per-token tokenizers.

    ``first[d]`` = P1(d); ``second[d, e]`` = P2(e | d) (row 0 unused); ``after_ten[e]`` =
    P3(e | "10"). Probabilities of digit tokens only; "end" is the rest. P(0) = P1(0),
    P(d) = P1(d) P2(end | d), P(de) = P1(d) P2(e | d), P(10) = P1(1) P2(0 | 1) P3(end | 10),
    P(100) = P1(1) P2(0 | 1) P3(0 | 10); a digit string no valid score extends counts as complete.
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


_SCORE_LINE = re.compile(r"^(?:score\s*[:=]?\s*)?(\d+(?:\.\d*)?)\s*(?:/\s*100|%|out\s+of\s+100)?\s*\.?$",
                         re.IGNORECASE)
# the revision of parse_score, part of a zero-shot scorer's version (2: markdown emphasis, "85%", "85 out of 100")
PARSE_VERSION = "2"


def parse_score(reply: str | None) -> tuple[float, str | None]:
    """MLM-Filter's tolerant first-line parser: (score, None) or (NaN, reason), never 0 by default."""
    if reply is None or not reply.strip():
        return math.nan, "empty reply"
    # a chat model's markdown emphasis (**85**, __Score:__ 85) is no part of the score
    line = re.sub(r"[*_`]", "", reply.strip().splitlines()[0]).replace(",", "").replace(";", "").strip()
    match = _SCORE_LINE.match(line)
    if match is None:
        return math.nan, f"unparseable reply: {line[:40]!r}"
    value = float(match.group(1))
    if not 0 <= value <= 100:
        return math.nan, f"score out of range: {value:g}"
    return value, None


# Released prompt sets whose reference script strips the reply before storing it: MLM_Filter @ 7c4cd80
# ``mlm_filter_scoring_datacomp_batch_inference.py`` (LLaVA-1.5) stores ``output.strip().strip("</s>")``;
# its ``_v2`` script (Llama-3, Qwen2.5) stores the decoded text as it is.
STRIPPED_BY_SCRIPT = frozenset({"llava_v1"})


def parse_reference_score(reply: str | None, prompt_set: str) -> tuple[float, str | None]:
    r"""A released checkpoint's greedy reply as the authors' pipeline reads it: the string their scoring
    script for ``prompt_set`` stores (``STRIPPED_BY_SCRIPT``), then Open-Qwen2VL @ 0d76f9f
    ``data_filtering/baselines/apply_filter.py`` ``above_threshold_decision``: the first line (split only
    on "\n", not stripped first, so "\n57" from a v2 script is unknown), ``.strip(",").strip(";")`` at the
    ends only, then Python's ``int()`` (surrounding whitespace, a sign, "_" and non-ASCII digits included).
    Where ``int()`` fails the score is unknown (NaN with the reason, never 0), which no threshold keeps,
    as theirs. No range check: an int outside 0-100 ("150", one Llama-3 token) is kept, as the authors
    keep it (it passes SU >= 85), so ``mlm_<metric>`` declares no range."""
    if reply is None:
        return math.nan, "empty reply"
    text = reply.strip().strip("</s>") if prompt_set in STRIPPED_BY_SCRIPT else reply
    if "\n" in text:
        text = text.split("\n")[0]
    text = text.strip(",").strip(";")
    try:
        value = int(text)
    except ValueError:
        if not reply.strip():
            return math.nan, "empty reply"
        return math.nan, (f"unparseable reply: {text[:40]!r}" if text.strip()
                          else f"empty first line: {reply[:40]!r}")
    try:
        return float(value), None
    except OverflowError:  # beyond float: the authors' int compares above (or below) any threshold
        return (math.inf if value > 0 else -math.inf), None


def strip_space_piece(ids: list[int], tokenizer) -> list[int]:
    """SentencePiece writes "8" as "▁", "8": the reference appends that "▁" to the prompt,
    so the score's own tokens are what follows it."""
    if len(ids) > 1 and tokenizer.convert_ids_to_tokens(ids[0]) in ("▁", " "):
        return ids[1:]
    return ids


class ScoreTokens:
    """How numbers 0-100 are tokenized: one token each ("whole") or one per digit ("digits")."""

    def __init__(self, tokenizer):
        encoded = [strip_space_piece(tokenizer.encode(str(n), add_special_tokens=False), tokenizer)
                   for n in range(101)]
        digit_ids = encoded[:10]
        if all(len(ids) == 1 for ids in encoded):
            self.kind, self.ids = "whole", [ids[0] for ids in encoded]
        elif all(len(ids) == 1 for ids in digit_ids) and all(
            ids == [digit_ids[int(c)][0] for c in str(n)] for n, ids in enumerate(encoded)
        ):
            self.kind, self.ids = "digits", [ids[0] for ids in digit_ids]
        else:
            raise ValueError("this tokenizer writes numbers neither one token per digit nor one token per number; "
                             "scores cannot be read from logits: use mode='generate'")


class GeneratedOnlyPenalty:
    """transformers' repetition penalty restricted to the tokens generated after ``start``: the
    reference generates from embeddings, so its penalty never sees the prompt."""

    def __init__(self, start: int, penalty: float):
        self.start, self.penalty = start, penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        generated = input_ids[:, self.start:]
        if self.penalty == 1.0 or generated.shape[1] == 0:
            return scores
        picked = torch.gather(scores, 1, generated)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, generated, picked)
