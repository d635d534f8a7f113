#!/usr/bin/env python3
"""all-MiniLM-L6-v2 (safetensors) -> an ONNX graph that ONNX Runtime runs.

The graph is written operator by operator with `onnx.helper` from the checkpoint's
weights: no exporter, no deep-learning framework (none installs offline without a GPU
stack; docs/adr). In: `input_ids` and `attention_mask` (int64, [N, L]). Out:
`sentence_embedding` (float32, [N, 384]): the BERT encoder (6 layers, 12 heads, GELU),
the mean of the token vectors under the mask (sentence-transformers' Pooling, mean
tokens), L2-normalised (its Normalize module). Token types are all 0 (single sentences).

The output is byte-for-byte the same for the same checkpoint (no timestamps, fixed
names, weights in checkpoint order), so its SHA-256 can be signed once and checked
wherever the conversion runs.

usage: convert.py MODEL_DIR OUT.onnx
"""
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

model_dir = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
config = json.loads((model_dir / "config.json").read_text())
pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
modules = [module["type"] for module in json.loads((model_dir / "modules.json").read_text())]
assert config["model_type"] == "bert" and config["hidden_act"] == "gelu", config
assert config["position_embedding_type"] == "absolute", config
assert pooling["pooling_mode_mean_tokens"] and not (pooling["pooling_mode_cls_token"] or pooling["pooling_mode_max_tokens"]), pooling
assert modules[-1].endswith("Normalize"), modules

weights = load_file(str(model_dir / "model.safetensors"))
hidden = config["hidden_size"]
heads = config["num_attention_heads"]
head_size = hidden // heads
layers = config["num_hidden_layers"]
eps = float(config["layer_norm_eps"])

initializers = []
nodes = []


def const(name, array):
    initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def weight(name, transpose=False):
    array = weights[name].astype(np.float32)
    return const(name, array.T if transpose else array)


counter = [0]


def node(op, inputs, **attributes):
    counter[0] += 1
    output = f"{op.lower()}_{counter[0]}"
    nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
    return output


def linear(x, prefix):
    return node("Add", [node("MatMul", [x, weight(prefix + ".weight", transpose=True)]), weight(prefix + ".bias")])


def layer_norm(x, prefix):
    return node("LayerNormalization", [x, weight(prefix + ".weight"), weight(prefix + ".bias")], axis=-1, epsilon=eps)


# Embeddings: word + position (the first L rows) + token type 0.
word = node("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"])
length = node("Gather", [node("Shape", ["input_ids"]), const("one_index", np.array([1], dtype=np.int64))], axis=0)
positions = node("Slice", [weight("embeddings.position_embeddings.weight"), const("zero", np.array([0], dtype=np.int64)), length, const("axis0", np.array([0], dtype=np.int64))])
token_type = const("token_type_0", weights["embeddings.token_type_embeddings.weight"][0].astype(np.float32))
hidden_states = layer_norm(node("Add", [node("Add", [word, positions]), token_type]), "embeddings.LayerNorm")

# The attention mask as an additive bias: 0 where attended, -10000 where padded.
mask = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
bias = node("Mul", [node("Sub", [const("one_f", np.array(1.0, dtype=np.float32)), mask]), const("minus_10k", np.array(-10000.0, dtype=np.float32))])
bias = node("Unsqueeze", [bias, const("axes_1_2", np.array([1, 2], dtype=np.int64))])
split_shape = const("split_heads", np.array([0, 0, heads, head_size], dtype=np.int64))
merge_shape = const("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
scale = const("scale", np.array(1.0 / np.sqrt(head_size), dtype=np.float32))
sqrt_half = const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))
half = const("half", np.array(0.5, dtype=np.float32))

for index in range(layers):
    prefix = f"encoder.layer.{index}"
    q = node("Transpose", [node("Reshape", [linear(hidden_states, prefix + ".attention.self.query"), split_shape])], perm=[0, 2, 1, 3])
    k = node("Transpose", [node("Reshape", [linear(hidden_states, prefix + ".attention.self.key"), split_shape])], perm=[0, 2, 3, 1])
    v = node("Transpose", [node("Reshape", [linear(hidden_states, prefix + ".attention.self.value"), split_shape])], perm=[0, 2, 1, 3])
    scores = node("Add", [node("Mul", [node("MatMul", [q, k]), scale]), bias])
    context = node("MatMul", [node("Softmax", [scores], axis=-1), v])
    context = node("Reshape", [node("Transpose", [context], perm=[0, 2, 1, 3]), merge_shape])
    attended = layer_norm(node("Add", [linear(context, prefix + ".attention.output.dense"), hidden_states]), prefix + ".attention.output.LayerNorm")
    inner = linear(attended, prefix + ".intermediate.dense")
    # GELU, exact: x/2 * (1 + erf(x / sqrt 2)), as BERT's "gelu".
    gelu = node("Mul", [node("Mul", [inner, half]), node("Add", [const(f"one_{index}", np.array(1.0, dtype=np.float32)), node("Erf", [node("Mul", [inner, sqrt_half])])])])
    hidden_states = layer_norm(node("Add", [linear(gelu, prefix + ".output.dense"), attended]), prefix + ".output.LayerNorm")

# Mean of the token vectors under the mask, then L2 normalisation.
token_mask = node("Unsqueeze", [mask, const("axis_2", np.array([2], dtype=np.int64))])
axis_1 = const("axis_1", np.array([1], dtype=np.int64))
summed = node("ReduceSum", [node("Mul", [hidden_states, token_mask]), axis_1], keepdims=0)
count = node("Max", [node("ReduceSum", [token_mask, axis_1], keepdims=0), const("min_count", np.array(1e-9, dtype=np.float32))])
mean = node("Div", [summed, count])
norm = node("Max", [node("Sqrt", [node("ReduceSum", [node("Mul", [mean, mean]), axis_1], keepdims=1)]), const("min_norm", np.array(1e-12, dtype=np.float32))])
nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="normalize"))

graph = helper.make_graph(
    nodes,
    "all-MiniLM-L6-v2",
    [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "L"]),
    ],
    [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["N", hidden])],
    initializers,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ml-defender models/text/convert.py", producer_version="1")
model.ir_version = 8
onnx.checker.check_model(model)
out.write_bytes(model.SerializeToString())
print(f"{out}: {out.stat().st_size} bytes, {len(nodes)} nodes, {len(initializers)} initializers")
