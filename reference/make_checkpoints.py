"""Write tiny, deterministic, random checkpoints in the released MLM-Filter / AITQE layouts.

Two parts, each run in its own reference venv (see reference/setup_envs.sh):

    /work/refenv/llava/bin/python reference/make_checkpoints.py --part llava
    /work/refenv/aitqe/bin/python reference/make_checkpoints.py --part aitqe

``--part llava`` (transformers 4.51.2 + LLaVA-Unified) writes the test images, the two vision
towers, the three tokenizers and the three MLM-Filter checkpoints (built with LLaVA-Unified's own
classes and ``save_pretrained``).  ``--part aitqe`` (transformers 4.41.2 + AITQE's modeling_mm)
writes ``aitqe-tiny`` (it reuses the SigLIP tower and the Qwen2 BPE written by the llava part).

Everything lands in curation_pipeline_tests/fixtures/released/.  Nothing here is copied from the
reference repositories: their classes are imported from extracted checkouts under /work/refenv/src.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "curation_pipeline_tests" / "fixtures" / "released"
SRC = Path(os.environ.get("REFENV_SRC", "/work/refenv/src"))

CLIP_DIR = "clip-vit-tiny-patch8-32"
SIGLIP_DIR = "siglip-tiny-patch8-32"
LLAVA_DIR = "mlm-filter-llava-13b-tiny"
LLAMA3_DIR = "mlm-filter-llama-3-8b-tiny"
QWEN_DIR = "mlm-filter-qwen2.5-1.5b-tiny"
AITQE_DIR = "aitqe-tiny"

HIDDEN = 32
INTER = 64
LAYERS = 2
HEADS = 4
VISION_HIDDEN = 32
IMAGE_SIZE = 32
PATCH = 8

# Constant added to coordinate 0 of every token embedding.  Together with a larger coordinate 0
# in the lm_head rows of "score" tokens (digits, or the numbers 0..100 for Llama-3) this makes the
# score tokens usually win greedy decoding, while the random remainder decides *which* one wins.
EMBED_OFFSET = 6.0
CTX_GAIN = float(os.environ.get('CTX_GAIN', 1.5))
QK_SHARPEN = float(os.environ.get('QK_SHARPEN', 2.5))
BETA_LLAVA = float(os.environ.get('BETA_LLAVA', 1.4))
BETA_LLAMA3 = float(os.environ.get('BETA_LLAMA3', 1.4))
BETA_QWEN = float(os.environ.get('BETA_QWEN', 40.0))

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# --------------------------------------------------------------------------------------------
# corpus, images
# --------------------------------------------------------------------------------------------

def training_corpus() -> list[str]:
    sys.path.insert(0, str(SRC / "MLM_Filter"))
    import mlm_filter_scoring_datacomp_batch_inference as v1
    import mlm_filter_scoring_datacomp_batch_inference_v2 as v2

    texts = []
    for mod in (v1, v2):
        texts.append(mod.LLAVA_INSTRUCTION_TEMPLATE)
        for name in dir(mod):
            if name.startswith("criteria_"):
                texts.append(getattr(mod, name))
    texts += [
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions.",
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        "USER: ASSISTANT: system user assistant You are a helpful assistant",
        "a red bicycle leaning against a brick wall at sunset",
        "two dogs playing in the snow near a wooden fence",
        "Evaluate the caption: if score is low, give a short description of the image. "
        "Respond using a dictionary structure.",
        '{"Recaption": "A man stands in front of a checklist", "Overall Score": "2", '
        '"Overall Explanation": "The caption is vague.", "Text Quality Score": 3, '
        '"Image-Text Matching Score": 2, "Object Detail Score": 2, "Semantic Understanding Score": 2}',
        "image text caption quality score matching object detail semantic understanding",
    ]
    numbers = " ".join(str(i) for i in range(101))
    texts += [numbers] * 40
    texts += ["0123456789 9876543210 " * 5]
    return texts


def make_images() -> None:
    from PIL import Image

    d = OUT / "images"
    d.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(1234)
    for name, (w, h) in {"wide_48x32.png": (48, 32), "tall_30x44.png": (30, 44)}.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([255 * xx / (w - 1), 255 * yy / (h - 1), 128 + 100 * np.sin(xx / 3.0 + yy / 5.0)], -1)
        noise = rs.randint(-40, 41, size=(h, w, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr, "RGB").save(d / name)


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def reinit_(module: torch.nn.Module, gen: torch.Generator, embed_scale: float = 1.0) -> None:
    """Re-initialise with O(1) activations so every input token / pixel matters."""
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            if "embed_tokens" in name or "lm_head" in name:
                std = embed_scale if "embed_tokens" in name else 1.0 / math.sqrt(p.shape[1])
            elif "position_embedding" in name:
                std = 0.5
            elif "o_proj" in name or "down_proj" in name:
                std = CTX_GAIN / math.sqrt(fan_in)
            elif "q_proj" in name or "k_proj" in name:
                std = QK_SHARPEN / math.sqrt(fan_in)  # sharp attention: the score position attends to
                # a few specific tokens (image or text) instead of averaging ~500 positions
            else:
                std = 1.0 / math.sqrt(fan_in)
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        elif name.endswith("weight"):  # norms
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        else:  # e.g. class_embedding, probe, image_newline
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@torch.no_grad()
def bias_score_tokens_(embed: torch.Tensor, head: torch.Tensor, score_ids: list[int], gen: torch.Generator,
                       beta: float = 1.4) -> None:
    """embed/head: [vocab, hidden] (may be the same tensor when tied)."""
    embed[:, 0] = EMBED_OFFSET + 0.1 * torch.randn(embed.shape[0], generator=gen)
    if head.data_ptr() != embed.data_ptr():
        head[:, 0] = 0.1 * torch.randn(head.shape[0], generator=gen)
        base = 0.0
    else:
        base = EMBED_OFFSET
    for i in score_ids:
        head[i, 0] = base + beta * (0.95 + 0.1 * torch.rand((), generator=gen).item())


# --------------------------------------------------------------------------------------------
# vision towers
# --------------------------------------------------------------------------------------------

def make_clip_tower() -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    seed_all(11)
    cfg = CLIPVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=2 * VISION_HIDDEN, num_hidden_layers=2,
                           num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=VISION_HIDDEN,
                           hidden_act="quick_gelu")
    model = CLIPVisionModel(cfg)
    reinit_(model, torch.Generator().manual_seed(11))
    d = OUT / CLIP_DIR
    model.save_pretrained(d)
    proc = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True, do_resize=True, resample=3, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True)
    proc.save_pretrained(d)


def make_siglip_tower() -> None:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    seed_all(12)
    cfg = SiglipVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=2 * VISION_HIDDEN, num_hidden_layers=2,
                             num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
                             hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    model = SiglipVisionModel(cfg)
    reinit_(model, torch.Generator().manual_seed(12))
    d = OUT / SIGLIP_DIR
    model.save_pretrained(d)
    proc = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3, do_rescale=True,
                                rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
                                image_std=[0.5, 0.5, 0.5])
    proc.save_pretrained(d)
    # AITQE's data_processor.MMDataProcessor reads `image_processor.crop_size`, which a vanilla
    # SiglipImageProcessor does not have; an extra key in preprocessor_config.json becomes an
    # attribute (ImageProcessingMixin sets unknown kwargs), so the released tower must carry it.
    pc = d / "preprocessor_config.json"
    j = json.loads(pc.read_text())
    j["crop_size"] = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    pc.write_text(json.dumps(j, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------

def make_llama2_spm(d: Path) -> None:
    """Llama-2 style SentencePiece BPE: byte_fallback, split_digits, <unk>/<s>/</s> = 0/1/2."""
    import sentencepiece as spm

    tmp = OUT / "_spm_tmp"
    tmp.mkdir(exist_ok=True)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in training_corpus()) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp / "tokenizer"), vocab_size=512, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        split_by_unicode_script=True, split_by_number=True, split_by_whitespace=True,
        max_sentencepiece_length=16, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", num_threads=1, seed_sentencepiece_size=100000,
        shuffle_input_sentence=False, train_extremely_large_corpus=False, minloglevel=2,
    )
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp / "tokenizer.model", d / "tokenizer.model")
    shutil.rmtree(tmp)


def _bpe_tokenizer(regex: str, vocab_size: int, corpus: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def make_llama3_tokenizer(d: Path) -> list[int]:
    """Llama-3 layout: byte-level BPE + 256 special tokens at the end (3.1 naming)."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    n_bpe = 744
    tok = _bpe_tokenizer(LLAMA3_REGEX, n_bpe, training_corpus())
    assert tok.get_vocab_size() == n_bpe, tok.get_vocab_size()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(3, 256 - len(specials) + 3)]
    assert len(specials) == 256
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|finetune_right_pad_id|>", model_max_length=2048,
                                   padding_side="right", clean_up_tokenization_spaces=True,
                                   model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(d)
    # Meta's Llama-3 tokenizer_config.json names the class "PreTrainedTokenizerFast" (4.51's
    # save_pretrained strips the "Fast"); with "PreTrainedTokenizer" the builder's use_fast=False
    # would load an empty slow base tokenizer.
    tc = d / "tokenizer_config.json"
    j = json.loads(tc.read_text())
    j["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc.write_text(json.dumps(j, indent=2, ensure_ascii=False) + "\n")
    number_ids = []
    for i in range(101):
        ids = fast(str(i), add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (i, ids)
        number_ids.append(ids[0])
    return number_ids


QWEN25_SPECIALS = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
                   ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
                   ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
                   ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
                   ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
                   ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
                   ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
                   ("<|file_sep|>", False)]


def make_qwen_tokenizer(d: Path, specials: list[tuple[str, bool]], **kw):
    """Qwen2 layout: byte-level BPE with single-digit pre-tokenisation, NFC, added tokens after the BPE."""
    from tokenizers import AddedToken, normalizers, processors
    from transformers import Qwen2TokenizerFast

    n_bpe = 600
    tok = _bpe_tokenizer(QWEN2_REGEX, n_bpe, training_corpus())
    assert tok.get_vocab_size() == n_bpe
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for s, special in specials:  # in order, so ids follow the released numbering after the BPE vocab
        if special:
            tok.add_special_tokens([AddedToken(s, special=True, normalized=False)])
        else:
            tok.add_tokens([AddedToken(s, special=False, normalized=False)])
    fast = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                              pad_token="<|endoftext|>", errors="replace", split_special_tokens=False,
                              clean_up_tokenization_spaces=False, **kw)
    return fast


