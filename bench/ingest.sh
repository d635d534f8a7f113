#!/usr/bin/env bash
# Ingest throughput (issue 7): verify alone, and verify + embed + add as the ingest task
# does, on one core, over N signed events cycled from the real events of a lab replay;
# the embedder alone, and the same rows through ONNX Runtime from Python in the same run
# as the anchor. Numbers, not a test.
# usage: bench/ingest.sh [N] [CORE]     defaults: 200000 events, core 1
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
core=${2:-1}
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
runtime=${MLD_ONNXRUNTIME:-/usr/local/lib/mldefender/libonnxruntime.so.1.31.1}
venv=target/bench-venv/models
if ! "$venv/bin/python" -c "import onnxruntime, numpy" 2>/dev/null; then
    echo "ingest.sh: installing models/requirements.txt into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r models/requirements.txt
fi
cargo build --release --quiet --bin mldefender
cargo build --release --quiet -p mld-history --example ingest_bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Real events: the lab captures replayed through detection into a signed log.
cat > "$work/replay.toml" <<TOML
[log]
dir = "$work/log"
node = "replay"
key-file = "$work/key"
create-key = true
rotate-daily = false

[detect]
models-dir = "$PWD/models"
onnxruntime = "$runtime"
TOML
./target/release/mldefender replay --config "$work/replay.toml" tests/pcap/lab-attacks.pcap tests/pcap/lab-mix.pcap 2>/dev/null
cat "$work"/log/events-*.jsonl > "$work/records.jsonl"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(date -u +%F); pinned to core $core"
OMP_NUM_THREADS=1 taskset -c "$core" ./target/release/examples/ingest_bench "$work/records.jsonl" "$n" models "$runtime" "$work/rows.f32"
taskset -c "$core" "$venv/bin/python" bench/ingest_ort.py "$work/rows.f32" models/embedder.onnx | sed 's/^/python: /'
