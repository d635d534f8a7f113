#!/usr/bin/env bash
# Similarity index (issue 7): query latency p50/p99, add time, recall@10 of HNSW against
# exact search, and bytes per event, at several sizes; the same vectors through faiss-cpu
# from Python in the same run as the anchor. Numbers, not a test.
# usage: bench/index.sh [SIZES] [QUERIES] [EF_SEARCH]
#   defaults: "10000 100000 1000000", 500 queries, efSearch 64
# Vectors: D = 16, uniform random in [0, 1) (seed 1), not lab embeddings.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-"10000 100000 1000000"}
queries=${2:-500}
ef_search=${3:-64}
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
"$bench" gen "$largest" "$queries" 1 "$work/vectors.f32"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(date -u +%F)"
echo "vectors: D = 16 uniform random; $queries single-vector queries after 20 untimed, k = 10; HNSW32 efSearch $ef_search; OMP threads: ${OMP_NUM_THREADS:-default}"
for n in $sizes; do
    "$bench" run "$work/vectors.f32" "$n" "$queries" Flat 0
    "$bench" run "$work/vectors.f32" "$n" "$queries" HNSW32 "$ef_search" "$work/vectors.f32.truth.$n"
    "$venv/bin/python" bench/index_faiss.py "$work/vectors.f32" "$n" "$queries" Flat 0 | sed 's/^/python: /'
    "$venv/bin/python" bench/index_faiss.py "$work/vectors.f32" "$n" "$queries" HNSW32 "$ef_search" | sed 's/^/python: /'
done