# --------------------------------------------------------------------------------------------
# MLM-Filter checkpoints (LLaVA-Unified classes)
# --------------------------------------------------------------------------------------------

class _Args:  # stands in for LLaVA-Unified's ModelArguments during initialize_vision_modules
    def __init__(self, **kw):
        self.__dict__.update(kw)


@torch.no_grad()
def decorrelate_score_rows_(model, tokenizer, score_ids: list[int], appended_id: int) -> None:
    """Remove from the score rows' random part the component along the *mean* final hidden state of
    scoring-like prompts, so which score token wins depends on the context (image, caption, metric)
    rather than on a fixed row.  Deterministic: text-only calibration prompts, no images."""
    sys.path.insert(0, str(SRC / "MLM_Filter"))
    import mlm_filter_scoring_datacomp_batch_inference_v2 as v2

    crit = [getattr(v2, n) for n in dir(v2) if n.startswith("criteria_")]
    caps = ["a red bicycle leaning against a brick wall at sunset", "two dogs playing in the snow",
            "image text caption quality"]
    hs = []
    was = model.training
    model.eval()
    for c in caps:
        for cr in crit:
            text = v2.LLAVA_INSTRUCTION_TEMPLATE.format(caption=c, criteria=cr, aspect="quality")
            ids = tokenizer(text).input_ids + [appended_id]
            out = model.get_model()(input_ids=torch.tensor([ids]))
            hs.append(out.last_hidden_state[0, -1])
    model.train(was)
    m = torch.stack(hs).mean(0)[1:]
    m = m / m.norm()
    head = model.lm_head.weight
    for i in score_ids:
        r = head[i, 1:].clone()
        n0 = r.norm()
        r = r - (r @ m) * m
        head[i, 1:] = r * (n0 / r.norm())


