"""The words MLM-Filter models are asked with: the authors' prompts, formats and score tokens.

The released checkpoints were fine-tuned on these exact strings, so a paraphrase
changes the scores. The metric prompts and instruction templates are copied verbatim
from MLM_Filter (github.com/Victorwz/MLM_Filter @ 7c4cd80,
``mlm_filter_scoring_datacomp_batch_inference.py`` for the LLaVA-1.5 checkpoint and
``..._v2.py`` for the Llama-3 and Qwen2.5 ones); the conversation formats from
LLaVA-Unified (github.com/Victorwz/LLaVA-Unified @ 144bc93, ``llava/conversation.py``).

MLM_Filter is under the MIT License:

    Copyright (c) 2025 Weizhi Wang

    Permission is hereby granted, free of charge, to any person obtaining a copy of this
    software and associated documentation files (the "Software"), to deal in the Software
    without restriction, including without limitation the rights to use, copy, modify,
    merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
    permit persons to whom the Software is furnished to do so, subject to the following
    conditions: The above copyright notice and this permission notice shall be included in
    all copies or substantial portions of the Software.
    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.

LLaVA-Unified is under the Apache License 2.0 (Copyright 2023 Haotian Liu and the
LLaVA-Unified authors); the conversation strings below are used unmodified.

The zero-shot set is this project's own paraphrase for other chat VLMs: the shared rules come before
the criterion, so more of the prompt is a prefix shared by the four metrics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

METRIC_NAMES = {"itm": "image_text_matching", "odf": "object_detail_fulfillment", "ctq": "caption_text_quality",
                "su": "semantic_understanding"}
METRICS = tuple(METRIC_NAMES)

# --- MLM_Filter, verbatim -------------------------------------------------------------------

_INSTRUCTION_V1 = """Text Caption: {caption}

{criteria} A higher score indicates higher level of {aspect}. Ensure that your scoring is nuanced and uses the entire range from 0 to 100, reflecting the subtle differences. The score should be given as an integer, with each number between 0 and 100 considered as a potential score, avoiding the tendency to round to multiples of 10.  Please first output a single line containing the value indicating the scores. In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias."""  # noqa: E501

_INSTRUCTION_V2 = """Text Caption: {caption}

{criteria} A higher score indicates higher level of {aspect}. Ensure that your scoring is nuanced and uses the entire range from 0 to 100, reflecting the subtle differences. The score should be given as an integer, with each number between 0 and 100 considered as a potential score, avoiding the tendency to round to multiples of 5 or 10. Please first output a single line containing the value indicating the scores. In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias."""  # noqa: E501

_CRITERIA = {
    "itm": "Please evaluate if the provided text caption accurately represents the main features and objects of the image. The caption doesn't need to detail every aspect of the image, but it should capture its primary theme. Rate the overall quality of the text caption's match to the image on a scale of 1-100, considering the criteria mentioned.",  # noqa: E501
    "odf": "Please evaluate the text caption to determine if it provides detailed descriptions of objects that align with the image. Specifically, assess if the caption sufficiently describes the color, size, position, shape, material, etc., of the objects. Afterward, rate the caption's overall accuracy in capturing object details from the image on a scale of 1-100, based on the criteria provided.",  # noqa: E501
    "ctq": "Please evaluate the text caption based on the following criteria: Grammatical Correctness, Diversity of Vocabulary (e.g., the range and uniqueness of words used), Fluency (e.g., smoothness and natural flow of sentences), Readability, Length, and Structure. Assign an overall quality score on a scale of 1-100.",  # noqa: E501
    "su": """Evaluate the given text caption in relation to its corresponding image. Your goal is to determine if the text caption provides additional semantic information that isn't readily apparent just from the image itself.

For example:

1. If the image mentions "a man" but the caption elaborates he is a "homeless man" or a "businessman," then the caption is enriching the semantic context.
2. If the caption introduces concepts like the mathematical tangent function, which require in-depth knowledge to deduce, it is imparting external semantics.
3. Captions revealing specific location addresses, festival details, or other nuanced data not easy to infer from the image also provide external semantic information.
4. Directly identifying specific entities in the image such as buildings, people, bird species, animal breeds, car models, engines, etc., in the caption introduces additional insights.
5. Should the image act as a contextual backdrop and the caption describes elements not explicitly showcased in the image, it has semantic depth.
6. Lastly, if the caption depicts relationships between the subjects in the image, which need commonsense knowledge to understand, it should be considered semantically rich.

Please assess and determine the extent of semantic enrichment the caption provides over the image. Rate the text caption's semantic depth on a scale from 1 to 100.""",  # noqa: E501
}

