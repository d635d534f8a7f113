"""The anchor of bench/index.sh: the same vectors through faiss-cpu, in the same run.

usage: index_faiss.py FILE N QUERIES FACTORY EF_SEARCH
Same measurement as the Rust example: IDMap,<factory>, ids 0..N, add in batches of
10,000, then QUERIES single-vector searches (k = 10); recall@10 against exact search.
"""
import sys, time
import numpy as np
import faiss

D, K, BATCH = 16, 10, 10_000

def main():
    path, n, queries, factory, ef = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    data = np.fromfile(path, dtype="<f4").reshape(-1, D)
    base, query = data[:n], data[len(data) - queries:]
    started = time.perf_counter()
    index = faiss.index_factory(D, "IDMap," + factory, faiss.METRIC_L2)
    if ef > 0:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef)
    for start in range(0, n, BATCH):
        end = min(start + BATCH, n)
        index.add_with_ids(base[start:end], np.arange(start, end, dtype="int64"))
    add_s = time.perf_counter() - started
    for row in query[:20]:  # warm-up, not timed, as in the Rust example
        index.search(row.reshape(1, D), K)
    latencies, answers = [], []
    for row in query:
        t = time.perf_counter()
        _, ids = index.search(row.reshape(1, D), K)
        latencies.append((time.perf_counter() - t) * 1e6)
        answers.append(ids[0])
    exact = np.fromfile(f"{path}.truth.{n}", dtype="<u8").reshape(-1, K)
    found = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(answers, exact))
    latencies.sort()
    pick = lambda q: latencies[round((len(latencies) - 1) * q)]
    print(f"n={n} factory={factory} ef_search={ef} add_s={add_s:.2f} p50_us={pick(0.5):.0f} "
          f"p99_us={pick(0.99):.0f} recall10={found / (queries * K):.4f} faiss={faiss.__version__}")

main()