def _finish_llava(model, tokenizer, appended_id: int, d: Path, score_ids: list[int], seed: int, tie: bool,
                  train_cfg: dict, beta: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    vt = model.get_model().get_vision_tower()
    tower_state = {k: v.clone() for k, v in vt.vision_tower.state_dict().items()}
    reinit_(model, gen)
    vt.vision_tower.load_state_dict(tower_state)  # frozen tower == sibling tower, as in training
    emb = model.get_model().embed_tokens.weight
    head = model.lm_head.weight
    if tie:
        assert head.data_ptr() == emb.data_ptr()
    bias_score_tokens_(emb.data, head.data, score_ids, gen, beta=beta)
    decorrelate_score_rows_(model, tokenizer, score_ids, appended_id)
    for k, v in train_cfg.items():
        setattr(model.config, k, v)
    model.config.use_cache = True
    model.save_pretrained(d, safe_serialization=True)


def make_llava13b() -> None:
    from transformers import LlamaTokenizer
    from llava.model import LlavaConfig, LlavaLlamaForCausalLM

    d = OUT / LLAVA_DIR
    make_llama2_spm(d)
    tok = LlamaTokenizer(vocab_file=str(d / "tokenizer.model"), legacy=False, add_bos_token=True,
                         add_eos_token=False, pad_token="<unk>", model_max_length=2048, padding_side="right",
                         clean_up_tokenization_spaces=False)
    tok.save_pretrained(d)
    vocab = len(tok)
    digit_ids = [tok.convert_tokens_to_ids(str(i)) for i in range(10)]
    assert all(i != tok.unk_token_id for i in digit_ids)

    seed_all(21)
    cfg = LlavaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                      pretraining_tp=1, hidden_act="silu", initializer_range=0.02, rope_scaling=None)
    model = LlavaLlamaForCausalLM(cfg)
    args = _Args(vision_tower=CLIP_DIR, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                 pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu",
                 mm_num_image_tokens=256)
    model.get_model().initialize_vision_modules(args)
    _finish_llava(model, tok, tok.convert_tokens_to_ids("\u2581"), d, digit_ids, 21, False, {}, BETA_LLAVA)
    # The released LLaVA-1.5 checkpoints were written by the original LLaVA repo (transformers
    # 4.31, model_type "llava"); rewrite config.json with exactly that key set (tiny sizes).
    released = {
        "_name_or_path": "./checkpoints/llava-v1.5-13b",
        "architectures": ["LlavaLlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "image_aspect_ratio": "pad",
        "image_grid_pinpoints": None,
        "initializer_range": 0.02,
        "intermediate_size": INTER,
        "max_length": 4096,
        "max_position_embeddings": 4096,
        "mm_hidden_size": VISION_HIDDEN,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": CLIP_DIR,
        "model_type": "llava",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": HEADS,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.31.0",
        "tune_mm_mlp_adapter": False,
        "tune_mm_vision_resampler": False,
        "unfreeze_mm_vision_tower": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": vocab,
    }
    (d / "config.json").write_text(json.dumps(released, indent=2) + "\n")
    (d / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "max_length": 4096,
         "pad_token_id": 0, "transformers_version": "4.31.0"}, indent=2) + "\n")


