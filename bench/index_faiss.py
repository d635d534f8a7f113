"""The anchor of bench/index.sh: the same vectors through faiss-cpu, in the same run.

usage: index_faiss.py FILE N QUERIES FACTORY PARAM=VALUE|-   (efSearch=64, nprobe=8)
Same measurement as the Rust example: IDMap,<factory>, ids 0..N, add in batches of
10,000, then QUERIES single-vector searches (k = 10); recall@10 against exact search,
tie-aware (a hit counts when it is as near as the exact 10th, from the Rust Flat run).
"""
import sys, time
import numpy as np
import faiss

D, K, BATCH = 16, 10, 10_000

def train_size(factory):
    # The Rust index trains an IVF index on its first 40 x lists events (10,000 otherwise).
    for part in factory.split(","):
        if part.startswith("IVF"):
            digits = "".join(c for c in part[3:] if c.isdigit())
            return 40 * int(digits)
    return 10_000

def main():
    path, n, queries, factory, param = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    data = np.fromfile(path, dtype="<f4").reshape(-1, D)
    base, query = data[:n], data[len(data) - queries:]
    started = time.perf_counter()
    index = faiss.index_factory(D, "IDMap," + factory, faiss.METRIC_L2)
    if not index.is_trained:
        # As the Rust index: trained at the end of the batch that brings it to its size.
        batches = -(-train_size(factory) // BATCH)
        index.train(base[: min(n, batches * BATCH)])
    if "=" in param:
        name, value = param.split("=", 1)
        faiss.ParameterSpace().set_index_parameter(index, name, float(value))
    for start in range(0, n, BATCH):
        end = min(start + BATCH, n)
        index.add_with_ids(base[start:end], np.arange(start, end, dtype="int64"))
    add_s = time.perf_counter() - started
    for row in query[:20]:  # warm-up, not timed, as in the Rust example
        index.search(row.reshape(1, D), K)
    latencies, answers = [], []
    for row in query:
        t = time.perf_counter()
        distances, _ = index.search(row.reshape(1, D), K)
        latencies.append((time.perf_counter() - t) * 1e6)
        answers.append(distances[0])
    # Tie-aware, as the Rust side: a hit counts when it is as near as the exact 10th.
    kth = np.fromfile(f"{path}.truth.{n}", dtype="<f4")
    # float32 distances of (near-)duplicates differ by rounding, about eps |q|^2.
    found = sum(int(np.sum(a <= limit + 1e-4 * (1 + float(np.dot(q, q))))) for a, limit, q in zip(answers, kth, query))
    latencies.sort()
    pick = lambda q: latencies[round((len(latencies) - 1) * q)]
    print(f"n={n} factory={factory} param={param} add_s={add_s:.2f} p50_us={pick(0.5):.0f} "
          f"p99_us={pick(0.99):.0f} recall10={found / (queries * K):.4f} faiss={faiss.__version__}")

main()