# --- LLaVA-Unified conversation formats, verbatim ---------------------------------------------

_VICUNA_SYSTEM_HUMAN = ("A chat between a curious human and an artificial intelligence assistant. "
                        "The assistant gives helpful, detailed, and polite answers to the human's questions.")
_VICUNA_SYSTEM_USER = ("A chat between a curious user and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the user's questions.")
_QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant"


@dataclass(frozen=True)
class Conversation:
    """One user turn and the opening of the assistant's, as LLaVA-Unified's ``get_prompt``
    renders it (separator styles TWO and MPT), with the image at the start of the turn."""

    name: str
    system: str
    user: str
    assistant: str
    style: str  # "two": role + ": " + message, joined by sep; "mpt": role + message + sep

    def render(self, message: str) -> str:
        message = "<image>\n" + message
        if self.style == "two":
            return f"{self.system} {self.user}: {message} {self.assistant}:"
        return f"{self.system}<|im_end|>{self.user}{message}<|im_end|>{self.assistant}"


CONVERSATIONS = {
    "llava_v1": Conversation("llava_v1", _VICUNA_SYSTEM_HUMAN, "USER", "ASSISTANT", "two"),
    "llama_3": Conversation("llama_3", _VICUNA_SYSTEM_USER, "USER", "ASSISTANT", "two"),
    "qwen_instruct": Conversation("qwen_instruct", _QWEN_SYSTEM, "<|im_start|>user\n", "<|im_start|>assistant\n",
                                  "mpt"),
}


@dataclass(frozen=True)
class PromptSet:
    """How one checkpoint family is asked: instruction template, conversation, the token the
    reference appends after the prompt, and how many tokens it decodes greedily."""

    name: str
    instruction: str
    conversation: str | None  # a CONVERSATIONS key; None = the processor's chat template
    append: str | None  # "sentencepiece": the "▁" piece (v1 script's 29871); "space": tokenizer(" ")[-1]
    max_new_tokens: int

    def text(self, caption: str, metric: str) -> str:
        if self.conversation is None:
            return ZERO_SHOT_USER.format(caption=caption, criterion=ZERO_SHOT_CRITERIA[metric])
        return self.instruction.format(caption=caption, criteria=_CRITERIA[metric],
                                       aspect=METRIC_NAMES[metric].replace("_", " "))

    def prompt(self, caption: str, metric: str) -> str:
        return CONVERSATIONS[self.conversation].render(self.text(caption, metric))

    @property
    def hash(self) -> str:
        parts = [self.name, self.instruction, str(self.conversation), str(self.append), str(self.max_new_tokens)]
        parts += [f"{m}={self.text('{caption}', m)}" for m in METRICS]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


# --- the zero-shot paraphrase, for other chat VLMs -----------------------------------------

ZERO_SHOT_USER = ("Text Caption: {caption}\n\n"
                  "Give a score from 0 to 100, where 0 is the worst and 100 the best, and use the whole range. "
                  "Write the integer score alone on the first line of your reply.\n{criterion}")
ZERO_SHOT_CRITERIA = {
    "itm": ("Judge how well the caption matches the image: does it name the main objects and capture the "
            "overall theme of the picture?"),
    "odf": ("Judge how well the caption describes the details of the objects in the image: are their colour, "
            "size, position, shape and material stated, and stated correctly?"),
    "ctq": ("Judge the caption as a piece of text: its grammar, choice of words, fluency, readability, and "
            "whether its length suits the image."),
    "su": ("Judge how much understanding the caption adds beyond what the pixels show: names of people or "
           "places, events, species or other knowledge that fits the image."),
}

PROMPT_SETS = {
    # LLaVA-1.5 / Vicuna-13B checkpoint: the v1 batch script (appends 29871, the "▁" piece; 2 tokens)
    "llava_v1": PromptSet("llava_v1", _INSTRUCTION_V1, "llava_v1", "sentencepiece", 2),
    # Llama-3 checkpoints: the v2 script (numbers are single tokens: 1 token)
    "llama_3": PromptSet("llama_3", _INSTRUCTION_V2, "llama_3", "space", 1),
    # Qwen2.5 checkpoint: the v2 script (one digit per token: 2 tokens, so "100" reads "10", as the paper's)
    "qwen_instruct": PromptSet("qwen_instruct", _INSTRUCTION_V2, "qwen_instruct", "space", 2),
    # other chat VLMs: the project's paraphrase through the processor's chat template
    "zero_shot": PromptSet("zero_shot", ZERO_SHOT_USER, None, None, 4),
}