def _train_cfg(tokenizer_max_len: int) -> dict:
    # what LLaVA-Unified's train.py writes into model.config (finetune stage)
    return {"image_aspect_ratio": "pad", "tokenizer_padding_side": "right",
            "tokenizer_model_max_length": tokenizer_max_len, "tune_mm_mlp_adapter": False,
            "freeze_mm_mlp_adapter": False, "mm_use_im_start_end": False, "mm_projector_lr": None,
            "mm_use_im_patch_token": False}


def make_llama3() -> None:
    from transformers import AutoTokenizer
    from llava.model import LlavaConfig, LlavaLlamaForCausalLM

    d = OUT / LLAMA3_DIR
    number_ids = make_llama3_tokenizer(d)
    tok = AutoTokenizer.from_pretrained(d)
    vocab = len(tok)
    seed_all(31)
    cfg = LlavaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=500000.0, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.convert_tokens_to_ids("<|eot_id|>"), tie_word_embeddings=False,
                      pretraining_tp=1, hidden_act="silu", initializer_range=0.02, attention_bias=False,
                      mlp_bias=False, rope_scaling=None)
    model = LlavaLlamaForCausalLM(cfg)
    args = _Args(vision_tower=CLIP_DIR, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                 pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu",
                 mm_num_image_tokens=256)
    model.get_model().initialize_vision_modules(args)
    _finish_llava(model, tok, tok(" ")["input_ids"][-1], d, number_ids, 31, False, _train_cfg(2048), BETA_LLAMA3)
    # LLaVA training saves the base model's generation_config (Llama-3.1-8B-Instruct's), tiny ids
    ids = tok.convert_tokens_to_ids
    (d / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids("<|begin_of_text|>"), "do_sample": True,
         "eos_token_id": [ids("<|end_of_text|>"), ids("<|eom_id|>"), ids("<|eot_id|>")],
         "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.42.3"}, indent=2) + "\n")


