"""Lab embeddings for bench/index.sh: every flow of data/lab (both runs) through the
shipped embedder, cycled to N base vectors with multiplicative jitter on the features
(copies after the first get x exp(N(0, 0.05)) per feature, seeded), and Q query vectors
made the same way with another seed. Written as little-endian f32: N rows, then Q rows.
ORDER: mixed (default) shuffles the flows once (seeded), so any prefix is a steady mix of
the scenarios; grouped keeps the CSV order (scenario after scenario), so an IVF index
trained on the first events sees only some scenarios.

usage: lab_vectors.py N QUERIES OUT [mixed|grouped]
"""
import glob, json, sys
import numpy as np
import pandas as pd
import onnxruntime as ort

def main():
    n, queries, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    order = sys.argv[4] if len(sys.argv) > 4 else "mixed"
    features = json.load(open("models/embedder.json"))["features"]
    frames = [pd.read_csv(path, low_memory=False) for path in sorted(glob.glob("data/lab/run*/*.csv.gz"))]
    data = pd.concat(frames, ignore_index=True)
    rows = data.reindex(columns=features).apply(pd.to_numeric, errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    rng = np.random.default_rng(20261125)
    if order == "mixed":
        rows = rows[rng.permutation(len(rows))]
    def take(count, rng, exact_first):
        index = np.arange(count) % len(rows)
        picked = rows[index]
        noise = np.exp(rng.normal(0.0, 0.05, size=picked.shape))
        if exact_first:
            noise[: min(count, len(rows))] = 1.0
        return (picked * noise).astype(np.float32)
    base = take(n, rng, True)
    query_rng = np.random.default_rng(7)
    query_rows = rows[query_rng.permutation(len(rows))[:queries] % len(rows)]
    query = (query_rows * np.exp(query_rng.normal(0.0, 0.05, size=query_rows.shape))).astype(np.float32)
    options = ort.SessionOptions()
    session = ort.InferenceSession("models/embedder.onnx", options, providers=["CPUExecutionProvider"])
    with open(out, "wb") as file:
        for block in (base, query):
            for start in range(0, len(block), 65536):
                vectors = session.run(None, {"input": block[start:start + 65536]})[0]
                file.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    print(f"lab vectors: {len(rows)} lab flows -> {n} base + {queries} queries, D = {vectors.shape[1]}", file=sys.stderr)

main()
