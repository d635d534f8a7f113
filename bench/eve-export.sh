#!/usr/bin/env bash
# EVE export throughput against its anchor in the same run: `log verify --public-key`
# does the same reading and signed-checkpoint verification without writing anything, so
# the ratio is what the EVE mapping and its JSON output cost. Numbers, not a test.
# usage: bench/eve-export.sh [COPIES]   (the log: a replay of COPIES × tests/pcap/lab-attacks.pcap)
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin mldefender
bin=./target/release/mldefender
ort=${MLD_ONNXRUNTIME:-/usr/local/lib/mldefender/libonnxruntime.so.1.31.1}
cat >"$work/config.toml" <<TOML
[log]
dir = "$work/log"
node = "bench"
key-file = "$work/keys/log.key"
create-key = true
rotate-daily = false
[detect]
models-dir = "$PWD/models"
onnxruntime = "$ort"
TOML
files=()
for _ in $(seq 1 "$copies"); do files+=(tests/pcap/lab-attacks.pcap); done
$bin replay --config "$work/config.toml" "${files[@]}" 2>/dev/null
$bin log public-key --config "$work/config.toml" >"$work/log.pub"
records=$(cat "$work"/log/*.jsonl | wc -l)
bytes=$(cat "$work"/log/*.jsonl | wc -c)
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F); log: $records lines, $((bytes >> 20)) MiB"
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f", e - s}'; }
for round in 1 2 3; do
    anchor=$(secs $bin log verify "$work/log" --public-key "$work/log.pub")
    export_secs=$(secs sh -c "$bin log export --format eve --config $work/config.toml > $work/eve.json")
    lines=$(wc -l <"$work/eve.json")
    awk -v r="$round" -v a="$anchor" -v x="$export_secs" -v n="$records" -v l="$lines" 'BEGIN {
        printf "round %d: verify --public-key %.2f s (%.0f records/s); export --format eve %.2f s (%.0f records/s, %d EVE lines); export / verify = %.2f\n", r, a, n / a, x, n / x, l, x / a }'
done