def make_qwen() -> None:
    from llava.model import LlavaQwenConfig, LlavaQwenForCausalLM

    d = OUT / QWEN_DIR
    fast = make_qwen_tokenizer(d, QWEN25_SPECIALS, model_max_length=4096, padding_side="right")
    # LLaVA-Unified train.py, version qwen_instruct:
    fast.add_special_tokens({"additional_special_tokens": ["<s>"]})
    fast.bos_token = "<s>"
    fast.save_pretrained(d)
    n_tok = len(fast)
    vocab = 64 * math.ceil((n_tok + 1) / 64)  # padded embedding matrix, like Qwen2.5's 151936 > len(tokenizer)
    digit_ids = [fast.convert_tokens_to_ids(str(i)) for i in range(10)]
    seed_all(41)
    cfg = LlavaQwenConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                          num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=32768,
                          rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                          bos_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
                          eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"), use_sliding_window=False,
                          sliding_window=32768, max_window_layers=LAYERS, hidden_act="silu",
                          initializer_range=0.02, attention_dropout=0.0)
    model = LlavaQwenForCausalLM(cfg)
    args = _Args(vision_tower=SIGLIP_DIR, mm_vision_select_layer=-1, mm_vision_select_feature="patch",
                 pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="aapool_mlp",
                 mm_num_image_tokens=4)
    model.get_model().initialize_vision_modules(args)
    _finish_llava(model, fast, fast(" ")["input_ids"][-1], d, digit_ids, 41, True, _train_cfg(4096), BETA_QWEN)
    # LLaVA training saves the base model's generation_config (Qwen2.5-1.5B-Instruct's), tiny ids.
    # NB: repetition_penalty applies under greedy decoding too.
    ids = fast.convert_tokens_to_ids
    (d / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids("<|endoftext|>"), "pad_token_id": ids("<|endoftext|>"), "do_sample": True,
         "eos_token_id": [ids("<|im_end|>"), ids("<|endoftext|>")], "repetition_penalty": 1.1,
         "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"}, indent=2) + "\n")


