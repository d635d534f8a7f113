#!/usr/bin/env bash
# Similarity index (issue 7): query latency p50/p99, add time, recall@10 of HNSW against
# exact search, and bytes per event, at several sizes; the same vectors through faiss-cpu
# from Python in the same run as the anchor. Numbers, not a test.
# usage: bench/index.sh [SIZES] [QUERIES] [EF_SEARCH] [VECTORS] [NPROBE]
#   defaults: "10000 100000 1000000", 500 queries, efSearch 64, VECTORS lab, nprobe 8
#   VECTORS: lab (scenarios mixed), lab-grouped (scenario after scenario), uniform
# Settings: Flat (exact), HNSW32 (efSearch), and IVF<lists>,Flat (nprobe) with lists the
# power of two at or below min(4 sqrt(N), N / 40), trained on the first 40 x lists events
# as the index does -- each approximate one with its recall@10 against Flat.
# VECTORS: lab = the lab's flows through the shipped embedder, cycled with jitter to the
# largest size (bench/lab_vectors.py; clustered, as real histories are); uniform = D = 16
# uniform random in [0, 1) (seed 1).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-"10000 100000 1000000"}
queries=${2:-500}
ef_search=${3:-64}
vectors=${4:-lab}
nprobe=${5:-8}
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
venv=target/bench-venv/faiss
if ! "$venv/bin/python" -c "import faiss, numpy" 2>/dev/null; then
    echo "index.sh: installing faiss-cpu into $venv (bench/index-requirements.txt)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/index-requirements.txt
fi
cargo build --release --quiet -p mld-index --example index_bench
bench=./target/release/examples/index_bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
largest=$(tr ' ' '\n' <<<"$sizes" | sort -n | tail -1)
if [[ "$vectors" == lab* ]]; then
    models_venv=target/bench-venv/models
    if ! "$models_venv/bin/python" -c "import onnxruntime, pandas" 2>/dev/null; then
        echo "index.sh: installing models/requirements.txt into $models_venv" >&2
        python3 -m venv "$models_venv"
        "$models_venv/bin/pip" install --quiet --disable-pip-version-check -r models/requirements.txt
    fi
    order=mixed
    [[ "$vectors" == lab-grouped ]] && order=grouped
    "$models_venv/bin/python" bench/lab_vectors.py "$largest" "$queries" "$work/vectors.f32" "$order"
    described="lab embeddings (bench/lab_vectors.py, $order)"
else
    "$bench" gen "$largest" "$queries" 1 "$work/vectors.f32"
    described="D = 16 uniform random"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(date -u +%F)"
echo "vectors: $described; $queries single-vector queries after 20 untimed, k = 10; HNSW32 efSearch $ef_search; IVF nprobe $nprobe; OMP threads: ${OMP_NUM_THREADS:-default}"
for n in $sizes; do
    lists=$(python3 -c "import math; print(max(16, 2 ** int(math.log2(min(4 * math.sqrt($n), $n / 40)))))")
    "$bench" run "$work/vectors.f32" "$n" "$queries" Flat -
    "$bench" run "$work/vectors.f32" "$n" "$queries" HNSW32 "efSearch=$ef_search" "$work/vectors.f32.truth.$n"
    "$bench" run "$work/vectors.f32" "$n" "$queries" "IVF$lists,Flat" "nprobe=$nprobe" "$work/vectors.f32.truth.$n"
    "$venv/bin/python" bench/index_faiss.py "$work/vectors.f32" "$n" "$queries" Flat - | sed 's/^/python: /'
    "$venv/bin/python" bench/index_faiss.py "$work/vectors.f32" "$n" "$queries" HNSW32 "efSearch=$ef_search" | sed 's/^/python: /'
    "$venv/bin/python" bench/index_faiss.py "$work/vectors.f32" "$n" "$queries" "IVF$lists,Flat" "nprobe=$nprobe" | sed 's/^/python: /'
done
