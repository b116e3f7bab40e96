"""MLM-Filter's four quality metrics (arXiv 2403.02677): the released checkpoints, or any chat VLM zero-shot.

Released checkpoints (``models/released.py``) are asked exactly as the authors' scripts ask them
(``prompts.PROMPT_SETS``); chat VLMs through their chat template and ``prompt_set="zero_shot"``.
In ``mode="logits"`` (default) one forward pass gives two columns per metric: ``<name>_<metric>``,
the greedy integer the reference decodes (the paper's thresholds are set on it), and
``<name>_<metric>_expected``, the expected score under the model's distribution. The shared
image+caption prefix is prefilled once; every metric's suffix and the score's digit walk run on
top of the KV cache as sibling branches of a token tree. A greedy reply that leaves the tree is
decoded by ``generate``, so the greedy column is exact in float32. In half precision (float16, bfloat16)
the cached prefix and the tree round otherwise than one pass over the whole prompt, and a near-tie can
decode another integer (the tests' random tiny checkpoints: 19 against 24 in bfloat16, 34 against 81 in
float16): ``mode="generate"`` decodes every metric as the reference does.
Digit-per-token tokenizers (Qwen2, SmolLM) need the digit walk of ``digit_split_expectation``
("100" is three tokens); one-token-per-number tokenizers read ``P(s) = P1(token s)``.

Parity with the authors' code is parity with their scripts run at batch size 1. MLM_Filter's batch
scripts left-pad a batch and pass no ``attention_mask`` to ``generate``, so the pad tokens are embedded
and attended and a pair's score depends on the captions it was batched with. Here padding is masked: in float32
every pair scores as the reference scores it alone, whatever ``batch_size``. In half precision a batch's
shapes change the rounding too (the padded length, the kernels chosen), so a near-tie can still decode
another integer than alone (the tiny checkpoints: 77 against 21, a few pairs in a hundred; a trained
model's scores are rarely that flat): ``dtype: float32``, or ``batch_size: 1`` with ``mode: generate``
in the reference's float16, for cuts that never move.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from curation_pipeline.models.aspect import model_input
from curation_pipeline.models.loading import (ModelUnavailableError, cache_argument, inference_mode, load_vlm,
                                              model_ident, output_cache)
from curation_pipeline.models.released import (ReleasedModel, converted_from, load_released, read_config,
                                               released_layout)
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer, scorable
from curation_pipeline.scoring.columns import ScoreColumn, error_column
from curation_pipeline.scoring.mlm.prompts import METRICS, PROMPT_SETS, ZERO_SHOT_CRITERIA, PromptSet
from curation_pipeline.scoring.mlm.score import (MIN_SCORE_MASS, PARSE_VERSION, GeneratedOnlyPenalty, ScoreTokens,
                                                 digit_split_expectation, parse_reference_score, parse_score,
                                                 whole_number_expectation)
from curation_pipeline.scoring.mlm.tree import TokenTree, TreeState

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_CAPTION_MARK = "\ue000caption\ue000"
IMAGE_TOKEN = "<image>"  # where LLaVA's tokenizer_image_token splices the image into a released prompt
_CRITERION_MARK = "\ue000criterion\ue000"
# The reference scripts truncate the tokenized prompt (image as one token) to this length; the model
# then cuts the expanded sequence to the checkpoint's tokenizer_model_max_length (ReleasedModel.max_length).
REFERENCE_MAX_LEN = 2040


def _mlm_outputs(name: str = "mlm", metrics=METRICS) -> tuple[ScoreColumn, ...]:
    return tuple(c for m in metrics for c in (
        # no range: a released checkpoint's reply is read as the authors read it (score.parse_reference_score),
        # and they keep an integer outside 0-100 ("150" passes SU >= 85); thresholds are still set on 0-100
        ScoreColumn(f"{name}_{m}", f"MLM-Filter {m.upper()}, asked for 0-100: the greedy integer as its reference "
                    "reads it (released checkpoints: kept outside 0-100, as the authors keep it).", scale=(0, 100)),
        ScoreColumn(f"{name}_{m}_expected", f"MLM-Filter {m.upper()}: the expected score over the score tokens "
                    "(same forward pass).", range=(0, 100)),
        error_column(f"{name}_{m}")))


class MlmFilterScorer(Scorer):
    name = "mlm"  # an instance's own: its columns' prefix
    version = "6"  # the code's; an instance's adds its model, prompts and precision (``__init__``)
    needs_images = True
    outputs = _mlm_outputs()  # every metric; an instance writes the metrics it was asked for

    @classmethod
    def profile_columns(cls, profile) -> tuple[str, ...]:
        return tuple(c.name for c in _mlm_outputs(metrics=tuple(profile.mlm_metrics)))  # the metrics asked for

    @classmethod
    def from_profile(cls, profile) -> "MlmFilterScorer":
        return cls(profile.mlm_model, metrics=tuple(profile.mlm_metrics), mode=profile.mlm_mode, device=profile.device,
                   min_mass=profile.mlm_min_mass, batch_size=profile.batch_size, prompt_set=profile.mlm_prompt_set,
                   vision_tower=profile.mlm_vision_tower, pad_to_square=profile.mlm_pad_to_square,
                   dtype=profile.mlm_dtype, trust_remote_code=profile.mlm_model in profile.trust_remote_code)

    def __init__(self, model: str, *, metrics=METRICS, mode: str = "logits", prompt_set: str | None = None,
                 vision_tower: str | None = None, pad_to_square: bool | None = None, device: str | None = None,
                 dtype=None, batch_size: int = 4, max_new_tokens: int | None = None,
                 trust_remote_code: bool = False, min_mass: float = MIN_SCORE_MASS, name: str = "mlm"):
        unknown = set(metrics) - set(METRICS)
        if unknown or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of {METRICS}; got {tuple(metrics)}")
        if mode not in ("logits", "generate"):
            raise ValueError(f"mode must be 'logits' or 'generate', got {mode!r}")
        if batch_size < 1:  # a negative one would score no pair and give no reason
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if prompt_set is not None and prompt_set not in PROMPT_SETS:
            raise ValueError(f"prompt_set must be one of {sorted(PROMPT_SETS)}, got {prompt_set!r}")
        self.name, self.metrics, self.mode = name, tuple(metrics), mode
        self.batch_size, self.min_mass = batch_size, min_mass
        self.released: ReleasedModel | None = None
        if written := converted_from(model):  # else scored silently with the zero-shot paraphrase, or refused vaguely
            raise ModelUnavailableError(model, f"`curate convert-model` wrote it from {written.get('source')!r} for "
                                               "transformers and vLLM: it keeps neither the authors' prompt format "
                                               "nor a chat template; give the original checkpoint")
        if released_layout(read_config(model)) is not None:
            if prompt_set is not None and PROMPT_SETS[prompt_set].conversation is None:  # before a load
                raise ValueError(f"prompt_set {prompt_set!r} is for chat VLMs (the processor's chat template); "
                                 f"{model!r} is a released checkpoint: leave prompt_set unset for its own format")
            self.released = load_released(model, vision_tower=vision_tower, device=device, dtype=dtype)
            if self.released.family == "aitqe":
                raise ValueError(f"{model!r} is an AITQE checkpoint: use it as the rewriter (kind aitqe), "
                                 "not as an MLM-Filter scorer")
            self.model, self.tokenizer, self.processor = self.released.model, self.released.tokenizer, None
            self.prompts: PromptSet = PROMPT_SETS[prompt_set or self.released.family]
            # MLM_Filter's scoring scripts hand images to the processor as they are, whatever the
            # checkpoint's image_aspect_ratio says; padding to a square is opt-in.
            self.pad_to_square = bool(pad_to_square)
        else:
            if prompt_set not in (None, "zero_shot"):
                raise ValueError(f"prompt_set {prompt_set!r} needs a released MLM-Filter checkpoint; {model!r} is "
                                 "a chat VLM: use prompt_set='zero_shot'")
            self.model, self.processor = load_vlm(model, device=device, dtype=dtype,
                                                  trust_remote_code=trust_remote_code)
            self.tokenizer = self.processor.tokenizer
            self.prompts = PROMPT_SETS["zero_shot"]
            self._prefix_template, self._tail = self._split_template()
            self._image_token = getattr(self.processor, "image_token", None)
        self.max_new_tokens = max_new_tokens or self.prompts.max_new_tokens
        self.prompt_hash = self.prompts.hash
        self.columns = tuple(c.name for c in _mlm_outputs(name, self.metrics))
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        # 4: long captions cut as the reference cuts them; a precision other than float32 is part of it
        # (scores in float16 and bfloat16 differ), as CLIP's version carries its own; 5: rotated (EXIF) and
        # transparent images reach the model as the reference decodes them (shards.reader.model_image); 6: released
        # replies read exactly as the authors' reader (first line unstripped for the v2 scripts, "," ";" at the ends
        # only, ints outside 0-100 kept)
        precision = [] if str(self.dtype) == "torch.float32" else [str(self.dtype).removeprefix("torch.")]
        if self.released and precision and (mode == "logits" or batch_size > 1):
            self.caveats = (
                f"{model_ident(model)} runs in {precision[0]} with mlm.mode {mode!r} and batch_size {batch_size}: "
                "its integers are the authors' in float32 only (a cached prefix, a tree of score tokens or the "
                "batch's padding rounds otherwise than their one pass per pair and metric, so a near-tie can read "
                "one integer off): set mlm.dtype: float32, or mlm.mode: generate with batch_size: 1, where a cut "
                "must match theirs",)
            log.warning(self.caveats[0])
        # a chat VLM's replies are read by parse_score, the released checkpoints' as their authors read them
        parser = [] if self.released else [f"parse{PARSE_VERSION}"]
        self.version = ":".join([f"{MlmFilterScorer.version}:{model_ident(model)}:{mode}:{self.prompts.name}",
                                 f"{self.prompts.hash}:{self.max_new_tokens}", *precision, *parser])
        self._suppressed = self.released.suppressed if self.released else []
        self._penalty = self.released.repetition_penalty if self.released else 1.0
        if self.released:
            self._appended = self._appended_token()
            self._canonical = self._split_released(self._released_ids("A dog runs on the grass."))[1]
        if mode == "logits":
            self.score_tokens = ScoreTokens(self.tokenizer)
            suffixes = ([self._canonical[m] for m in self.metrics] if self.released
                        else [self._suffix_token_ids(m) for m in self.metrics])
            # The tokens appended after the cached prompt: all metrics (shared prefix), or only
            # the digit walk (a full prompt per metric).
            self._shared_tree = TokenTree.build(suffixes, self.score_tokens)
            self._walk_tree = TokenTree.build([[]], self.score_tokens)

    # --- prompts: released checkpoints ---

    def _appended_token(self) -> int:
        """The token the reference appends after the prompt, so the score's digits come next."""
        if self.prompts.append == "sentencepiece":
            piece = self.tokenizer.convert_tokens_to_ids("▁")
            if piece is None or piece == self.tokenizer.unk_token_id:
                raise ValueError("this tokenizer has no SentencePiece '▁' piece for the llava_v1 prompt set")
            return piece
        return self.tokenizer(" ")["input_ids"][-1]

    def _released_ids(self, caption: str) -> dict[str, list[int]]:
        """Each metric's prompt as LLaVA's ``tokenizer_image_token`` tokenizes it (chunks around "<image>"
        alone, BOS kept only on the first), truncated as the scripts do, image expanded, whitespace appended;
        then, as LLaVA-Unified's ``prepare_inputs_labels_for_multimodal``, the expanded row cut to the
        checkpoint's ``tokenizer_model_max_length``: a long caption loses the prompt's end (the criterion's
        tail, "ASSISTANT:", the whitespace token) and is scored where the cut falls, exactly as the reference.
        Such rows differ from the canonical metric suffixes, so ``_logits`` scores them one full prompt each."""
        out = {}
        for m in self.metrics:
            chunks = [self.tokenizer(c)["input_ids"] for c in self.prompts.prompt(caption, m).split(IMAGE_TOKEN)]
            bos = self.tokenizer.bos_token_id
            offset = 1 if chunks and chunks[0] and bos is not None and chunks[0][0] == bos else 0
            ids: list[int] = [chunks[0][0]] if offset else []
            for k, chunk in enumerate(chunks):
                if k:
                    ids.append(-1)
                ids.extend(chunk[offset:])
            ids = ids[:REFERENCE_MAX_LEN]
            expanded: list[int] = []
            for token in ids:
                expanded.extend([self.released.image_token_id] * self.released.image_tokens if token == -1
                                else [token])
            out[m] = (expanded + [self._appended])[:self.released.max_length]
        return out

    def _split_released(self, full: dict[str, list[int]]) -> tuple[list[int], dict[str, list[int]]]:
        """The tokens all metrics share (image and caption first) and each metric's rest."""
        seqs = list(full.values())
        n = min(len(s) for s in seqs)
        common = next((k for k in range(n) if len({s[k] for s in seqs}) > 1), n)
        if len(seqs) == 1:  # one metric: keep the last token out, so the prefill reads something
            common = n - 1
        return seqs[0][:common], {m: s[common:] for m, s in full.items()}

    # --- prompts: zero-shot chat VLMs ---

    def _split_template(self) -> tuple[str, str]:
        """The chat template rendered with markers, split at the criterion: the shared prefix (image,
        caption, rules) and the tail that opens the assistant's turn."""
        text = self.prompts.instruction.format(caption=_CAPTION_MARK, criterion=_CRITERION_MARK)
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
        return ZERO_SHOT_CRITERIA[metric] + self._tail

    def _suffix_token_ids(self, metric: str) -> list[int]:
        """Suffix tokens inside the full prompt; the split must fall on a token boundary for the prefix to be shared."""
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
        expected = {m: np.full(n, np.nan) for m in self.metrics}
        valid, reasons = scorable(batch)
        if self.released:
            # LLaVA's tokenizer_image_token splits the prompt at every "<image>": the reference fails on
            # such a caption (one image, two slots: IndexError), and so would the model here. Not stripped:
            # that would score a caption the reference never scores.
            for i in valid:
                if IMAGE_TOKEN in batch.captions[i]:
                    reasons[i] = f"caption holds the image token {IMAGE_TOKEN}"
            valid = [i for i in valid if reasons[i] is None]
        errors = {m: list(reasons) for m in self.metrics}
        for start in range(0, len(valid), self.batch_size):
            rows = valid[start:start + self.batch_size]
            images = [batch.images[i].convert("RGB") for i in rows]
            captions = [batch.captions[i] for i in rows]
            if self.mode == "generate":
                results = self._generate(images, captions)
            else:
                results = self._logits(images, captions, shared)
            for m, scored in results.items():
                for row, (value, mean, reason) in zip(rows, scored):
                    values[m][row], expected[m][row], errors[m][row] = value, mean, reason
        return pd.DataFrame({column: data for m in self.metrics for column, data in (
            (f"{self.name}_{m}", values[m]), (f"{self.name}_{m}_expected", expected[m]),
            (f"{self.name}_{m}_error", pd.Series(errors[m], dtype=object)))})

    # --- model inputs ---

    def _chat_inputs(self, texts: list[str], images: list):
        import torch

        image_processor = getattr(self.processor, "image_processor", None)
        # one list per prompt: SmolVLM's processor reads a flat list as one prompt's images (the others: the same)
        images = [[model_input(im, image_processor)] for im in images]  # as the other model paths
        inputs = self.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
        return {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def _id_inputs(self, sequences: list[list[int]], images: list):
        """Left-padded token ids with the reference's pixel values."""
        import torch

        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for k, seq in enumerate(sequences):
            ids[k, width - len(seq):] = torch.tensor(seq)
            mask[k, width - len(seq):] = 1
        pixels = self.released.pixel_values(images, pad=self.pad_to_square)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "pixel_values": pixels.to(self.device, self.dtype)}

    def _full_inputs(self, images, captions, metric):
        if self.released:
            return self._id_inputs([self._released_ids(c)[metric] for c in captions], images)
        return self._chat_inputs([self.prefix_text(c) + self.suffix_text(metric) for c in captions], images)

    # --- generation ---

    @inference_mode
    def _generate(self, images, captions) -> dict[str, list[tuple]]:
        return {m: [(value, math.nan, reason) for value, reason in
                    map(self._parse, self._greedy_replies(images, captions, m))] for m in self.metrics}

    def _greedy_replies(self, images, captions, metric) -> list[str]:
        inputs = self._full_inputs(images, captions, metric)
        extra = {"suppress_tokens": self._suppressed} if self._suppressed else {}
        if self.released:
            from transformers import LogitsProcessorList

            extra.update(repetition_penalty=1.0, logits_processor=LogitsProcessorList(
                [GeneratedOnlyPenalty(inputs["input_ids"].shape[1], self._penalty)]))
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, **extra)
        return self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _parse(self, reply: str) -> tuple[float, str | None]:
        return parse_reference_score(reply, self.prompts.name) if self.released else parse_score(reply)

    # --- logits ---

    @inference_mode
    def _logits(self, images, captions, shared: bool) -> dict[str, list[tuple]]:
        """Per metric, per row: (greedy score, expected score, reason)."""
        n = len(captions)
        results: dict[str, list] = {m: [None] * n for m in self.metrics}
        together, alone = list(range(n)), []
        if self.released and shared:
            prefixes = {}
            for k, caption in enumerate(captions):
                prefix, rest = self._split_released(self._released_ids(caption))
                if all(rest[m] == self._canonical[m] for m in self.metrics):
                    prefixes[k] = prefix
                else:  # truncation or a caption that merges into the criterion: separate prompts
                    alone.append(k)
            together = sorted(prefixes)
        elif not shared:
            together, alone = [], list(range(n))
        if together:
            if self.released:
                inputs = self._id_inputs([prefixes[k] for k in together], [images[k] for k in together])
            else:
                inputs = self._chat_inputs([self.prefix_text(captions[k]) for k in together],
                                           [images[k] for k in together])
            state, first = self._prefill(inputs)
            read = self._read(self._shared_tree, self._run_tree(state, self._shared_tree), first)
            for j, k in enumerate(together):
                for b, m in enumerate(self.metrics):
                    results[m][k] = read[j][b]
        for m in self.metrics:
            if not alone:
                break
            state, first = self._prefill(self._full_inputs([images[k] for k in alone], [captions[k] for k in alone], m))
            read = self._read(self._walk_tree, self._run_tree(state, self._walk_tree), first)
            for j, k in enumerate(alone):
                results[m][k] = read[j][0]
        return self._finish_greedy(results, images, captions)

    def _finish_greedy(self, results, images, captions) -> dict[str, list[tuple]]:
        """Decode greedy replies that left the tree (first token not a digit) with ``generate``."""
        out = {}
        for m in self.metrics:
            todo = [k for k, r in enumerate(results[m]) if r[0] is None]
            replies = dict(zip(todo, self._greedy_replies([images[k] for k in todo], [captions[k] for k in todo], m))
                           ) if todo else {}
            rows = []
            for k, (tokens, mean, low_mass) in enumerate(results[m]):
                value, reason = self._parse(replies[k] if tokens is None else
                                            self.tokenizer.decode(tokens, skip_special_tokens=True))
                # kept with the parse's: else a NaN expected score would have no reason
                rows.append((value, mean, "; ".join(filter(None, (reason, low_mass))) or None))
            out[m] = rows
        return out

    def _prefill(self, inputs) -> tuple[TreeState, torch.Tensor]:
        """Run a left-padded prompt batch (the model sets its own positions): the state and last logits."""
        import torch

        inner = getattr(self.model, "model", None)
        if getattr(inner, "rope_deltas", None) is not None:  # the last batch's; transformers 5.25 recomputes it on
            inner.rope_deltas = None  # any prefill with images anyway, versions that reuse a cached one would not
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        mask = inputs["attention_mask"].bool()
        rope_deltas = getattr(inner, "rope_deltas", None)
        if rope_deltas is not None:  # M-RoPE (Qwen2-VL family): text resumes after the image grid
            next_pos = mask.sum(-1) + rope_deltas.view(-1).to(mask.device)
        else:  # 1-D RoPE: the model counted positions over the padded length
            next_pos = torch.full((mask.shape[0],), mask.shape[1], device=mask.device)
        state = TreeState(output_cache(out), mask, next_pos.long())
        return state, out.logits[:, -1].float()

    def _run_tree(self, state: TreeState, tree: TokenTree) -> torch.Tensor | None:
        """Append ``tree`` to every row's cached prompt in one pass; logits at ``tree.keep`` [rows, keep, vocab].

        An explicit 4-D mask (cached columns, ancestors, self) and explicit positions let padding and
        sibling branches share the pass; logits only for read nodes (a 150k-vocabulary LM head is costly).
        """
        import torch

        if not tree.ids:
            return None
        rows = state.visible.shape[0]
        ids = torch.tensor(tree.ids, device=self.device).expand(rows, -1)
        ancestors = tree.ancestors.to(self.device)
        allowed = torch.cat([state.visible[:, None, :].expand(-1, len(tree.ids), -1),
                             ancestors.expand(rows, -1, -1)], dim=-1)[:, None]
        text_config = getattr(self.model.config, "text_config", None) or self.model.config
        if text_config._attn_implementation == "sdpa":
            mask = allowed
        else:
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        positions = state.next_pos[:, None] + tree.depth.to(self.device)[None]
        if getattr(getattr(self.model, "model", None), "rope_deltas", None) is not None:
            positions = positions[None].expand(3, -1, -1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         **{cache_argument(self.model): state.cache},
                         use_cache=True, logits_to_keep=torch.tensor(tree.keep, device=self.device))
        return out.logits.float()

    def _read(self, tree: TokenTree, logits: torch.Tensor | None, first: torch.Tensor) -> list[list[tuple]]:
        """Per row, per branch: (greedy tokens or None when they leave the tree, expected score, reason)."""
        if self._suppressed:
            first[:, self._suppressed] = -math.inf
            if logits is not None:
                logits[..., self._suppressed] = -math.inf
        ids = self.score_tokens.ids
        column = {node: k for k, node in enumerate(tree.keep)}
        first_probs, first_top = first.softmax(-1)[:, ids].cpu().numpy(), first.argmax(-1).cpu().numpy()
        probs = logits.softmax(-1)[..., ids].cpu().numpy() if logits is not None else None
        top = self._penalized(tree, logits, column).argmax(-1).cpu().numpy() if logits is not None else None
        eos = set(self._eos_ids())

        def at(row, node):
            return (first_probs[row], first_top[row]) if node < 0 else (probs[row, column[node]],
                                                                      top[row, column[node]])

        scored = []
        for row in range(first.shape[0]):
            out = []
            for last, branches, zero in tree.reads:
                p1, t1 = at(row, last)
                if self.score_tokens.kind == "whole":
                    value, mass = whole_number_expectation(p1)
                else:
                    second = np.vstack([np.zeros(10), *(at(row, b)[0] for b in branches)])
                    value, mass = digit_split_expectation(p1, second, at(row, zero)[0])
                mean = value if mass >= self.min_mass else math.nan
                out.append((self._greedy(row, int(t1), branches, zero, at, eos), mean,
                            None if mass >= self.min_mass else f"low score-token mass ({mass:.3f})"))
            scored.append(out)
        return scored

    def _penalized(self, tree: TokenTree, logits: torch.Tensor, column: dict) -> torch.Tensor:
        """The logits greedy decoding sees: the repetition penalty on the digits already written."""
        import torch

        if self._penalty == 1.0 or self.score_tokens.kind != "digits":
            return logits
        logits = logits.clone()
        ids = self.score_tokens.ids

        def penalize(node, token):
            value = logits[:, column[node], token]
            logits[:, column[node], token] = torch.where(value < 0, value * self._penalty, value / self._penalty)

        for _, branches, zero in tree.reads:
            for d, node in enumerate(branches, start=1):
                penalize(node, ids[d])
            for token in {ids[1], ids[0]}:
                penalize(zero, token)
        return logits

    def _greedy(self, row, t1, branches, zero, at, eos) -> list[int] | None:
        """The reference's greedy tokens where the tree holds them (first token, after a digit 1..9, after "10")."""
        tokens = [t1]
        if self.max_new_tokens == 1 or t1 in eos:
            return tokens
        if self.score_tokens.kind != "digits" or t1 not in self.score_tokens.ids[1:]:
            return None
        child = branches[self.score_tokens.ids.index(t1) - 1]
        t2 = int(at(row, child)[1])
        tokens.append(t2)
        if self.max_new_tokens >= 3 and t2 not in eos:
            if child != branches[0] or t2 != self.score_tokens.ids[0]:
                return None
            tokens.append(int(at(row, zero)[1]))
        return tokens

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        return [e for e in eos + [self.tokenizer.eos_token_id] if e is not None]
