#!/usr/bin/env python3
"""An independent forward pass of all-MiniLM-L6-v2 in numpy (float64), from the same
safetensors weights, to check the ONNX graph models/text/convert.py writes.

Tokens come from the shipped tokenizer.json through the `tokenizers` package (the
library the Rust side uses), truncated at sentence-transformers' max_seq_length (256)
and padded to the longest sentence of a batch.

usage:
  reference.py MODEL_DIR ONNX SENTENCES        compare ONNX Runtime with this pass on every
                                               line of SENTENCES; check similarity orderings
  reference.py MODEL_DIR --embed < IDS.jsonl   one line of token ids in -> one vector out
  reference.py MODEL_DIR --tokenize < TEXT     one line of text in -> its token ids out
Prints one JSON object (the check) or one JSON array per line (--embed, --tokenize).
"""
import json
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file

MAX_TOKENS = 256

model_dir = pathlib.Path(sys.argv[1])
config = json.loads((model_dir / "config.json").read_text())
w = {name: array.astype(np.float64) for name, array in load_file(str(model_dir / "model.safetensors")).items() if array.dtype != np.int64}
heads = config["num_attention_heads"]
eps = config["layer_norm_eps"]


def layer_norm(x, prefix):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[prefix + ".bias"]


def dense(x, prefix):
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def erf(x):
    # numpy has no erf: math.erf element by element (exact to double precision).
    from math import erf as scalar_erf
    return np.vectorize(scalar_erf)(x)


def embed(ids):
    """One sentence's token ids -> its normalised mean-pooled vector (no padding needed)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    h = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
    h = layer_norm(h, "embeddings.LayerNorm")
    size = h.shape[-1] // heads
    for index in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{index}"
        q, k, v = (dense(h, f"{p}.attention.self.{name}").reshape(n, heads, size).transpose(1, 0, 2) for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ v
        h = layer_norm(dense(context.transpose(1, 0, 2).reshape(n, -1), f"{p}.attention.output.dense") + h, f"{p}.attention.output.LayerNorm")
        inner = dense(h, f"{p}.intermediate.dense")
        h = layer_norm(dense(0.5 * inner * (1 + erf(inner / np.sqrt(2))), f"{p}.output.dense") + h, f"{p}.output.LayerNorm")
    mean = h.mean(0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def tokenizer():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


if sys.argv[2] == "--tokenize":
    tok = tokenizer()
    for line in sys.stdin:
        print(json.dumps(tok.encode(line.rstrip("\n")).ids))
    sys.exit(0)

if sys.argv[2] == "--embed":
    for line in sys.stdin:
        print(json.dumps([round(float(x), 9) for x in embed(json.loads(line))]))
    sys.exit(0)

import onnxruntime

sentences = pathlib.Path(sys.argv[3]).read_text().split("\n")[:-1]
tok = tokenizer()
session = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
cosines = []
batch = 16
vectors = {}
for start in range(0, len(sentences), batch):
    encodings = tok.encode_batch(sentences[start : start + batch])
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    (out,) = session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})
    for offset, encoding in enumerate(encodings):
        real = [i for i, m in zip(encoding.ids, encoding.attention_mask) if m]
        reference = embed(real)
        vectors[sentences[start + offset]] = reference
        cosines.append(float(np.dot(out[offset], reference) / np.linalg.norm(out[offset])))
triples = [
    ("A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."),
    ("A monkey is playing drums.", "Someone in a gorilla costume is playing a set of drums.", "A woman is playing violin."),
    ("The new movie is awesome", "The new movie is so great", "The cat sits outside"),
]
held = []
for anchor, near, far in triples:
    a, b, c = vectors[anchor], vectors[near], vectors[far]
    held.append({"anchor": anchor, "near": float(a @ b), "far": float(a @ c), "holds": bool(a @ b > a @ c)})
print(json.dumps({"sentences": len(sentences), "min_cosine": min(cosines), "triples": held}))
