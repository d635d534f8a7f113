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
key="$work/log.key"
printf '[log]\ndir = "%s/log"\nnode = "bench"\nkey-file = "%s"\n' "$work" "$key" > "$work/config.toml"
./target/release/mldefender replay --config "$work/config.toml" tests/pcap/lab-mix.pcap 2>/dev/null
sed -n 2p "$work"/log/events-bench-000000.jsonl | /usr/bin/python3 -c '
import json, sys
record = json.loads(sys.stdin.read(), object_pairs_hook=dict)
for key in ("seq", "prev_tag", "key_id", "hmac"):
    record.pop(key)
print(json.dumps(record, separators=(",", ":")))' > "$work/record.json"
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F); $n records of $(wc -c < "$work/record.json") bytes"
echo
echo "| writer | records/s |"
echo "|---|---|"
echo "| RapidJSON, DOM writer, fwrite (no HMAC, no fsync) | $("$work/rapidjson_bench" "$work/record.json" "$n" "$work/rapid.jsonl") |"
echo "| RapidJSON, DOM writer, to /dev/null (serialize only) | $("$work/rapidjson_bench" "$work/record.json" "$n" /dev/null) |"
echo "| nlohmann/json ordered_json dump, fwrite (no HMAC, no fsync) | $("$work/nlohmann_bench" "$work/record.json" "$n" "$work/nlohmann.jsonl") |"
rm -f "$work"/*.jsonl
./target/release/examples/log_bench throughput "$n" 1000000000 | awk '/serialize only/ {print "| ml-defender: serialize only (serde_json) | " $3 " |"} /HMAC chain/ {print "| ml-defender: serialize + HMAC chain | " $5 " |"} /write/ {print "| ml-defender: serialize + HMAC + write, no fsync until the end | " $6 " |"}'
for sync in 1024 64 1; do
    count=$n; [[ $sync == 1 ]] && count=$((n / 50))
    ./target/release/examples/log_bench throughput "$count" "$sync" | awk -v s="$sync" '/write/ {print "| ml-defender: serialize + HMAC + write, fsync every " s " records | " $6 " |"}'
done