def part_llava() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_images()
    make_clip_tower()
    make_siglip_tower()
    cwd = os.getcwd()
    os.chdir(OUT)  # towers are referenced by their sibling directory name
    try:
        make_llava13b()
        make_llama3()
        make_qwen()
        # AITQE's tokenizer (Qwen2-7B base: 3 specials) + "<Overall>" as a plain added token
        fast = make_qwen_tokenizer(OUT / AITQE_DIR, QWEN25_SPECIALS[:3] + [("<Overall>", False)],
                                   model_max_length=32768)
        fast.eos_token = "<|endoftext|>"
        fast.save_pretrained(OUT / AITQE_DIR)
    finally:
        os.chdir(cwd)


# --------------------------------------------------------------------------------------------
# AITQE (modeling_mm.MMForCausalLM)
# --------------------------------------------------------------------------------------------

def part_aitqe() -> None:
    sys.path.insert(0, str(SRC / "AITQE"))
    from transformers import AutoTokenizer, Qwen2ForCausalLM, SiglipVisionModel
    import modeling_mm

    # runtime patch (no flash-attn on CPU): the inner Qwen2 is built with attn "eager"
    orig = Qwen2ForCausalLM._from_config.__func__

    def _from_config(cls, config, **kw):
        kw["attn_implementation"] = "eager"
        return orig(cls, config, **kw)

    Qwen2ForCausalLM._from_config = classmethod(_from_config)

    d = OUT / AITQE_DIR
    cwd = os.getcwd()
    os.chdir(OUT)
    try:
        tok = AutoTokenizer.from_pretrained(AITQE_DIR, use_fast=False, trust_remote_code=True)
        n_tok = len(tok)
        vocab = 64 * math.ceil((n_tok + 1) / 64)
        eot = tok.convert_tokens_to_ids("<|endoftext|>")
        n_img = (IMAGE_SIZE // PATCH) ** 2
        cfg = modeling_mm.MMConfig(
            vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768,
            initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, pad_token_id=eot, bos_token_id=eot,
            eos_token_id=eot, tie_word_embeddings=False, rope_theta=1000000.0, attention_dropout=0.0,
            language_model_name_or_path="Qwen2-tiny", vision_model_name_or_path=SIGLIP_DIR,
            mm_projector_type="mlp", image_aspect_ratio="square",
            use_sliding_window=False, sliding_window=131072, max_window_layers=LAYERS,
            image_token_index=-200, pad_token_index=eot, eos_token_index=eot, IGNORE_INDEX=-100,
            pesudo_img_size=IMAGE_SIZE, pesudo_patch_size=PATCH, visual_hidden_dim=VISION_HIDDEN,
            image_tile_tokens=n_img, pooling_kernel=1, image_pattern="<image>",
            architectures=["MMForCausalLM"], torch_dtype="float32",
        )
        seed_all(51)
        model = modeling_mm.MMForCausalLM(cfg)
        gen = torch.Generator().manual_seed(51)
        reinit_(model, gen)
        tower = SiglipVisionModel.from_pretrained(SIGLIP_DIR)
        model.vision_model.load_state_dict(tower.state_dict())
        emb = model.model.model.embed_tokens.weight.data
        head = model.model.lm_head.weight.data
        with torch.no_grad():
            emb[:, 0] = EMBED_OFFSET + 0.1 * torch.randn(emb.shape[0], generator=gen)
            head[:, 0] = 0.1 * torch.randn(head.shape[0], generator=gen)
            head[eot, 0] = -3.0  # keep greedy runs long: <|endoftext|> rarely wins
            head[n_tok:, 0] = -5.0  # padding rows (ids >= len(tokenizer)) never win greedy decoding
            ov = tok.convert_tokens_to_ids("<Overall>")
            head[ov, 0] = float(os.environ.get("AITQE_OVERALL_BIAS", "0.55"))
        model.save_pretrained(d, safe_serialization=True)
        j = json.loads((d / "config.json").read_text())
        j.pop("_attn_implementation_autoset", None)
        (d / "config.json").write_text(json.dumps(j, indent=2, sort_keys=True) + "\n")
    finally:
        os.chdir(cwd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["llava", "aitqe"], required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.part == "llava":
        part_llava()
    else:
        part_aitqe()


if __name__ == "__main__":
    main()
