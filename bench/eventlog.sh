#!/usr/bin/env bash
# Event-log writer throughput, side by side in one run: ml-defender (serialize + HMAC
# chain + write, at several fsync policies) vs small C++ programs writing the same record
# with RapidJSON and nlohmann/json (no HMAC, no fsync). Numbers, not a test.
# usage: bench/eventlog.sh [RECORDS]     (needs g++, rapidjson-dev, nlohmann-json3-dev)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
g++ -O2 -std=c++17 -o "$work/rapidjson_bench" bench/json-cpp/rapidjson_bench.cpp
g++ -O2 -std=c++17 -o "$work/nlohmann_bench" bench/json-cpp/nlohmann_bench.cpp
cargo build --release --quiet -p mld-eventlog --example log_bench
cargo build --release --quiet --bin mldefender
# The same record for everyone: the first event of a replay, without the integrity fields.
bench/lib/event-record.sh "$work/record.json"
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F); $n records of $(wc -c < "$work/record.json") bytes"
echo
echo "| writer | records/s |"
echo "|---|---|"
echo "| RapidJSON, DOM writer, fwrite (no HMAC, no fsync) | $("$work/rapidjson_bench" "$work/record.json" "$n" "$work/rapid.jsonl") |"
echo "| RapidJSON, DOM writer, to /dev/null (serialize only) | $("$work/rapidjson_bench" "$work/record.json" "$n" /dev/null) |"
echo "| nlohmann/json ordered_json dump, fwrite (no HMAC, no fsync) | $("$work/nlohmann_bench" "$work/record.json" "$n" "$work/nlohmann.jsonl") |"
rm -f "$work"/*.jsonl
bench=./target/release/examples/log_bench
rate() { awk -F': ' '/^\+ write/ {print $2}' | awk '{print $1}'; }
echo "| ml-defender: serialize only (serde_json) | $($bench throughput "$n" 64 | awk '/serialize only/ {print $3}') |"
echo "| ml-defender: serialize + HMAC-SHA256 chain | $($bench throughput "$n" 64 | awk '/HMAC chain/ {print $5}') |"
for sync in 1000000000 1024 64 1; do
    label="group commit: fsync every $sync records, beside the writer"
    [[ $sync == 1000000000 ]] && label="no fsync until the end"
    [[ $sync == 64 ]] && label="$label (default)"
    echo "| ml-defender: serialize + HMAC + write, $label | $($bench throughput "$n" "$sync" | rate) |"
done
for sync in 64 1; do
    count=$n; [[ $sync == 1 ]] && count=$((n / 50))
    echo "| ml-defender: serialize + HMAC + write, writer waits for an fsync every $sync records | $($bench throughput "$count" "$sync" wait | rate) |"
done
